"""The facts a job records about itself at start: who, where, which process.

Cheap by design (it runs inside ``mlflow.start_run``): no network, no subprocess; the
process-constant part is computed once per process and cached.
"""

from __future__ import annotations

import os
import sys
from functools import cache
from pathlib import Path

from mltidy import __version__, names

BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
PID_NS_PATH = Path("/proc/self/ns/pid")
CGROUP_PATH = Path("/proc/self/cgroup")
#: The inode of the kernel's initial pid namespace (``PROC_PID_INIT_INO``, fixed in the kernel):
#: a process in it sees every process of the machine.
INITIAL_PID_NS = 0xEFFFFFFC
CMD_LIMIT = 200
CGROUP_LIMIT = 200
#: SLURM's environment, as provenance tags (the job, its step, its place in an array job).
SLURM_VARIABLES = {
    "SLURM_JOB_ID": names.SLURM_JOB_ID,
    "SLURM_STEP_ID": names.SLURM_STEP_ID,
    "SLURM_ARRAY_JOB_ID": names.SLURM_ARRAY_JOB_ID,
    "SLURM_ARRAY_TASK_ID": names.SLURM_ARRAY_TASK_ID,
    "SLURM_CLUSTER_NAME": names.SLURM_CLUSTER,
}


def host_name() -> str:
    """This machine's name as ``socket.gethostname()`` gives it, the kernel's node name, read
    without importing ``socket`` (which costs every scan milliseconds)."""
    if hasattr(os, "uname"):
        return os.uname().nodename
    import socket  # pragma: no cover - a system without uname

    return socket.gethostname()  # pragma: no cover


def read_boot_id() -> str | None:
    """This boot's id (Linux), or ``None`` where the kernel does not provide one."""
    try:
        return BOOT_ID_PATH.read_text().strip() or None
    except OSError:
        return None


def read_pid_namespace() -> int | None:
    """The inode of this process's pid namespace (Linux), or ``None``."""
    try:
        return PID_NS_PATH.stat().st_ino
    except OSError:
        return None


def read_cgroup() -> str | None:
    """This process's cgroup path (v2, or the v1 memory controller's), or ``None``: with the pid
    namespace it tells which container a pid belongs to."""
    try:
        lines = CGROUP_PATH.read_text().splitlines()
    except OSError:
        return None
    chosen = None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if controllers == "" or "memory" in controllers.split(","):
            chosen = path
    return chosen[:CGROUP_LIMIT] if chosen else None


def process_start_time(pid: int) -> float | None:
    """When a process started (epoch seconds, as psutil reports it), or ``None``."""
    import psutil

    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.Error, OSError):
        return None


def command_line() -> str:
    """The job's command line, shortened: enough for a person to recognise it."""
    argv = [Path(sys.executable).name, *sys.argv] if sys.argv and sys.argv[0] else [sys.executable]
    if argv[1:2] and argv[1] in ("-c", ""):
        argv = argv[:2]
    text = " ".join(argv)
    return text if len(text) <= CMD_LIMIT else text[: CMD_LIMIT - 3] + "..."


def _user() -> str | None:
    try:
        import getpass

        return getpass.getuser()
    except (KeyError, OSError):
        return None


def process_facts() -> dict[str, str]:
    """This process's provenance, as ``mltidy.*`` string tags.

    Computed once per process id, so a forked child (multiprocessing) records itself.
    """
    return dict(_facts_of(os.getpid()))


@cache
def _facts_of(pid: int) -> dict[str, str]:
    facts = {names.HOST: host_name(), names.PID: str(pid), names.VERSION: __version__}
    optional = {
        names.BOOT_ID: read_boot_id(),
        names.PID_NS: _text(read_pid_namespace()),
        names.CGROUP: read_cgroup(),
        names.PID_START: _text(process_start_time(pid), "{:.2f}"),
        names.USER: _user(),
        names.CMD: command_line(),
    }
    for variable, key in SLURM_VARIABLES.items():
        optional[key] = os.environ.get(variable)
    if os.environ.get("SLURM_JOB_ID"):
        # SLURM sets SLURM_RESTART_COUNT only once a job was requeued: before that it is 0, and
        # a missing count would read as "unknown incarnation".
        optional[names.SLURM_RESTART_COUNT] = os.environ.get("SLURM_RESTART_COUNT") or "0"
    optional[names.K8S_POD] = os.environ.get("POD_NAME") or (
        os.environ.get("HOSTNAME") if os.environ.get("KUBERNETES_SERVICE_HOST") else None
    )
    supervision = os.environ.get(names.SUPERVISION_ENV)
    optional[names.SUPERVISION] = supervision[:64] if supervision else None
    facts.update({key: value for key, value in optional.items() if value})
    return facts


def _text(value: float | None, form: str = "{}") -> str | None:
    return None if value is None else form.format(value)
