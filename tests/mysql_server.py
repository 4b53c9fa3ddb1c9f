"""A real MariaDB (MySQL-compatible) server for the test suite.

Same shape as :class:`servers.PostgresServer`: a throw-away server in a private temporary
directory, listening on a free port on 127.0.0.1 only, with an all-privilege user ``mltidy``
that logs in with a random password.  ``stop()`` is idempotent and removes the directory.

Debian/Ubuntu packages: ``mariadb-server-core`` (``mariadbd``, ``mariadb-install-db``) and
``mariadb-client-core`` (``my_print_defaults``, which ``mariadb-install-db`` calls: without it
the data directory cannot be initialised).  The ``-core`` packages start no service and create
no ``mysql`` system user.

Implementation notes:

* Every server/installer invocation starts with ``--no-defaults`` so that ``/etc/mysql/my.cnf``
  (which points the socket at ``/run/mysqld``) and ``~/.my.cnf`` are ignored.
* ``mltidy`` is created while the data directory is initialised (``mariadb-install-db
  --extra-file``).  The bootstrap runs with the grant tables disabled, so the extra file
  starts with ``FLUSH PRIVILEGES`` to load them; afterwards ``CREATE USER``/``GRANT`` work.
  No root login over the socket is needed at all.
* As root, the server runs as the ``mysql`` user if it exists, else ``nobody``:
  ``mariadbd --user=...`` drops its privileges itself, so no ``runuser`` is involved.
* ``innodb_use_native_aio=0``: InnoDB would otherwise use io_uring, which container seccomp
  profiles often forbid and which needs a generous ``RLIMIT_MEMLOCK``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

from servers import (
    LOCALHOST,
    ServerStartError,
    ServerUnavailable,
    _private_tempdir,
    _tail,
    free_port,
)

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

MYSQL_USER = "mltidy"

_DB_NAME_RE = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_COLLATION_RE = re.compile(r"^[a-z0-9_]{1,64}$")
# Linux: sun_path is 108 bytes including the terminating NUL.
_MAX_SOCKET_PATH = 107
_BIND_ERRORS = ("address already in use", "bind on tcp/ip port")

#: Options shared by the bootstrap (mariadb-install-db) and the real server.
_COMMON_OPTIONS = (
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=2",
    "--innodb-doublewrite=0",
    "--innodb-use-native-aio=0",
    "--skip-log-bin",
    "--skip-name-resolve",
    "--character-set-server=utf8mb4",
    # No fsync() outside InnoDB (.frm files, DDL log, ...): DDL-heavy schema set-up such as
    # MLflow's migrations is ~2x faster.  "loose-": only a warning if a build lacks it.
    "--loose-debug-no-sync",
)

#: Use /dev/shm for the data directory only if it has this much room (Docker's default
#: /dev/shm is 64 MiB; the server needs ~50 MiB, ~130 MiB once MLflow's schema exists).
_RAMDISK = Path("/dev/shm")
_RAMDISK_MIN_FREE = 1 << 30


def find_mysql_binaries() -> tuple[Path, Path] | None:
    """``(install_db, server)`` executables, or None when MariaDB is not installed.

    Looks in ``$MLTIDY_MYSQL_BINDIR`` first, then ``$PATH``, then ``/usr/bin`` and
    ``/usr/sbin`` (``mariadbd`` lives in ``/usr/sbin``, which is not on a normal user's PATH
    on Debian).  The MariaDB names win over the legacy MySQL ones.
    """
    dirs: list[Path] = []
    if env_dir := os.environ.get("MLTIDY_MYSQL_BINDIR"):
        dirs.append(Path(env_dir))
    dirs += [Path(p) for p in os.environ.get("PATH", "").split(os.pathsep) if p]
    dirs += [Path("/usr/bin"), Path("/usr/sbin"), Path("/usr/local/bin"), Path("/usr/local/sbin")]

    def find(names: tuple[str, ...]) -> Path | None:
        for name in names:
            for directory in dirs:
                cand = directory / name
                if cand.is_file() and os.access(cand, os.X_OK):
                    return cand
        return None

    install_db = find(("mariadb-install-db", "mysql_install_db"))
    server = find(("mariadbd", "mysqld"))
    # mariadb-install-db runs my_print_defaults (package mariadb-client-core) from its own
    # folder or PATH; without it the bootstrap fails with a confusing error.
    print_defaults = find(("my_print_defaults",))
    if install_db is None or server is None or print_defaults is None:
        return None
    return install_db, server


def ramdisk_usable() -> bool:
    """True if /dev/shm is a world-writable, sticky directory with at least 1 GiB free."""
    try:
        st = _RAMDISK.stat()
        vfs = os.statvfs(_RAMDISK)
    except OSError:
        return False
    return (
        _RAMDISK.is_dir()
        and st.st_mode & 0o1777 == 0o1777
        and vfs.f_bavail * vfs.f_frsize >= _RAMDISK_MIN_FREE
    )


def _clean_env() -> dict[str, str]:
    """Environment for the server processes: C locale, no MYSQL_*/MARIADB_* overrides."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MYSQL_", "MARIADB_")) and key != "MYSQL_HOME"
    }
    env.update(LC_ALL="C", LANG="C")
    return env


