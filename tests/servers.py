"""Real PostgreSQL and MLflow tracking servers for the test suite.

This is a plain module (no pytest imports) so it can be used from fixtures, from ad-hoc
scripts and from benchmarks alike.  The pytest glue (skip-or-fail policy, fixtures, markers)
lives in ``tests/conftest.py``.

Both servers live entirely inside a private temporary directory and listen on a free port on
127.0.0.1 only.  ``stop()`` is idempotent and removes the temporary directory.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

#: Set to ``1`` (CI does) to turn "server binaries not available" from a skip into a failure.
REQUIRE_SERVERS_ENV = "MLTIDY_REQUIRE_SERVERS"

LOCALHOST = "127.0.0.1"
PG_SUPERUSER = "mltidy"

_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_handed_out_ports: set[int] = set()


class ServerUnavailable(RuntimeError):
    """The server software is not installed / cannot be run here (skip unless required)."""


class ServerStartError(RuntimeError):
    """The server software is present but the server did not come up (always a failure)."""


def servers_required() -> bool:
    """True when a missing server must fail the run instead of skipping (``CI``)."""
    return os.environ.get(REQUIRE_SERVERS_ENV, "").strip() == "1"


def free_port(host: str = LOCALHOST) -> int:
    """Return a TCP port on *host* that is free right now.

    There is an unavoidable race between closing the probe socket and the server binding the
    port; the servers below retry with a new port when the bind fails.  Ports are never handed
    out twice by the same process, so two servers of one test session cannot collide.
    """
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in _handed_out_ports:
            _handed_out_ports.add(port)
            return port
    raise RuntimeError("could not find a free TCP port")


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return f"<could not read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _private_tempdir(prefix: str, *, traversable: bool = False) -> Path:
    """Create a temp dir; with *traversable*, one that other users can reach (root → postgres)."""
    base = Path(tempfile.gettempdir())
    if traversable and not all(p.stat().st_mode & 0o001 for p in (base, *base.parents)):
        base = Path("/tmp")  # e.g. TMPDIR=/root/tmp: the unprivileged user could not enter it
    return Path(tempfile.mkdtemp(prefix=prefix, dir=base))


# --------------------------------------------------------------------------------------------
# /proc helpers (Linux only, like the rest of this module)
# --------------------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int, int, int] | None:
    """(state, ppid, pgrp, starttime) of *pid*, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    fields = raw[raw.rfind(")") + 2 :].split()
    return fields[0], int(fields[1]), int(fields[2]), int(fields[19])


def _all_pids() -> list[int]:
    return [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]


