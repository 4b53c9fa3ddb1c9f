"""A real single-node SLURM for the test suite (see the project's notes on SLURM).

A plain module (no pytest imports), like ``servers.py``: usable from fixtures, scripts and
benchmarks. The pytest glue (skip-or-fail policy, fixtures, the ``slurm`` marker) lives in
``slurm_fixtures.py``.

One :class:`SlurmCluster` is a private ``munged`` (its own key and socket), ``slurmctld`` and one
``slurmd`` on 127.0.0.1 and free ports, optionally ``slurmdbd`` over a MariaDB database
(accounting, ``sacct``), with configuration, state, spool and logs in a temporary directory.
Each daemon runs in its own process group; :meth:`SlurmCluster.stop` cancels the jobs, ends the
groups, kills any ``slurmstepd`` left behind and deletes the directory. Clients find the
cluster through ``SLURM_CONF`` (:attr:`SlurmCluster.env`).

Debian/Ubuntu packages: ``slurmctld slurmd slurm-client munge`` (and ``slurmdbd`` for
accounting). Everything runs as root (``SlurmUser=root``); no cgroups are needed, except for the
optional memory confinement (:func:`memory_cgroup_problem`), which runs ``slurmd`` in a private
cgroup namespace so that the job cgroups SLURM creates stay below this process's own cgroup.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from servers import (
    LOCALHOST,
    ServerStartError,
    ServerUnavailable,
    _descendants,
    _private_tempdir,
    _tail,
    free_port,
    process_group_members,
)

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

    from mysql_server import MysqlServer

#: The Debian packages the fixtures need (``.ci/run`` installs them).
SLURM_PACKAGES = "slurmctld slurmd slurm-client munge"
ACCOUNTING_PACKAGES = "slurmdbd"
_DAEMONS = ("munged", "slurmctld", "slurmd")
_CLIENTS = ("sbatch", "squeue", "scontrol", "scancel", "sinfo")
_ACCOUNTING = ("slurmdbd", "sacctmgr", "sacct")
#: Job states in which a job may still have processes.
_ACTIVE_STATES = "pending,running,suspended,completing,configuring,signaling,stage_out"
_SAFE_NODE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9-]{0,40}$")


def find_slurm(*, accounting: bool = False) -> dict[str, Path]:
    """Paths of the SLURM and munge programs, or :class:`ServerUnavailable` naming the missing."""
    wanted = (*_DAEMONS, *_CLIENTS, *(_ACCOUNTING if accounting else ()))
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    found = {name: shutil.which(name, path=path) for name in wanted}
    missing = [name for name, exe in found.items() if exe is None]
    if missing:
        packages = SLURM_PACKAGES + (f" {ACCOUNTING_PACKAGES}" if accounting else "")
        raise ServerUnavailable(
            f"SLURM programs not found: {', '.join(missing)} (looked on $PATH, /usr/sbin, "
            f"/sbin). Install the Debian packages {packages}."
        )
    return {name: Path(exe) for name, exe in found.items() if exe is not None}


def memory_cgroup_problem() -> str | None:
    """Why SLURM cannot confine job memory on this machine, or ``None`` when it can.

    SLURM 22.05 confines memory with the cgroup v1 memory controller (its cgroup v2 plugin needs
    systemd to delegate a cgroup to slurmd). ``slurmd`` is started in a new cgroup and mount
    namespace, with the memory controller mounted privately, so the job cgroups it creates stay
    inside this process's cgroup; this checks that all of that works here.
    """
    if not Path("/proc/self/ns/cgroup").exists():
        return "the kernel has no cgroup namespaces"
    unshare = shutil.which("unshare")
    if unshare is None:
        return "unshare (util-linux) is not installed"
    if "memory" not in _v1_controllers():
        return (
            "no cgroup v1 memory controller is mounted (a cgroup v2-only machine): SLURM 22.05's "
            "cgroup/v2 plugin needs systemd to delegate a cgroup to slurmd"
        )
    with tempfile.TemporaryDirectory(prefix="mltidy-cg-") as tmp:
        probe = Path(tmp) / "memory"
        probe.mkdir()
        script = (
            f'mount -t cgroup -o memory mltidy "{probe}" && mkdir "{probe}/p" && rmdir "{probe}/p"'
        )
        try:
            done = subprocess.run(
                [unshare, "--cgroup", "--mount", "--propagation", "private", "sh", "-c", script],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            return f"unshare failed: {exc}"
        if done.returncode != 0:
            return (
                "the cgroup v1 memory controller cannot be mounted in a private cgroup namespace "
                f"here: {(done.stderr or done.stdout).strip() or f'exit {done.returncode}'}"
            )
    return None


def _v1_controllers() -> set[str]:
    controllers: set[str] = set()
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/mounts").read_text().splitlines():
            fields = line.split()
            if len(fields) > 3 and fields[2] == "cgroup":
                controllers.update(fields[3].split(","))
    return controllers


def _swap_accounted() -> bool:
    return any(
        Path(line.split()[1], "memory.memsw.limit_in_bytes").exists()
        for line in Path("/proc/self/mounts").read_text().splitlines()
        if len(line.split()) > 3
        and line.split()[2] == "cgroup"
        and "memory" in line.split()[3].split(",")
    )


def _host_name() -> str:
    """This host's short name: slurmctld runs only where ``SlurmctldHost`` names the host."""
    return socket.gethostname().split(".")[0]