def _run_in_group(
    argv: list[str], *, cwd: Path, log: Path, timeout: float
) -> subprocess.CompletedProcess[bytes]:
    """Run *argv* in its own session; on timeout kill the whole group (script + bootstrap)."""
    with log.open("ab") as out:
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env=_clean_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        finally:
            # The bootstrap server may linger briefly after the script exits.
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
    return subprocess.CompletedProcess(argv, proc.returncode)


class MysqlServer:
    """A throw-away MariaDB server with password-authenticated all-privilege user ``mltidy``.

    ``url(dbname)`` gives ``mysql+pymysql://mltidy:<pw>@127.0.0.1:<port>/<dbname>`` (needs the
    ``pymysql`` package).  ``startup_seconds`` is set after :meth:`start`; most of it is
    ``mariadb-install-db``, the server itself is up in well under a second.

    *ramdisk*: put the data directory on /dev/shm (tmpfs).  Default (None): when
    :func:`ramdisk_usable`, else the normal temp dir.  On a disk, DDL is fsync-bound: MLflow's
    schema set-up takes ~2x as long, so does ``mariadb-install-db``.
    """

    def __init__(
        self,
        binaries: tuple[Path, Path] | None = None,
        *,
        startup_timeout: float = 60.0,
        install_timeout: float = 120.0,
        ramdisk: bool | None = None,
    ) -> None:
        self._binaries = binaries
        self.ramdisk = ramdisk
        self.startup_timeout = startup_timeout
        self.install_timeout = install_timeout
        self.password = secrets.token_hex(16)
        self.host = LOCALHOST
        self.port = 0
        self.tmpdir: Path | None = None
        self.startup_seconds: float | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._run_as: str | None = None
        self._running = False

    # -- paths -------------------------------------------------------------------------------
    def _tmp(self) -> Path:
        if self.tmpdir is None:
            raise RuntimeError("MysqlServer is not started")
        return self.tmpdir

    @property
    def datadir(self) -> Path:
        return self._tmp() / "data"

    @property
    def logfile(self) -> Path:
        """The server's error log (``--log-error``)."""
        return self._tmp() / "mariadbd.log"

    @property
    def console_log(self) -> Path:
        """stdout/stderr of ``mariadb-install-db`` and ``mariadbd`` (early start-up errors)."""
        return self._tmp() / "console.log"

    @property
    def socket_path(self) -> Path:
        return self._tmp() / "mysqld.sock"

    @property
    def pidfile(self) -> Path:
        return self._tmp() / "mariadbd.pid"

    # -- URLs ----------------------------------------------------------------------------------
    def url(self, dbname: str = "mysql") -> str:
        """SQLAlchemy URL for *dbname* as ``mltidy`` (default: the always-present ``mysql``)."""
        return self._url(dbname, self.password)

    def wrong_password_url(self, dbname: str = "mysql") -> str:
        """Same as :meth:`url` but with a password the server will reject."""
        return self._url(dbname, "not-" + self.password)

    def _url(self, dbname: str, password: str) -> str:
        if not self._running:
            raise RuntimeError("MysqlServer is not running")
        return f"mysql+pymysql://{MYSQL_USER}:{password}@{self.host}:{self.port}/{dbname}"

    # -- lifecycle -----------------------------------------------------------------------------
    def start(self) -> Self:
        if self._running:
            return self
        binaries = self._binaries or find_mysql_binaries()
        if binaries is None:
            raise ServerUnavailable(
                "MariaDB binaries (mariadb-install-db/mysql_install_db, mariadbd/mysqld and "
                "my_print_defaults) not found: tried $MLTIDY_MYSQL_BINDIR, $PATH, /usr/bin and "
                "/usr/sbin. Install the Debian packages mariadb-server-core and "
                "mariadb-client-core."
            )
        if importlib.util.find_spec("pymysql") is None:
            raise ServerUnavailable("the pymysql package is not installed (pip install pymysql)")
        self._binaries = binaries
        began = time.monotonic()
        self._run_as = self._pick_run_as_user() if os.geteuid() == 0 else None
        try:
            self._make_tmpdir()
            self._install_db()
            for attempt in range(3):
                self.port = free_port()
                if self._spawn_and_wait(last_attempt=attempt == 2):
                    break
            self._running = True
        except BaseException:
            self.stop()
            raise
        self.startup_seconds = time.monotonic() - began
        return self

    def stop(self, grace: float = 30.0) -> None:
        """Shut the server down (SIGTERM, then SIGKILL after *grace* s); delete its directory."""
        self._running = False
        if self.process is not None:
            self._terminate(grace)
        if self.tmpdir is not None:
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
    def create_database(self, name: str, *, collation: str | None = None) -> str:
        """Create database *name* (``[a-z_][a-z0-9_]*``, utf8mb4) and return its URL.

        *collation* defaults to the server's utf8mb4 default (``utf8mb4_general_ci``, i.e.
        case-insensitive comparisons, as on most real deployments).
        """
        statement = f"CREATE DATABASE `{self._check_name(name)}` CHARACTER SET utf8mb4"
        if collation is not None:
            if not _COLLATION_RE.match(collation):
                raise ValueError(f"invalid collation: {collation!r}")
            statement += f" COLLATE {collation}"
        self._admin_sql([statement])
        return self.url(name)

    def drop_database(self, name: str) -> None:
        """Drop database *name*, first killing connections a test left open on it."""
        import sqlalchemy as sa

        name = self._check_name(name)
        engine = sa.create_engine(
            self.url("mysql"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        try:
            with engine.connect() as conn:
                # Open transactions hold metadata locks that would make DROP DATABASE wait for
                # lock_wait_timeout (a year by default): kill them (cf. PostgreSQL's FORCE).
                conn.execute(sa.text("SET SESSION lock_wait_timeout = 30"))
                ids = conn.execute(
                    sa.text(
                        "SELECT id FROM information_schema.processlist "
                        "WHERE db = :db AND id <> CONNECTION_ID()"
                    ),
                    {"db": name},
                ).scalars()
                for conn_id in list(ids):
                    with contextlib.suppress(sa.exc.DBAPIError):  # already gone
                        conn.execute(sa.text(f"KILL CONNECTION {int(conn_id)}"))
                conn.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        finally:
            engine.dispose()

    @staticmethod
    def _check_name(name: str) -> str:
        if not _DB_NAME_RE.match(name):
            raise ValueError(f"invalid database name for tests: {name!r}")
        return name

    def _admin_sql(self, statements: list[str]) -> None:
        import sqlalchemy as sa

        engine = sa.create_engine(
            self.url("mysql"), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool
        )
        try:
            with engine.connect() as conn:
                for statement in statements:
                    conn.execute(sa.text(statement))
        finally:
            engine.dispose()

    # -- internals -----------------------------------------------------------------------------
    @staticmethod
    def _pick_run_as_user() -> str:
        """As root: ``mysql`` (created by the full mariadb-server package), else ``nobody``."""
        for user in ("mysql", "nobody"):
            with contextlib.suppress(KeyError):
                pwd.getpwnam(user)
                return user
        return "root"  # mariadbd runs as root only when told so explicitly (--user=root)

    def _make_tmpdir(self) -> None:
        # With a separate run-as user, every directory above ours must be traversable by it.
        traversable = self._run_as not in (None, "root")
        use_ramdisk = ramdisk_usable() if self.ramdisk is None else self.ramdisk
        if use_ramdisk:
            tmp = Path(tempfile.mkdtemp(prefix="mltidy-mysql-", dir=_RAMDISK))
        else:
            tmp = _private_tempdir("mltidy-mysql-", traversable=traversable)
        if len(str(tmp / "mysqld.sock")) > _MAX_SOCKET_PATH and tmp.parent != Path("/tmp"):
            shutil.rmtree(tmp, ignore_errors=True)
            tmp = Path(tempfile.mkdtemp(prefix="mltidy-mysql-", dir="/tmp"))
        self.tmpdir = tmp
        (tmp / "tmp").mkdir()
        if traversable:
            assert self._run_as is not None
            pw = pwd.getpwnam(self._run_as)
            for path in (tmp, tmp / "tmp"):
                os.chown(path, pw.pw_uid, pw.pw_gid)
        tmp.chmod(0o700)

    def _socket_auth_user(self) -> str:
        """OS user who may log in as the MariaDB ``root`` over the socket (never used here)."""
        return pwd.getpwuid(os.geteuid()).pw_name

    def _install_db(self) -> None:
        assert self._binaries is not None
        install_db = self._binaries[0]
        tmp = self._tmp()
        extra = tmp / "create-user.sql"
        fd = os.open(extra, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as sql:
            sql.write(
                "FLUSH PRIVILEGES;\n"  # the bootstrap runs with grant tables off
                + "".join(
                    f"CREATE USER '{MYSQL_USER}'@'{host}' IDENTIFIED BY '{self.password}';\n"
                    f"GRANT ALL PRIVILEGES ON *.* TO '{MYSQL_USER}'@'{host}' WITH GRANT OPTION;\n"
                    for host in ("%", "localhost")
                )
            )
        argv = [
            str(install_db),
            "--no-defaults",  # must come first
            f"--datadir={self.datadir}",
            f"--tmpdir={tmp / 'tmp'}",
            "--skip-test-db",
            "--auth-root-authentication-method=socket",
            f"--auth-root-socket-user={self._socket_auth_user()}",
            f"--extra-file={extra}",
            *_COMMON_OPTIONS,
        ]
        if self._run_as is not None:
            argv.append(f"--user={self._run_as}")
        if install_db.parent not in (Path("/usr/bin"), Path("/usr/sbin")):
            argv.append(f"--basedir={install_db.parent.parent}")
        try:
            proc = _run_in_group(argv, cwd=tmp, log=self.console_log, timeout=self.install_timeout)
        except subprocess.TimeoutExpired as exc:
            raise ServerStartError(
                f"{install_db.name} did not finish within {self.install_timeout:.0f}s\n"
                f"--- tail of {self.console_log} ---\n{_tail(self.console_log)}"
            ) from exc
        finally:
            extra.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise ServerStartError(
                f"{install_db.name} failed (exit {proc.returncode})\n"
                f"--- tail of {self.console_log} ---\n{_tail(self.console_log)}"
            )

    def _spawn_and_wait(self, *, last_attempt: bool) -> bool:
        """Start mariadbd on ``self.port``; False if it lost the race for the port."""
        assert self._binaries is not None
        tmp = self._tmp()
        argv = [
            str(self._binaries[1]),
            "--no-defaults",  # must come first
            f"--datadir={self.datadir}",
            f"--tmpdir={tmp / 'tmp'}",
            f"--socket={self.socket_path}",
            f"--pid-file={self.pidfile}",
            f"--log-error={self.logfile}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            "--skip-networking=0",
            f"--secure-file-priv={tmp / 'tmp'}",
            "--max-connections=200",
            "--innodb-fast-shutdown=3",  # we throw the datadir away: skip flushing on stop
            "--innodb-buffer-pool-dump-at-shutdown=0",
            "--innodb-buffer-pool-load-at-startup=0",
            *_COMMON_OPTIONS,
        ]
        if self._run_as is not None:
            argv.append(f"--user={self._run_as}")
        with self.console_log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                cwd=tmp,
                env=_clean_env(),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # no terminal SIGINT; stop() shuts it down cleanly
            )
        return self._wait_until_accepting(last_attempt=last_attempt)

    def _logs(self) -> str:
        return (
            f"--- tail of {self.logfile} ---\n{_tail(self.logfile)}\n"
            f"--- tail of {self.console_log} ---\n{_tail(self.console_log, 15)}"
        )

    def _wait_until_accepting(self, *, last_attempt: bool) -> bool:
        import sqlalchemy as sa

        assert self.process is not None
        url = f"mysql+pymysql://{MYSQL_USER}:{self.password}@{self.host}:{self.port}/mysql"
        engine = sa.create_engine(
            url, poolclass=sa.pool.NullPool, connect_args={"connect_timeout": 2}
        )
        deadline = time.monotonic() + self.startup_timeout
        try:
            while True:
                if self.process.poll() is not None:
                    code = self.process.returncode
                    self.process = None
                    log = _tail(self.logfile).lower()
                    if any(err in log for err in _BIND_ERRORS) and not last_attempt:
                        return False
                    raise ServerStartError(
                        f"mariadbd exited with code {code} during start-up\n{self._logs()}"
                    )
                try:
                    with engine.connect() as conn:
                        conn.execute(sa.text("SELECT 1"))
                    return True
                except sa.exc.OperationalError as exc:
                    if time.monotonic() > deadline:
                        raise ServerStartError(
                            f"MariaDB on port {self.port} did not accept connections within "
                            f"{self.startup_timeout:.0f}s: {exc}\n{self._logs()}"
                        ) from exc
                    time.sleep(0.1)
        finally:
            engine.dispose()

    def _terminate(self, grace: float) -> None:
        proc = self.process
        assert proc is not None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=10)
        self.process = None
