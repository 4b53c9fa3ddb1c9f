"""What SLURM's clients print, read (pure functions over text): ``squeue`` jobs and steps,
``sacct`` rows, SLURM's times, states, exit statuses and reasons. The statuses built from them
are :mod:`mltidy.evidence.slurm_status`; the source that runs the clients is
:mod:`mltidy.evidence.slurm`."""

from __future__ import annotations

import re
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone, tzinfo

from mltidy.evidence.scheduler import JobPhase

#: squeue's ``--Format`` fields for jobs (``JobID`` is unique per array task; ``JobArrayID`` is
#: the ``123_4`` name people use), in the order the parser reads them.
SQUEUE_JOB_FIELDS = (
    "JobID",
    "JobArrayID",
    "State",
    "Reason",
    "SubmitTime",
    "StartTime",
    "EndTime",
    "NodeList",
    "RestartCnt",
    "exit_code",
    "Cluster",
)
SQUEUE_STEP_FIELDS = ("StepID", "StepState", "StartTime")
SACCT_FIELDS = (
    "JobIDRaw",
    "JobID",
    "State",
    "Reason",
    "Submit",
    "Start",
    "End",
    "NodeList",
    "ExitCode",
    "Cluster",
)
#: Field separator of squeue's ``--Format`` (``Field:|`` prints the field unpadded, then ``|``)
#: and of ``sacct --parsable2``. No field squeue or sacct prints here contains it.
SEP = "|"

#: How SLURM's job states read for the processes of a job (squeue's and sacct's words).
PHASES: Mapping[str, JobPhase] = {
    "PENDING": JobPhase.PENDING,
    "CONFIGURING": JobPhase.PENDING,
    "REQUEUED": JobPhase.PENDING,
    "REQUEUE_FED": JobPhase.PENDING,
    "REQUEUE_HOLD": JobPhase.PENDING,
    "RESV_DEL_HOLD": JobPhase.PENDING,
    "SPECIAL_EXIT": JobPhase.PENDING,
    "RUNNING": JobPhase.RUNNING,
    "RESIZING": JobPhase.RUNNING,
    "SIGNALING": JobPhase.RUNNING,
    "STOPPED": JobPhase.RUNNING,
    "SUSPENDED": JobPhase.RUNNING,
    "COMPLETING": JobPhase.ENDING,
    "STAGE_OUT": JobPhase.ENDING,
    "BOOT_FAIL": JobPhase.ENDED,
    "CANCELLED": JobPhase.ENDED,
    "COMPLETED": JobPhase.ENDED,
    "DEADLINE": JobPhase.ENDED,
    "FAILED": JobPhase.ENDED,
    "NODE_FAIL": JobPhase.ENDED,
    "OUT_OF_MEMORY": JobPhase.ENDED,
    "PREEMPTED": JobPhase.ENDED,
    "TIMEOUT": JobPhase.ENDED,
}

_NUMERIC_ID = re.compile(r"^[0-9]+$")
_ARRAY_ID = re.compile(r"^[0-9]+_[0-9]+$")
#: ``srun`` steps are numbered. A record made outside one (the batch script, an ``extern`` or
#: ``interactive`` step, whose ids SLURM reserves near 2**32) is judged by its job.
_STEP_ID = re.compile(r"^[0-9]+$")
_FIRST_RESERVED_STEP = 0xFFFFFFF0
#: Signals above this are SLURM's own markers in an exit status (e.g. 125 for out of memory).
_MAX_REAL_SIGNAL = 64
#: A time field that holds no time.
_NO_TIME = frozenset({"", "NONE", "None", "Unknown", "N/A", "n/a", "INVALID"})
#: What squeue says, with exit 1, when the only job it was asked about is unknown.
_INVALID_JOB_ID = "Invalid job id specified"
_ACCOUNTING_DISABLED = "accounting storage is disabled"
_ERROR_PREFIXES = ("squeue: error: ", "sacct: error: ", "error: ")
_MAX_ERROR = 300


@dataclass(frozen=True)
class SlurmRow:
    """One line of squeue or sacct about a job or one of its steps.

    Attributes:
        job_id: the numeric id, unique per array task (``127``).
        label: the name people use (``123_4`` for an array task, else the id).
        step: the step id (``0``, ``batch``), or ``None`` for the job itself.
        state: SLURM's state word; ``reason``: its reason (``None`` when it says ``None``).
        answered_by: ``squeue`` or ``sacct``.
    """

    job_id: str
    label: str
    step: str | None
    state: str
    reason: str | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    node: str | None = None
    restarts: int | None = None
    exit: str | None = None
    cluster: str | None = None
    answered_by: str = "squeue"

    @property
    def phase(self) -> JobPhase:
        return phase_of(self.state)


# -- parsing (pure) ------------------------------------------------------------------------------
def phase_of(state: str) -> JobPhase:
    """The phase of a SLURM state word (``UNKNOWN`` for words this source does not know)."""
    return PHASES.get(state.strip().upper(), JobPhase.UNKNOWN)


def parse_time(text: str, tz: tzinfo = timezone.utc) -> datetime | None:
    """A SLURM time (``2026-11-30T14:02:05``, printed in *tz*) as aware UTC, or ``None``.

    The clients this source runs print UTC (``TZ=UTC0``); *tz* is for output captured
    elsewhere, printed in another zone.
    """
    text = text.strip()
    if text in _NO_TIME:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=tz)
    return value.astimezone(timezone.utc)