def _node_name(*, unique: bool) -> str:
    """The node's name: this host's (as on a real cluster), made unique where SLURM would
    otherwise share state between clusters on one host (cgroups are named after the node)."""
    short = _host_name()
    base = short if _SAFE_NODE_NAME.match(short) else "node"
    return f"{base[:30]}-{secrets.token_hex(3)}" if unique else base


class _Daemon:
    """One daemon in its own process group, its output in a log file."""

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str], log: Path) -> None:
        self.name = name
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                argv,
                env=env,
                cwd=log.parent,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    @property
    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self, grace: float = 10.0) -> None:
        """SIGTERM the daemon itself, then SIGKILL whatever is left of its group."""
        pgid = self.process.pid
        with contextlib.suppress(ProcessLookupError):
            self.process.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=grace)
        deadline = time.monotonic() + grace
        while process_group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.05)
        for _ in range(50):
            if not process_group_members(pgid):
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, signal.SIGKILL)
            time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=10)


class SlurmCluster:
    """A throw-away single-node SLURM: munged, slurmctld, slurmd (and slurmdbd), as root.

    Args:
        name: the ``ClusterName``.
        cpus: CPUs the node declares (``SlurmdParameters=config_overrides``: more than the
            machine has is fine, jobs here mostly sleep). With ``DefMemPerCPU`` set, that many
            one-CPU jobs run at once.
        min_job_age: seconds the controller keeps finished jobs (``MinJobAge``).
        cgroups: confine job memory with cgroups (``--mem`` is enforced, jobs over it end
            ``OUT_OF_MEMORY``); see :func:`memory_cgroup_problem`.
        accounting: a running MariaDB server: run ``slurmdbd`` on a new database in it, so
            ``sacct`` answers.
    """

    def __init__(
        self,
        *,
        name: str = "mltidy",
        cpus: int = 8,
        min_job_age: int = 3600,
        cgroups: bool = False,
        accounting: MysqlServer | None = None,
        startup_timeout: float = 60.0,
    ) -> None:
        self.name = name
        self.cpus = cpus
        self.min_job_age = min_job_age
        self.cgroups = cgroups
        self.accounting = accounting
        self.startup_timeout = startup_timeout
        self.node = _node_name(unique=cgroups)
        self.tmpdir: Path | None = None
        self.startup_seconds: float | None = None
        self.ctld_port = 0
        self.slurmd_port = 0
        self.dbd_port = 0
        self._programs: dict[str, Path] = {}
        self._daemons: dict[str, _Daemon] = {}
        self._database: str | None = None

    # -- paths and environment -------------------------------------------------------------------
    def _tmp(self) -> Path:
        if self.tmpdir is None:
            raise RuntimeError("SlurmCluster is not started")
        return self.tmpdir

    @property
    def conf(self) -> Path:
        """The cluster's ``slurm.conf`` (clients: ``SLURM_CONF``)."""
        return self._tmp() / "etc" / "slurm.conf"

    @property
    def munge_socket(self) -> Path:
        return self._tmp() / "munge" / "socket"

    @property
    def job_dir(self) -> Path:
        """Where jobs run (``--chdir``) and write their output (``<job id>.out``)."""
        return self._tmp() / "jobs"

    @property
    def env(self) -> dict[str, str]:
        """This process's environment with ``SLURM_CONF`` pointing at this cluster."""
        return {**os.environ, "SLURM_CONF": str(self.conf)}

    def log(self, daemon: str) -> str:
        """The tail of a daemon's log (for failure messages)."""
        return _tail(self._tmp() / "log" / f"{daemon}.log")

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> Self:
        if self.tmpdir is not None:
            return self
        self._programs = find_slurm(accounting=self.accounting is not None)
        if self.cgroups and (problem := memory_cgroup_problem()) is not None:
            raise ServerUnavailable(f"cannot confine job memory with cgroups: {problem}")
        began = time.monotonic()
        for attempt in range(3):
            self.tmpdir = _private_tempdir("mltidy-slurm-")
            try:
                self._start_once()
            except _PortTaken:
                self.stop()
                if attempt == 2:
                    raise ServerStartError("SLURM could not bind its ports three times") from None
                continue
            except BaseException:
                self.stop()
                raise
            break
        self.startup_seconds = time.monotonic() - began
        return self

    def _start_once(self) -> None:
        tmp = self._tmp()
        for sub in ("etc", "munge", "state", "spool", "log", "jobs", "cgroup/memory"):
            (tmp / sub).mkdir(parents=True)
        self.ctld_port, self.slurmd_port = free_port(), free_port()
        self._start_munged()
        if self.accounting is not None:
            self.dbd_port = free_port()
            self._write_slurmdbd_conf()
        self.conf.write_text(self._slurm_conf(), encoding="utf-8")
        if self.cgroups:
            (tmp / "etc" / "cgroup.conf").write_text(self._cgroup_conf(), encoding="utf-8")
        if self.accounting is not None:
            self._start_slurmdbd()
        self._spawn(
            "slurmctld", [str(self._programs["slurmctld"]), "-D", "-i", "-f", str(self.conf)]
        )
        self._spawn("slurmd", self._slurmd_argv())
        self._wait_until_idle()

    def stop(self) -> None:
        """Cancel every job, stop the daemons, kill leftover job processes, delete the files."""
        if self.tmpdir is None:
            return
        ctld = self._daemons.get("slurmctld")
        if ctld is not None and ctld.alive:
            with contextlib.suppress(Exception):
                self._cancel_everything()
        controller_up = ctld is not None and ctld.alive
        for name in ("slurmd", "slurmctld", "slurmdbd", "munged"):
            daemon = self._daemons.pop(name, None)
            if daemon is not None:
                # Without a controller slurmd spends ~10 s trying to say goodbye to it.
                daemon.stop(grace=10.0 if controller_up or name != "slurmd" else 1.0)
        self._kill_job_processes()
        if self.accounting is not None and self._database is not None:
            with contextlib.suppress(Exception):
                self.accounting.drop_database(self._database)
            self._database = None
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

    def stop_controller(self) -> None:
        """Stop slurmctld only, as a crash would; :meth:`stop` still cleans up everything."""
        daemon = self._daemons.pop("slurmctld", None)
        if daemon is not None:
            daemon.stop()

    # -- clients ---------------------------------------------------------------------------------
    def run(
        self, *argv: str, timeout: float = 30.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a SLURM client against this cluster."""
        exe = self._programs.get(argv[0]) or shutil.which(argv[0]) or argv[0]
        done = subprocess.run(
            [str(exe), *argv[1:]],
            env=self.env,
            cwd=self.job_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed (exit {done.returncode}):\n{done.stdout}{done.stderr}"
            )
        return done

    def sbatch(self, *args: str, wrap: str | None = None) -> str:
        """Submit a job (``--wrap`` or a script among *args*); its id."""
        argv = [
            "sbatch",
            "--parsable",
            f"--chdir={self.job_dir}",
            f"--output={self.job_dir}/%j.out",
            *args,
        ]
        if wrap is not None:
            argv.append(f"--wrap={wrap}")
        return self.run(*argv).stdout.strip().split(";")[0]

    def scancel(self, *job_ids: str, signal_name: str | None = None) -> None:
        self.run("scancel", *((f"--signal={signal_name}",) if signal_name else ()), *job_ids)

    def scontrol(self, *args: str) -> str:
        return self.run("scontrol", *args).stdout

    def state(self, job_id: str) -> str | None:
        """The job's state as squeue prints it, or ``None`` if the controller does not know it."""
        done = self.run(
            "squeue",
            "--noheader",
            "--states=all",
            f"--jobs={job_id}",
            "--Format=State:|",
            check=False,
        )
        states = [line.strip("|") for line in done.stdout.split() if line.strip("|")]
        return states[0] if states else None

    def wait_for(
        self,
        job_id: str,
        states: Iterable[str] | Callable[[str | None], bool],
        *,
        timeout: float = 60.0,
    ) -> str | None:
        """Poll until the job's state is one of *states* (or satisfies it); the state seen."""
        accept = states if callable(states) else set(states).__contains__
        deadline = time.monotonic() + timeout
        state = self.state(job_id)
        while not accept(state):
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"SLURM job {job_id} is {state}, not {states} after {timeout:.0f}s\n"
                    f"--- slurmctld ---\n{self.log('slurmctld')}\n--- slurmd ---\n"
                    f"{self.log('slurmd')}"
                )
            time.sleep(0.2)
            state = self.state(job_id)
        return state

    def dead_controller_conf(self) -> Path:
        """A copy of ``slurm.conf`` whose controller port nobody listens on."""
        dead = self._tmp() / "etc-dead"
        dead.mkdir(exist_ok=True)
        text = self.conf.read_text(encoding="utf-8")
        text = re.sub(r"(?m)^SlurmctldPort=\d+$", f"SlurmctldPort={free_port()}", text)
        (dead / "slurm.conf").write_text(text, encoding="utf-8")
        return dead / "slurm.conf"

    # -- internals -------------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> _Daemon:
        daemon = _Daemon(name, argv, env=env or self.env, log=self._tmp() / "log" / f"{name}.out")
        self._daemons[name] = daemon
        return daemon

    def _start_munged(self) -> None:
        munge = self._tmp() / "munge"
        key = munge / "key"
        key.write_bytes(secrets.token_bytes(128))
        key.chmod(0o600)
        munge.chmod(0o755)  # munged wants its socket's folder open to all
        self._spawn(
            "munged",
            [
                str(self._programs["munged"]),
                "--foreground",
                "--force",  # as root, and without the system's /run/munge
                f"--socket={self.munge_socket}",
                f"--key-file={key}",
                f"--pid-file={munge / 'munged.pid'}",
                f"--log-file={self._tmp() / 'log' / 'munged.log'}",
                f"--seed-file={munge / 'seed'}",
            ],
        )
        self._wait(lambda: self.munge_socket.exists(), "munged", "munged", timeout=15)

    def _slurm_conf(self) -> str:
        tmp = self._tmp()
        accounting = (
            "AccountingStorageType=accounting_storage/slurmdbd\n"
            f"AccountingStorageHost={LOCALHOST}\n"
            f"AccountingStoragePort={self.dbd_port}\n"
            # For slurmdbd connections this is the munge socket to use (slurm.conf(5)).
            f"AccountingStoragePass={self.munge_socket}\n"
            if self.accounting is not None
            else "AccountingStorageType=accounting_storage/none\n"
        )
        return (
            f"ClusterName={self.name}\n"
            f"SlurmctldHost={_host_name()}({LOCALHOST})\n"
            f"SlurmctldPort={self.ctld_port}\n"
            f"SlurmdPort={self.slurmd_port}\n"
            "AuthType=auth/munge\n"
            f"AuthInfo=socket={self.munge_socket}\n"
            "CredType=cred/munge\n"
            "SlurmUser=root\n"
            "SlurmdUser=root\n"
            f"StateSaveLocation={tmp / 'state'}\n"
            f"SlurmdSpoolDir={tmp / 'spool'}\n"
            f"SlurmctldPidFile={tmp / 'slurmctld.pid'}\n"
            f"SlurmdPidFile={tmp / 'slurmd.pid'}\n"
            f"SlurmctldLogFile={tmp / 'log' / 'slurmctld.log'}\n"
            f"SlurmdLogFile={tmp / 'log' / 'slurmd.log'}\n"
            "ProctrackType=proctrack/linuxproc\n"
            f"TaskPlugin={'task/cgroup' if self.cgroups else 'task/none'}\n"
            "JobAcctGatherType=jobacct_gather/none\n"
            f"{accounting}"
            "JobCompType=jobcomp/none\n"
            "SchedulerType=sched/backfill\n"
            # Schedule a batch job the moment it is submitted (the default waits up to 3 s).
            "SchedulerParameters=batch_sched_delay=0\n"
            "SelectType=select/cons_tres\n"
            "SelectTypeParameters=CR_Core_Memory\n"
            "SlurmdParameters=config_overrides\n"
            "ReturnToService=2\n"
            f"MinJobAge={self.min_job_age}\n"
            "KillWait=2\n"
            "DefMemPerCPU=100\n"
            "MpiDefault=none\n"
            f"MailProg={shutil.which('true') or '/bin/true'}\n"
            # Jobs in "urgent" preempt jobs in "debug" and end them PREEMPTED.
            "PreemptType=preempt/partition_prio\n"
            "PreemptMode=CANCEL\n"
            f"NodeName={self.node} NodeAddr={LOCALHOST} CPUs={self.cpus} "
            f"RealMemory={self.cpus * 200} State=UNKNOWN\n"
            f"PartitionName=debug Nodes={self.node} Default=YES MaxTime=INFINITE State=UP "
            "PriorityTier=1\n"
            f"PartitionName=urgent Nodes={self.node} MaxTime=INFINITE State=UP PriorityTier=2\n"
        )

    def _cgroup_conf(self) -> str:
        swap = "ConstrainSwapSpace=yes\nAllowedSwapSpace=0\n" if _swap_accounted() else ""
        return (
            "CgroupPlugin=cgroup/v1\n"
            f"CgroupMountpoint={self._tmp() / 'cgroup'}\n"
            "CgroupAutomount=no\n"
            "ConstrainRAMSpace=yes\n"
            f"{swap}"
        )

    def _slurmd_argv(self) -> list[str]:
        slurmd = [str(self._programs["slurmd"]), "-D", "-N", self.node, "-f", str(self.conf)]
        if not self.cgroups:
            return slurmd
        # A private cgroup namespace: the memory hierarchy mounted below shows this process's
        # own cgroup as its root, so SLURM's job cgroups are created inside it. The shell stays
        # to remove them once slurmd has ended.
        memory = self._tmp() / "cgroup" / "memory"
        script = (
            f'mount -t cgroup -o memory mltidy-slurm "{memory}" || exit 97\n'
            f"{' '.join(slurmd)} &\n"
            "pid=$!\n"
            'trap "kill -TERM $pid" TERM INT\n'
            'wait "$pid"; wait "$pid"\n'
            f'find "{memory}" -mindepth 1 -depth -type d -exec rmdir {{}} + 2>/dev/null\n'
            "exit 0\n"
        )
        unshare = shutil.which("unshare") or "unshare"
        return [unshare, "--cgroup", "--mount", "--propagation", "private", "sh", "-c", script]

    def _write_slurmdbd_conf(self) -> None:
        server = self.accounting
        assert server is not None
        self._database = f"slurm_{secrets.token_hex(4)}"
        server.create_database(self._database)
        conf = self._tmp() / "etc" / "slurmdbd.conf"  # slurmdbd reads it next to SLURM_CONF
        conf.write_text(
            "AuthType=auth/munge\n"
            f"AuthInfo=socket={self.munge_socket}\n"
            f"DbdHost={_host_name()}\n"
            f"DbdAddr={LOCALHOST}\n"
            f"DbdPort={self.dbd_port}\n"
            "SlurmUser=root\n"
            f"PidFile={self._tmp() / 'slurmdbd.pid'}\n"
            f"LogFile={self._tmp() / 'log' / 'slurmdbd.log'}\n"
            "StorageType=accounting_storage/mysql\n"
            f"StorageHost={server.host}\n"
            f"StoragePort={server.port}\n"
            "StorageUser=mltidy\n"
            f"StoragePass={server.password}\n"
            f"StorageLoc={self._database}\n",
            encoding="utf-8",
        )
        conf.chmod(0o600)

    def _start_slurmdbd(self) -> None:
        self._spawn("slurmdbd", [str(self._programs["slurmdbd"]), "-D"])

        def answers() -> bool:
            return (
                self.run("sacctmgr", "--noheader", "list", "cluster", check=False).returncode == 0
            )

        self._wait(answers, "slurmdbd", "slurmdbd", timeout=self.startup_timeout)
        self.run("sacctmgr", "--immediate", "add", "cluster", self.name)

    def _wait_until_idle(self) -> None:
        def idle() -> bool:
            done = self.run(
                "sinfo", "--noheader", "--nodes", self.node, "--format=%T", check=False, timeout=10
            )
            return done.stdout.strip().rstrip("*") in ("idle", "mixed", "allocated")

        self._wait(idle, "slurmctld", "slurmd", timeout=self.startup_timeout)

    def _wait(self, ready: Callable[[], bool], *watched: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            for name in watched:
                daemon = self._daemons.get(name)
                if daemon is not None and not daemon.alive:
                    self._fail(f"{name} exited with status {daemon.process.returncode}")
            if time.monotonic() > deadline:
                self._fail(f"{'/'.join(watched)} not ready within {timeout:.0f}s")
            time.sleep(0.1)

    def _fail(self, what: str) -> None:
        logs = "\n".join(
            f"--- {name} ---\n{_tail(path, 15)}"
            for name in ("munged", "slurmdbd", "slurmctld", "slurmd")
            for path in (self._tmp() / "log" / f"{name}.log", self._tmp() / "log" / f"{name}.out")
            if path.exists()
        )
        if "Address already in use" in logs:
            raise _PortTaken(what)
        raise ServerStartError(f"SLURM did not start: {what}\n{logs}")

    def _cancel_everything(self) -> None:
        done = self.run(
            "squeue", "--noheader", f"--states={_ACTIVE_STATES}", "--format=%A", check=False
        )
        jobs = sorted(set(done.stdout.split()))
        if not jobs:
            return
        self.run("scancel", *jobs, check=False)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            done = self.run(
                "squeue", "--noheader", f"--states={_ACTIVE_STATES}", "--format=%A", check=False
            )
            if not done.stdout.strip():
                return
            time.sleep(0.2)

    def _kill_job_processes(self) -> None:
        """Kill slurmstepd processes of this cluster that outlived it, and their children.

        slurmstepd leaves slurmd's session (it is a daemon of its own); it keeps the node's log
        file, inside this cluster's directory, open.
        """
        tmp = str(self._tmp())
        for pid in _slurmstepd_pids():
            if not _has_open_file_below(pid, tmp):
                continue
            victims = [pid, *_descendants(pid)]
            for victim in victims:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(victim, signal.SIGKILL)


class _PortTaken(ServerStartError):
    """A daemon lost the race for its port: start again on new ones."""


def _slurmstepd_pids() -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if (entry / "cmdline").read_bytes().startswith(b"slurmstepd"):
                    pids.append(int(entry.name))
    return pids


def _has_open_file_below(pid: int, directory: str) -> bool:
    with contextlib.suppress(OSError):
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            with contextlib.suppress(OSError):
                target = str(fd.readlink())
                if target == directory or target.startswith(directory + "/"):
                    return True
    return False
