"""The facts a job records about itself at start: who, where, which process.

Cheap by design (it runs inside ``mlflow.start_run``): no network, no subprocess; the
process-constant part is computed once per process and cached.
"""

from __future__ import annotations

import getpass
import os
import socket
import sys
from functools import cache
from pathlib import Path

from mltidy import __version__

PREFIX = "mltidy."
BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
CMD_LIMIT = 200

HOST = PREFIX + "host"
BOOT_ID = PREFIX + "boot_id"
PID = PREFIX + "pid"
PID_START = PREFIX + "pid_start"
USER = PREFIX + "user"
CMD = PREFIX + "cmd"
SLURM_JOB_ID = PREFIX + "slurm_job_id"
K8S_POD = PREFIX + "k8s_pod"
VERSION = PREFIX + "version"
HEARTBEAT_AT = PREFIX + "heartbeat_at"
#: The ``mltidy run`` supervision the job runs under (its ``MLTIDY_SUPERVISION`` id).
SUPERVISION = PREFIX + "supervision"
SUPERVISION_ENV = "MLTIDY_SUPERVISION"


def read_boot_id() -> str | None:
    """This boot's id (Linux), or ``None`` where the kernel does not provide one."""
    try:
        return BOOT_ID_PATH.read_text().strip() or None
    except OSError:
        return None


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
    facts = {HOST: socket.gethostname(), PID: str(pid), VERSION: __version__}
    boot_id = read_boot_id()
    if boot_id:
        facts[BOOT_ID] = boot_id
    start = process_start_time(pid)
    if start is not None:
        facts[PID_START] = f"{start:.2f}"
    user = _user()
    if user:
        facts[USER] = user
    facts[CMD] = command_line()
    if os.environ.get("SLURM_JOB_ID"):
        facts[SLURM_JOB_ID] = os.environ["SLURM_JOB_ID"]
    pod = os.environ.get("POD_NAME") or (
        os.environ.get("HOSTNAME") if os.environ.get("KUBERNETES_SERVICE_HOST") else None
    )
    if pod:
        facts[K8S_POD] = pod
    if os.environ.get(SUPERVISION_ENV):
        facts[SUPERVISION] = os.environ[SUPERVISION_ENV][:64]
    return facts