def process_group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is *pgid*."""
    members = []
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[2] == pgid and stat[0] not in ("Z", "X"):
            members.append(pid)
    return sorted(members)


def _descendants(root: int) -> dict[int, int]:
    """Live descendants of *root* as {pid: starttime} (starttime guards against pid reuse)."""
    children: dict[int, list[int]] = {}
    start: dict[int, int] = {}
    for pid in _all_pids():
        stat = _proc_stat(pid)
        if stat is not None and stat[0] not in ("Z", "X"):
            children.setdefault(stat[1], []).append(pid)
            start[pid] = stat[3]
    found: dict[int, int] = {}
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), []):
            if child not in found:
                found[child] = start[child]
                todo.append(child)
    return found


def _proc_environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    env = {}
    for item in raw.split(b"\0"):
        key, sep, value = item.partition(b"=")
        if sep:
            env[key.decode(errors="replace")] = value.decode(errors="replace")
    return env


# --------------------------------------------------------------------------------------------
# PostgreSQL
# --------------------------------------------------------------------------------------------


def find_pg_bindir() -> Path | None:
    """Directory holding initdb/pg_ctl/postgres, or None when PostgreSQL is not installed.

    Order: ``$MLTIDY_PG_BINDIR``, ``pg_config --bindir``, the newest
    ``/usr/lib/postgresql/*/bin`` (Debian/Ubuntu), then ``initdb`` on ``$PATH``.
    """
    candidates: list[Path] = []
    if env_dir := os.environ.get("MLTIDY_PG_BINDIR"):
        candidates.append(Path(env_dir))
    if pg_config := shutil.which("pg_config"):
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
            if out:
                candidates.append(Path(out))

    def major(bindir: Path) -> int:
        return int(bindir.parent.name) if bindir.parent.name.isdigit() else 0

    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=major, reverse=True)
    if initdb := shutil.which("initdb"):
        candidates.append(Path(initdb).parent)
    for cand in candidates:
        if all(os.access(cand / exe, os.X_OK) for exe in ("initdb", "pg_ctl", "postgres")):
            return cand
    return None


class PostgresServer:
    """A throw-away PostgreSQL cluster with password-authenticated superuser ``mltidy``.

    PostgreSQL refuses to run as root, so when the tests run as root the cluster is owned by
    the ``postgres`` system user (or ``nobody``) and initdb/pg_ctl are run through ``runuser``
    (falling back to ``setpriv`` / ``su``).
    """

    def __init__(self, bindir: Path | None = None, *, startup_timeout: float = 60.0) -> None:
        self._bindir = bindir
        self.startup_timeout = startup_timeout
        self.password = secrets.token_hex(16)
        self.host = LOCALHOST
        self.port = 0
        self.tmpdir: Path | None = None
        self.startup_seconds: float | None = None
        self._run_as: str | None = None
        self._running = False

    # -- paths -------------------------------------------------------------------------------
    def _tmp(self) -> Path:
        if self.tmpdir is None:
            raise RuntimeError("PostgresServer is not started")
        return self.tmpdir

    @property
    def datadir(self) -> Path:
        return self._tmp() / "data"

    @property
    def logfile(self) -> Path:
        return self._tmp() / "postgres.log"

    @property
    def socket_dir(self) -> Path:
        return self._tmp()

    # -- URLs ----------------------------------------------------------------------------------
    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL for *dbname* as the superuser."""
        return self._url(dbname, self.password)

    def wrong_password_url(self, dbname: str = "postgres") -> str:
        """Same as :meth:`url` but with a password the server will reject."""
        return self._url(dbname, "not-" + self.password)

    def _url(self, dbname: str, password: str) -> str:
        if not self._running:
            raise RuntimeError("PostgresServer is not running")
        return f"postgresql+psycopg2://{PG_SUPERUSER}:{password}@{self.host}:{self.port}/{dbname}"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Self:
        if self._running:
            return self
        bindir = self._bindir or find_pg_bindir()
        if bindir is None:
            raise ServerUnavailable(
                "PostgreSQL server binaries (initdb, pg_ctl, postgres) not found: tried "
                "$MLTIDY_PG_BINDIR, `pg_config --bindir`, /usr/lib/postgresql/*/bin and $PATH. "
                "Install e.g. the Debian package postgresql-15."
            )
        self._bindir = bindir
        began = time.monotonic()
        self._run_as = self._pick_unprivileged_user() if os.geteuid() == 0 else None
        self.tmpdir = _private_tempdir("mltidy-pg-", traversable=self._run_as is not None)
        try:
            self._initdb()
            for attempt in range(3):
                self.port = free_port()
                if self._pg_ctl_start(last_attempt=attempt == 2):
                    break
            self._running = True
            self._wait_until_accepting()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop the cluster (fast shutdown, then SIGKILL) and delete its directory."""
        if self.tmpdir is None:
            return
        pidfile = self.datadir / "postmaster.pid"
        if pidfile.exists():
            try:
                stopped = (
                    self._run(
                        ["pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "-t", "30", "stop"],
                        timeout=40,
                    ).returncode
                    == 0
                )
            except (subprocess.SubprocessError, OSError):
                stopped = False
            if not stopped:
                with contextlib.suppress(OSError, ValueError, IndexError):
                    os.kill(int(pidfile.read_text().split()[0]), signal.SIGKILL)
        self._running = False
        shutil.rmtree(self.tmpdir, ignore_errors=True)
        self.tmpdir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- databases -----------------------------------------------------------------------------
    def create_database(self, name: str) -> str:
        """Create database *name* (``[a-z_][a-z0-9_]*``) and return its SQLAlchemy URL."""
        self._admin_sql(f'CREATE DATABASE "{self._check_name(name)}"')
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database *name*, terminating any connections a test left open."""
        self._admin_sql(f'DROP DATABASE IF EXISTS "{self._check_name(name)}" WITH (FORCE)')

    @staticmethod
    def _check_name(name: str) -> str:
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"invalid database name for tests: {name!r}")
        return name

    def _admin_sql(self, statement: str) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(
            self.url("postgres"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        try:
            with engine.connect() as conn:
                conn.execute(sa.text(statement))
        finally:
            engine.dispose()

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _pick_unprivileged_user() -> str:
        for user in ("postgres", "nobody"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(user)
                return user
        raise ServerUnavailable(
            "running as root, but neither a 'postgres' nor a 'nobody' user exists to own the "
            "PostgreSQL cluster (initdb/postgres refuse to run as root)"
        )

    def _command(self, argv: list[str]) -> list[str]:
        assert self._bindir is not None
        cmd = [str(self._bindir / argv[0]), *argv[1:]]
        if self._run_as is None:
            return cmd
        if runuser := shutil.which("runuser"):
            return [runuser, "-u", self._run_as, "--", *cmd]
        if setpriv := shutil.which("setpriv"):
            pw = pwd.getpwnam(self._run_as)
            return [
                setpriv,
                f"--reuid={pw.pw_uid}",
                f"--regid={pw.pw_gid}",
                "--init-groups",
                "--",
                *cmd,
            ]
        if su := shutil.which("su"):
            return [su, "-s", "/bin/sh", self._run_as, "-c", shlex.join(cmd)]
        raise ServerUnavailable("running as root but none of runuser/setpriv/su is available")

    def _run(self, argv: list[str], *, timeout: float) -> subprocess.CompletedProcess[str]:
        # cwd: the unprivileged user may not be able to enter the current directory (/root).
        return subprocess.run(
            self._command(argv),
            cwd=self._tmp(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            env={**os.environ, "LC_ALL": "C", "LANG": "C"},
        )

    def _initdb(self) -> None:
        tmp = self._tmp()
        pwfile = tmp / "pwfile"
        pwfile.write_text(self.password + "\n")
        if self._run_as is not None:
            pw = pwd.getpwnam(self._run_as)
            for path in (tmp, pwfile):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        tmp.chmod(0o700)
        pwfile.chmod(0o600)
        proc = self._run(
            [
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                PG_SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
                "--no-instructions",
            ],
            timeout=120,
        )
        pwfile.unlink()
        if proc.returncode != 0:
            raise ServerStartError(
                f"initdb failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
            )
        settings = {
            "listen_addresses": f"'{LOCALHOST}'",
            "unix_socket_directories": f"'{self.socket_dir}'",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "max_connections": "200",
            "shared_buffers": "32MB",
            "logging_collector": "off",
            # DSM segments in the data dir instead of /dev/shm: nothing leaks if killed.
            "dynamic_shared_memory_type": "mmap",
        }
        with (self.datadir / "postgresql.conf").open("a", encoding="utf-8") as conf:
            conf.write("\n# mltidy test settings\n")
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())

    def _pg_ctl_start(self, *, last_attempt: bool) -> bool:
        proc = self._run(
            [
                "pg_ctl",
                "-D",
                str(self.datadir),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                str(int(self.startup_timeout)),
                "-o",
                f"-p {self.port}",
                "start",
            ],
            timeout=self.startup_timeout + 15,
        )
        if proc.returncode == 0:
            return True
        log = _tail(self.logfile)
        if "could not bind" in log and not last_attempt:
            return False  # lost the race for the port: try another one
        raise ServerStartError(
            f"pg_ctl start failed (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}\n"
            f"--- tail of {self.logfile} ---\n{log}"
        )

    def _wait_until_accepting(self) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(
            self.url("postgres"), poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 2}
        )
        deadline = time.monotonic() + self.startup_timeout
        try:
            while True:
                try:
                    with engine.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
                    return
                except sa.exc.OperationalError as exc:
                    if time.monotonic() > deadline:
                        raise ServerStartError(
                            f"PostgreSQL on port {self.port} did not accept connections within "
                            f"{self.startup_timeout:.0f}s: {exc}\n"
                            f"--- tail of {self.logfile} ---\n{_tail(self.logfile)}"
                        ) from exc
                    time.sleep(0.1)
        finally:
            engine.dispose()


# --------------------------------------------------------------------------------------------
# MLflow tracking server
# --------------------------------------------------------------------------------------------


def mlflow_executable() -> Path:
    """The ``mlflow`` console script of the running interpreter's environment."""
    return Path(sys.executable).parent / "mlflow"


class MlflowServer:
    """A real ``mlflow server`` subprocess with a SQLite backend store.

    The server runs in its own session/process group: ``mlflow server`` spawns uvicorn and (with
    job execution on, the MLflow default) a job runner plus several huey consumers, which would
    outlive a plain ``terminate()``.  :meth:`stop` kills the whole group and verifies that
    nothing of it survives.

    *enable_jobs* maps to ``MLFLOW_SERVER_ENABLE_JOB_EXECUTION``.  mltidy does not need the job
    machinery, and turning it off saves ~7 helper processes and some start-up time; pass
    ``True`` to get the stock server.
    """

    def __init__(
        self, *, enable_jobs: bool = False, startup_timeout: float = 120.0, workers: int = 1
    ) -> None:
        self.enable_jobs = enable_jobs
        self.startup_timeout = startup_timeout
        self.workers = workers
        self.host = LOCALHOST
        self.port = 0
        self.tmpdir: Path | None = None
        self.startup_seconds: float | None = None
        self.process: subprocess.Popen[bytes] | None = None

    def _tmp(self) -> Path:
        if self.tmpdir is None:
            raise RuntimeError("MlflowServer is not started")
        return self.tmpdir

    @property
    def url(self) -> str:
        """Tracking URI, e.g. ``http://127.0.0.1:PORT``."""
        return f"http://{self.host}:{self.port}"

    @property
    def backend_uri(self) -> str:
        """The server's SQLAlchemy backend store URI (a SQLite file)."""
        return f"sqlite:///{self._tmp() / 'server.db'}"

    @property
    def artifact_root(self) -> Path:
        return self._tmp() / "artifacts"

    @property
    def logfile(self) -> Path:
        return self._tmp() / "server.log"

    @property
    def pgid(self) -> int:
        if self.process is None:
            raise RuntimeError("MlflowServer is not started")
        return self.process.pid  # start_new_session=True: pid == pgid == sid

    def start(self) -> Self:
        if self.process is not None:
            return self
        exe = mlflow_executable()
        if not os.access(exe, os.X_OK):
            raise ServerUnavailable(f"mlflow executable not found at {exe} (pip install mlflow)")
        began = time.monotonic()
        self.tmpdir = _private_tempdir("mltidy-mlflow-")
        self.artifact_root.mkdir()
        try:
            for attempt in range(3):
                self.port = free_port()
                self._spawn(exe)
                if self._wait_healthy(last_attempt=attempt == 2):
                    break
                self._kill_group()
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def _spawn(self, exe: Path) -> None:
        cmd = [
            str(exe),
            "server",
            "--backend-store-uri",
            self.backend_uri,
            "--default-artifact-root",
            str(self.artifact_root),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--workers",
            str(self.workers),
        ]
        env = {
            **os.environ,
            "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true" if self.enable_jobs else "false",
            "PYTHONUNBUFFERED": "1",
            "TMPDIR": str(self._tmp()),  # keep mlflow's temp litter (e.g. db_init_lock-*) here
        }
        env.pop("MLFLOW_TRACKING_URI", None)
        # Log to a file, never a pipe: nobody drains a pipe while tests run, and a full pipe
        # blocks the server.  Append so a retried start keeps the earlier attempt's output.
        with self.logfile.open("ab") as log:
            log.write(f"$ {shlex.join(cmd)}\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                cmd,
                cwd=self._tmp(),
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_healthy(self, *, last_attempt: bool) -> bool:
        assert self.process is not None
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # ignore *_proxy
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = _tail(self.logfile)
                if "address already in use" in log.lower() and not last_attempt:
                    return False
                raise ServerStartError(
                    f"mlflow server exited with code {self.process.returncode} during start-up"
                    f"\n--- tail of {self.logfile} ---\n{log}"
                )
            try:
                with opener.open(f"{self.url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        return True
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.2)
        raise ServerStartError(
            f"mlflow server did not answer GET {self.url}/health within "
            f"{self.startup_timeout:.0f}s\n--- tail of {self.logfile} ---\n{_tail(self.logfile)}"
        )

    def stop(self) -> None:
        """Kill the server's whole process group and delete its directory."""
        if self.process is not None:
            self._kill_group()
        if self.tmpdir is not None:
            shutil.rmtree(self.tmpdir, ignore_errors=True)
            self.tmpdir = None

    def _kill_group(self, grace: float = 10.0) -> None:
        assert self.process is not None
        pgid = self.pgid
        # Remember stragglers that left the group (setsid) and huey's scratch dir, which
        # mlflow creates with mkdtemp(dir="/dev/shm") and never removes.
        strays = _descendants(pgid)
        scratch = {
            env["_MLFLOW_HUEY_STORAGE_PATH"]
            for pid in [*process_group_members(pgid), *strays]
            if "_MLFLOW_HUEY_STORAGE_PATH" in (env := _proc_environ(pid))
        }
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while process_group_members(pgid) and time.monotonic() < deadline:
            self.process.poll()  # reap the leader as soon as it exits
            time.sleep(0.1)
        for _ in range(50):
            if not process_group_members(pgid):
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.1)
        for pid, started in strays.items():
            stat = _proc_stat(pid)
            if stat is not None and stat[3] == started and stat[2] != pgid:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)
        for path in scratch:
            scratch_dir = Path(path)
            if scratch_dir.parent in (Path("/dev/shm"), Path(tempfile.gettempdir())):
                shutil.rmtree(scratch_dir, ignore_errors=True)
        survivors = process_group_members(pgid)
        self.process = None
        if survivors:
            raise RuntimeError(f"mlflow server processes survived SIGKILL: {survivors}")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
