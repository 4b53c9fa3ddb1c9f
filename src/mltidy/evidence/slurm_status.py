"""From parsed SLURM rows to :class:`~mltidy.evidence.scheduler.JobStatus` values (pure)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from mltidy.evidence.scheduler import JobPhase, JobRef, JobStatus
from mltidy.evidence.slurm_parse import _ARRAY_ID, SlurmRow


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
