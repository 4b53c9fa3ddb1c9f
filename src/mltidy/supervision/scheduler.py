"""Why a supervised job inside a SLURM job was stopped: the scheduler's SIGTERM, told apart.

When ``scancel``, a time limit or a preemption ends a job, SLURM sends SIGTERM to its processes;
``mltidy run`` passes it on and closes what the job left. While the job tears down, the
controller shows it only as ``COMPLETING`` (its final state comes after every process exited,
the supervisor included), so the supervisor tells the cases apart by what the controller does
know: a job that reached its time limit was stopped for that; any other SIGTERM was a
cancellation (``scancel``, a preemption, or its node going down).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Mapping
from datetime import datetime, timedelta, timezone

from mltidy import names

#: The answer must come quickly: SLURM kills the job's processes KillWait (30 s) after SIGTERM.
QUERY_TIMEOUT_S = 3.0
#: A SIGTERM this close to the job's time limit is the limit's.
LIMIT_SLACK = timedelta(seconds=90)
_LIMIT = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)$")


def stop_reason(env: Mapping[str, str], now: datetime) -> str | None:
    """Why the scheduler stopped the job this process runs in, or ``None`` outside SLURM or
    when the controller cannot say (within :data:`QUERY_TIMEOUT_S`)."""
    job = env.get("SLURM_JOB_ID", "").strip()
    if not job.isdigit():
        return None
    squeue = shutil.which("squeue", path=env.get("PATH"))
    limit: timedelta | None = None
    started: datetime | None = None
    if squeue is not None:
        started, limit = _start_and_limit(squeue, job, env)
    if started is not None and limit is not None and now >= started + limit - LIMIT_SLACK:
        return f"stopped by the scheduler at its time limit (SLURM job {job}, {_text(limit)})"
    return (
        f"cancelled by the scheduler (SLURM job {job} was sent SIGTERM: scancel, a preemption or "
        "its node going down)"
    )


def _start_and_limit(
    squeue: str, job: str, env: Mapping[str, str]
) -> tuple[datetime | None, timedelta | None]:
    child_env = {k: v for k, v in env.items() if not k.startswith("SQUEUE_")}
    child_env.update({"TZ": "UTC0", names.SLURM_TIME_FORMAT_ENV: "standard", "LC_ALL": "C"})
    try:
        done = subprocess.run(
            [squeue, "--noheader", f"--jobs={job}", "--Format=StartTime:|,TimeLimit:|"],
            env=child_env,
            capture_output=True,
            text=True,
            timeout=QUERY_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None, None
    fields = done.stdout.strip().split("|")
    if done.returncode != 0 or len(fields) < 2:
        return None, None
    try:
        started = datetime.fromisoformat(fields[0]).replace(tzinfo=timezone.utc)
    except ValueError:
        started = None
    return started, parse_limit(fields[1])


def parse_limit(text: str) -> timedelta | None:
    """SLURM's time limit (``UNLIMITED``, ``MM:SS``, ``HH:MM:SS``, ``D-HH:MM:SS``)."""
    match = _LIMIT.match(text.strip())
    if match is None:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    return timedelta(days=days, hours=hours, minutes=minutes, seconds=seconds)


def _text(limit: timedelta) -> str:
    minutes = int(limit.total_seconds() // 60)
    return f"time limit {minutes} min"


__all__ = ["parse_limit", "stop_reason"]