def wait_status_text(raw: str) -> str | None:
    """squeue's raw exit status (a wait status: ``256``, ``9``) in words, or ``None`` for 0."""
    try:
        status = int(raw)
    except ValueError:
        return None
    return _exit_words(status >> 8 & 0xFF, status & 0x7F)


def exit_code_text(text: str) -> str | None:
    """sacct's ``ExitCode`` (``code:signal``, e.g. ``1:0``, ``0:9``) in words, or ``None``."""
    code, _, sig = text.strip().partition(":")
    try:
        return _exit_words(int(code or 0), int(sig or 0))
    except ValueError:
        return None


def _exit_words(code: int, sig: int) -> str | None:
    if sig:
        if sig > _MAX_REAL_SIGNAL:
            return None  # SLURM's own marker (OOM, node failure): the state already says it
        try:
            return f"signal {sig} {signal.Signals(sig).name}"
        except ValueError:
            return f"signal {sig}"
    return f"exit code {code}" if code else None


def _reason(text: str, state: str, exit_words: str | None) -> str | None:
    """SLURM's reason, unless it only repeats what the state or the exit status says."""
    reason = text.strip()
    if reason in ("", "None", "(null)"):
        return None
    squashed = reason.replace("_", "").lower()
    if squashed == state.replace("_", "").lower():
        return None
    if reason == "NonZeroExitCode" and exit_words:
        return None
    return reason


def _reserved_step(step: str | None) -> bool:
    return bool(step and step.isdigit() and int(step) >= _FIRST_RESERVED_STEP)


def _int(text: str) -> int | None:
    text = text.strip()
    return int(text) if text.isdigit() else None


def _split_rows(stdout: str, fields: int, *, trailing_sep: bool) -> Iterable[list[str]]:
    for line in stdout.splitlines():
        if not line.strip() or line.startswith("CLUSTER: "):  # multi-cluster headers (-M)
            continue
        values = line.split(SEP)
        if trailing_sep:
            if values[-1].strip():
                continue
            values = values[:-1]
        if len(values) == fields:
            yield values


def parse_squeue_jobs(stdout: str, tz: tzinfo = timezone.utc) -> list[SlurmRow]:
    """Rows of ``squeue --Format`` with :data:`SQUEUE_JOB_FIELDS`, each ended by ``|``."""
    rows = []
    for values in _split_rows(stdout, len(SQUEUE_JOB_FIELDS), trailing_sep=True):
        job_id, label, state, reason, submit, start, end, nodes, restarts, raw, cluster = (
            v.strip() for v in values
        )
        exit_words = wait_status_text(raw)
        rows.append(
            _settle(
                SlurmRow(
                    job_id=job_id,
                    label=label or job_id,
                    step=None,
                    state=state,
                    reason=_reason(reason, state, exit_words),
                    submitted_at=parse_time(submit, tz),
                    started_at=parse_time(start, tz),
                    ended_at=parse_time(end, tz),
                    node=nodes or None,
                    restarts=_int(restarts),
                    exit=exit_words,
                    cluster=cluster or None,
                    answered_by="squeue",
                )
            )
        )
    return rows


def parse_squeue_steps(stdout: str, tz: tzinfo = timezone.utc) -> list[SlurmRow]:
    """Rows of ``squeue --steps --Format`` with :data:`SQUEUE_STEP_FIELDS`, each ended by ``|``.

    The job part of a step id is the array task's name (``123_4``) for array tasks, else the
    job id; both are kept in :attr:`SlurmRow.job_id` and :attr:`SlurmRow.label` as printed.
    """
    rows = []
    for values in _split_rows(stdout, len(SQUEUE_STEP_FIELDS), trailing_sep=True):
        step_id, state, start = (v.strip() for v in values)
        job, _, step = step_id.partition(".")
        if not step:
            continue
        rows.append(
            SlurmRow(
                job_id=job,
                label=job,
                step=step,
                state=state,
                started_at=parse_time(start, tz),
                answered_by="squeue",
            )
        )
    return rows


def parse_sacct(stdout: str, tz: tzinfo = timezone.utc) -> list[SlurmRow]:
    """Rows of ``sacct --parsable2 --format`` with :data:`SACCT_FIELDS`."""
    rows = []
    for values in _split_rows(stdout, len(SACCT_FIELDS), trailing_sep=False):
        raw_id, shown_id, state_text, reason, submit, start, end, nodes, code, cluster = (
            v.strip() for v in values
        )
        job_id, _, step = raw_id.partition(".")
        label = shown_id.partition(".")[0] or job_id
        state, _, by = state_text.partition(" by ")
        exit_words = exit_code_text(code)
        said = _reason(reason, state, exit_words)
        if by:
            said = ", ".join(part for part in (f"by uid {by.strip()}", said) if part)
        rows.append(
            _settle(
                SlurmRow(
                    job_id=job_id,
                    label=label,
                    step=step or None,
                    state=state.strip(),
                    reason=said,
                    submitted_at=parse_time(submit, tz),
                    started_at=parse_time(start, tz),
                    ended_at=parse_time(end, tz),
                    node=nodes if nodes and nodes != "None assigned" else None,
                    exit=exit_words,
                    cluster=cluster or None,
                    answered_by="sacct",
                )
            )
        )
    return rows


def _settle(row: SlurmRow) -> SlurmRow:
    """Drop the times SLURM prints as forecasts: a pending job's expected start, a running
    job's expected end (start + time limit)."""
    phase = row.phase
    if phase is JobPhase.PENDING:
        return replace(row, started_at=None, ended_at=None)
    if phase is JobPhase.RUNNING:
        return replace(row, ended_at=None)
    return row
