"""SLURM as a scheduler source: ``squeue`` for live and recent jobs, ``sacct`` for older ones.

What one :meth:`SlurmSource.query` runs, whatever the number of jobs (each at most once):

1. ``squeue --noheader --all --array --states=all --jobs=ID,ID,... --Format=...``: every job the
   controller still holds, pending, running or finished less than ``MinJobAge`` ago, with its
   state, reason, times, node(s), restart count and raw exit status. Always.
2. ``squeue --noheader --all --steps --jobs=ID,... --Format=StepID,StepState,StartTime``: the
   running steps of the running jobs, only when a record names a step (``srun``) of a job that
   runs: a job can outlive the step a record ran in.
3. ``sacct --noheader --parsable2 --jobs=ID,... [--allocations] --format=...``: only for jobs
   the controller no longer holds (or steps that ended), and only where accounting storage is
   configured; "accounting storage is disabled" is recognised and said in the answer.

Every call shares one time bound (:attr:`SlurmSource.timeout`): a controller that is down makes
the clients retry for a minute or more, and a scan must not wait for that.

The clients run with ``TZ=UTC0`` and ``SLURM_TIME_FORMAT=standard``: SLURM prints times in the
local time of the process running the client, in a format users may change; pinning both
makes every time an unambiguous UTC ISO 8601 string (local time is ambiguous for an hour each
autumn). ``SQUEUE_*``/``SACCT_*`` variables, which would change the output or filter it, are
dropped; ``SLURM_CONF`` (and everything else) is passed on.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone, tzinfo
from pathlib import Path

from mltidy import names
from mltidy.evidence.scheduler import JobPhase, JobRef, JobStatus, SchedulerAnswer, SchedulerSource

#: The default time bound of one query, all commands together.
DEFAULT_TIMEOUT = 5.0

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


# -- the source ----------------------------------------------------------------------------------
class SlurmSource(SchedulerSource):
    """Asks SLURM's clients (``squeue``, ``sacct``) about the jobs records ran in.

    Args:
        timeout: the time bound of one :meth:`query`, all commands together (seconds).
        environ: the environment the clients run in (default: this process's, read at query
            time), e.g. to point ``SLURM_CONF`` or ``PATH`` elsewhere.
    """

    name = "slurm"
    title = "SLURM"

    def __init__(
        self, *, timeout: float = DEFAULT_TIMEOUT, environ: Mapping[str, str] | None = None
    ) -> None:
        self.timeout = timeout
        self._environ = environ

    # -- provenance ------------------------------------------------------------------------------
    def job_of(self, tags: Mapping[str, str]) -> JobRef | None:
        job = tags.get(names.SLURM_JOB_ID, "").strip()
        array_job = tags.get(names.SLURM_ARRAY_JOB_ID, "").strip()
        task = tags.get(names.SLURM_ARRAY_TASK_ID, "").strip()
        if _NUMERIC_ID.match(job):
            job_id = job
        elif _NUMERIC_ID.match(array_job) and _NUMERIC_ID.match(task):
            job_id = f"{array_job}_{task}"
        else:
            return None
        step: str | None = tags.get(names.SLURM_STEP_ID, "").strip()
        if not (step and _STEP_ID.match(step)) or _reserved_step(step):
            step = None
        restarts = tags.get(names.SLURM_RESTART_COUNT, "").strip()
        return JobRef(
            scheduler=self.name,
            job_id=job_id,
            step=step,
            cluster=tags.get(names.SLURM_CLUSTER, "").strip() or None,
            restarts=int(restarts) if restarts.isdigit() else None,
        )

    # -- cheap checks ----------------------------------------------------------------------------
    def unavailable_reason(self) -> str | None:
        return self._setup_problem(self._child_env())

    def _child_env(self) -> dict[str, str]:
        base = os.environ if self._environ is None else self._environ
        env = {k: v for k, v in base.items() if not k.startswith(("SQUEUE_", "SACCT_"))}
        env.update({"TZ": "UTC0", names.SLURM_TIME_FORMAT_ENV: "standard", "LC_ALL": "C"})
        return env

    @staticmethod
    def _setup_problem(env: Mapping[str, str]) -> str | None:
        if shutil.which("squeue", path=env.get("PATH")) is None:
            return "the SLURM client squeue is not installed on this host (not on PATH)"
        conf = env.get(names.SLURM_CONF_ENV)
        if conf and not Path(conf).is_file():
            return f"{names.SLURM_CONF_ENV}={conf} names no file"
        return None

    # -- the query -------------------------------------------------------------------------------
    def query(self, jobs: Collection[JobRef]) -> SchedulerAnswer:
        # An id squeue cannot parse would fail the whole call: such a job is simply unknown.
        refs = {
            ref
            for ref in jobs
            if ref.scheduler == self.name
            and (_NUMERIC_ID.match(ref.job_id) or _ARRAY_ID.match(ref.job_id))
        }
        if not refs:
            return SchedulerAnswer(self.title)
        run = _Runner(self._child_env(), self.timeout)
        problem = self._setup_problem(run.env)
        if problem is not None:
            return SchedulerAnswer(self.title, unavailable=problem)

        ids = _sorted_ids(ref.job_id for ref in refs)
        done = run(
            "squeue",
            "--noheader",
            "--all",
            "--array",
            "--states=all",
            f"--jobs={','.join(ids)}",
            f"--Format={_format(SQUEUE_JOB_FIELDS)}",
        )
        if isinstance(done, str):
            return SchedulerAnswer(self.title, unavailable=done, calls=run.calls)
        if done.returncode != 0 and _INVALID_JOB_ID not in done.stderr:
            return SchedulerAnswer(
                self.title,
                unavailable=f"squeue failed: {_error_text(done.stderr, done.returncode)}",
                calls=run.calls,
            )
        jobs_index = _Index(parse_squeue_jobs(done.stdout) if done.returncode == 0 else [])
        job_rows = {ref: row for ref in refs if (row := jobs_index.find(ref)) is not None}
        statuses: dict[JobRef, JobStatus] = {}
        notes: list[str] = []
        for ref, row in job_rows.items():
            if ref.step is None or row.phase is not JobPhase.RUNNING:
                statuses[ref] = _status(ref, row)

        step_refs = [ref for ref in job_rows if ref not in statuses]
        gone_steps = self._steps(run, step_refs, job_rows, statuses, notes)

        missing = [ref for ref in refs if ref not in job_rows] + gone_steps
        if missing:
            self._accounting(run, missing, job_rows, statuses, notes)
        for ref in gone_steps:
            if ref not in statuses:
                statuses[ref] = _gone_step(ref, job_rows[ref])
        return SchedulerAnswer(
            self.title,
            statuses=statuses,
            missing_hint="; ".join(notes) or None,
            calls=run.calls,
        )

    def _steps(
        self,
        run: _Runner,
        step_refs: list[JobRef],
        job_rows: Mapping[JobRef, SlurmRow],
        statuses: dict[JobRef, JobStatus],
        notes: list[str],
    ) -> list[JobRef]:
        """Statuses of the steps of running jobs; returns the refs whose step is gone."""
        if not step_refs:
            return []
        done = run(
            "squeue",
            "--noheader",
            "--all",
            "--steps",
            f"--jobs={','.join(_sorted_ids(job_rows[ref].job_id for ref in step_refs))}",
            f"--Format={_format(SQUEUE_STEP_FIELDS)}",
        )
        if isinstance(done, str) or done.returncode != 0:
            error = done if isinstance(done, str) else _error_text(done.stderr, done.returncode)
            notes.append(f"the running steps could not be listed: {error}")
            return []
        running = {(row.job_id, row.step): row for row in parse_squeue_steps(done.stdout)}
        gone = []
        for ref in step_refs:
            job_row = job_rows[ref]
            # squeue names the steps of an array task by the task (123_4.0), others by id.
            step_row = running.get((job_row.label, ref.step)) or running.get(
                (job_row.job_id, ref.step)
            )
            if step_row is None:
                gone.append(ref)
            else:
                statuses[ref] = _status(ref, _step_of(job_row, step_row))
        return gone

    def _accounting(
        self,
        run: _Runner,
        missing: list[JobRef],
        job_rows: Mapping[JobRef, SlurmRow],
        statuses: dict[JobRef, JobStatus],
        notes: list[str],
    ) -> None:
        """Ask sacct about jobs the controller no longer holds and steps that ended."""
        kept = "the controller keeps finished jobs only for MinJobAge"
        if shutil.which("sacct", path=run.env.get("PATH")) is None:
            notes.append(f"{kept}, and sacct is not installed here")
            return
        ids = _sorted_ids(job_rows[r].job_id if r in job_rows else r.job_id for r in missing)
        steps = any(ref.step for ref in missing)
        done = run(
            "sacct",
            "--noheader",
            "--parsable2",
            *(() if steps else ("--allocations",)),
            f"--jobs={','.join(ids)}",
            f"--format={','.join(SACCT_FIELDS)}",
        )
        if isinstance(done, str):
            notes.append(f"{kept}; {done}")
            return
        if _ACCOUNTING_DISABLED in (done.stderr + done.stdout).lower():
            notes.append(f"{kept}, and accounting storage (sacct) is disabled")
            return
        if done.returncode != 0:
            notes.append(f"{kept}; sacct failed: {_error_text(done.stderr, done.returncode)}")
            return
        index = _Index(parse_sacct(done.stdout))
        for ref in missing:
            known = job_rows.get(ref)
            if known is not None:  # a step that is gone from a running job: how did it end?
                step_row = index.step(known.job_id, ref.step or "")
                if step_row is not None and step_row.phase is JobPhase.ENDED:
                    statuses[ref] = _status(ref, _step_of(known, step_row))
                continue
            row = index.find(ref)
            if row is None:
                continue
            if row.phase in (JobPhase.PENDING, JobPhase.RUNNING):
                statuses[ref] = _runaway(ref, row)
                continue
            step_row = index.step(row.job_id, ref.step) if ref.step else None
            statuses[ref] = _status(ref, row if step_row is None else _step_of(row, step_row))
        if any(ref not in statuses for ref in missing if ref not in job_rows):
            notes.append("neither squeue nor sacct knows it: another cluster's job?")


# -- building statuses ----------------------------------------------------------------------------
def _job_label(ref: JobRef, row: SlurmRow) -> str:
    label = f"SLURM job {row.label}"
    if row.label != row.job_id and ref.job_id == row.job_id:
        label += f" (job id {row.job_id})"
    return f"step {ref.step} of {label}" if ref.step else label


def _status(ref: JobRef, row: SlurmRow) -> JobStatus:
    return JobStatus(
        job=ref,
        label=_job_label(ref, row),
        state=row.state,
        phase=row.phase,
        reason=row.reason,
        exit=row.exit,
        submitted_at=row.submitted_at,
        started_at=row.started_at,
        ended_at=row.ended_at,
        node=row.node,
        restarts=row.restarts,
        answered_by=row.answered_by,
    )


def _step_of(job: SlurmRow, step: SlurmRow) -> SlurmRow:
    """A step's row completed with its job's facts (node, incarnation) where it lacks them."""
    return replace(
        step,
        label=job.label,
        node=step.node or job.node,
        submitted_at=job.submitted_at,
        restarts=job.restarts if step.restarts is None else step.restarts,
        cluster=job.cluster,
    )


def _gone_step(ref: JobRef, job: SlurmRow) -> JobStatus:
    """A step SLURM no longer lists while its job runs, with no accounting to say how it ended."""
    status = _status(ref, job)
    on_node = f" on node {job.node}" if job.node else ""
    return replace(
        status,
        phase=JobPhase.ENDED,
        started_at=None,
        ended_at=None,
        text=(
            f"{status.label} is no longer among the job's running steps (the job is "
            f"{job.state}{on_node})"
        ),
    )


def _runaway(ref: JobRef, row: SlurmRow) -> JobStatus:
    """sacct says running or pending, but the controller does not know the job: the accounting
    record outlived the job (SLURM calls these runaway jobs)."""
    status = _status(ref, row)
    return replace(
        status,
        phase=JobPhase.UNKNOWN,
        text=(
            f"sacct lists {status.label} as {row.state}, but the controller does not know it "
            "(a runaway accounting record? see `sacctmgr show runawayjobs`)"
        ),
    )


class _Index:
    """Rows found by numeric id (unique per array task) or by ``123_4`` label."""

    def __init__(self, rows: Iterable[SlurmRow]) -> None:
        self._by_id: dict[str, list[SlurmRow]] = {}
        self._by_label: dict[str, SlurmRow] = {}
        self._steps: dict[tuple[str, str], SlurmRow] = {}
        for row in rows:
            if row.step is not None:
                self._steps[(row.job_id, row.step)] = row
                continue
            self._by_id.setdefault(row.job_id, []).append(row)
            self._by_label.setdefault(row.label, row)

    def find(self, ref: JobRef) -> SlurmRow | None:
        if _ARRAY_ID.match(ref.job_id):
            row = self._by_label.get(ref.job_id)
        else:
            row = self._one(self._by_id.get(ref.job_id, []))
        if row is not None and ref.cluster and row.cluster and row.cluster != ref.cluster:
            return None
        return row

    def step(self, job_id: str, step: str) -> SlurmRow | None:
        return self._steps.get((job_id, step))

    @staticmethod
    def _one(rows: list[SlurmRow]) -> SlurmRow | None:
        # Pending tasks of an array share the array's id until they start (squeue --array
        # prints one line each): the id names a job only if one line is not a pending task.
        if len(rows) == 1:
            return rows[0]
        started = [row for row in rows if row.phase is not JobPhase.PENDING]
        return started[0] if len(started) == 1 else None


# -- running the clients --------------------------------------------------------------------------
class _Runner:
    """Runs SLURM clients under one shared deadline; counts the calls."""

    def __init__(self, env: dict[str, str], timeout: float) -> None:
        self.env = env
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.calls = 0

    def __call__(self, command: str, *args: str) -> subprocess.CompletedProcess[str] | str:
        """The finished process, or why it could not answer (one phrase)."""
        exe = shutil.which(command, path=self.env.get("PATH"))
        if exe is None:
            return f"{command} is not installed on this host (not on PATH)"
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return f"{command} was not run: the {self.timeout:g}s time bound was used up"
        self.calls += 1
        try:
            return subprocess.run(
                [exe, *args],
                env=self.env,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                errors="replace",
                timeout=remaining,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            said = _error_text(_text(exc.stderr), None)
            conf = self.env.get(names.SLURM_CONF_ENV)
            where = f" ({names.SLURM_CONF_ENV}={conf})" if conf else ""
            return (
                f"{command} did not answer within {self.timeout:g}s: is slurmctld running and "
                f"reachable{where}?" + (f" It said: {said}" if said else "")
            )
        except OSError as exc:
            return f"{command} could not be run: {exc.strerror or exc}"


def _text(value: bytes | str | None) -> str:
    if value is None:
        return ""
    return value.decode(errors="replace") if isinstance(value, bytes) else value


def _error_text(stderr: str, returncode: int | None) -> str:
    """The telling lines of a client's stderr, short: the last one, and a munge one if any."""
    lines = []
    for line in stderr.splitlines():
        line = line.strip()
        for prefix in _ERROR_PREFIXES:
            line = line.removeprefix(prefix)
        if line and line not in lines:
            lines.append(line)
    if not lines:
        return f"exit status {returncode}" if returncode is not None else ""
    chosen = [lines[-1]]
    munge_lines = [line for line in lines if "munge" in line.lower()]
    munge = next((line for line in munge_lines if "failed" in line.lower()), None) or next(
        iter(munge_lines), None
    )
    if munge and munge not in chosen:
        chosen.append(munge)
    text = "; ".join(chosen)
    return text if len(text) <= _MAX_ERROR else text[: _MAX_ERROR - 3] + "..."


def _format(fields: Iterable[str]) -> str:
    return ",".join(f"{field}:{SEP}" for field in fields)


def _sorted_ids(ids: Iterable[str]) -> list[str]:
    def key(job_id: str) -> tuple[int, ...]:
        return tuple(int(part) for part in job_id.split("_"))

    return sorted(set(ids), key=key)
