"""Scheduler evidence: what the batch system that ran a job says about it.

A record (an MLflow run, an Optuna trial) whose provenance names a scheduler job can be judged by
that scheduler from any host: a job that ended makes the record certainly dead, a job that runs
is proof of life even when its node is not this host. This module is the contract every
scheduler source keeps, and the value types it answers with. It does no I/O.

The contract of a :class:`SchedulerSource`:

* **One batched call per scan.** :meth:`SchedulerSource.query` is given every job of a scan at
  once and asks the scheduler a bounded number of times (SLURM: one ``squeue``, plus one more
  for steps and one ``sacct`` only when needed), never once per record.
* **Bounded in time, never raising for the scheduler's failures.** A missing client, a refused
  credential, a controller that does not answer within the source's time bound: all come back
  as :attr:`SchedulerAnswer.unavailable` (one sentence), so the judge falls back to the other
  evidence and says why. Only programming errors raise.
* **Unknown jobs are simply absent** from :attr:`SchedulerAnswer.statuses`; the answer's
  :attr:`~SchedulerAnswer.missing_hint` says what that can mean for this scheduler.
* **Pure value types.** :class:`JobRef`, :class:`JobStatus`, :class:`SchedulerAnswer` and
  :class:`JobEvidence` are frozen; every datetime in them is aware UTC. Deciding what a status
  means for one record (:meth:`JobStatus.evidence_for`) is a pure function.
* **Cheap to construct and import.** No subprocess, network or file access happens before
  :meth:`~SchedulerSource.query`; ``mltidy --help`` never pays for a scheduler.
* :meth:`SchedulerSource.job_of` reads only the tags it is given (pure), so the per-scan
  :class:`SchedulerEvidence` can map a record back to its answer without asking again.
* A source is used from one thread at a time.

Size: the evidence-source interface, its batching and the verdict rules for scheduler states are
one contract that new sources implement; the SLURM source itself lives in ``slurm*.py``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import ClassVar

#: How far apart a record's clock (the compute node's) and the scheduler's clock may be before
#: a start time is read as "before the job began". Cluster nodes run NTP; requeued jobs are held
#: for a while (SLURM: about two minutes) before they start again, so a record of an earlier
#: incarnation starts far before this margin.
DEFAULT_CLOCK_TOLERANCE = timedelta(seconds=10)


class JobPhase(str, enum.Enum):
    """What a scheduler state means for the processes of a job.

    The state itself (the scheduler's own word) is kept in :attr:`JobStatus.state`; the phase is
    what mltidy reads from it.
    """

    #: Waiting to start or to start again (queued, held, requeued): none of its processes run.
    PENDING = "pending"
    #: Its processes exist (running, suspended, being signalled).
    RUNNING = "running"
    #: It has ended and the scheduler is still cleaning up; the final state is not known yet.
    ENDING = "ending"
    #: Over for good, with the scheduler's final word (completed, failed, cancelled, ...).
    ENDED = "ended"
    #: A state this source does not interpret.
    UNKNOWN = "unknown"


class Liveness(str, enum.Enum):
    """What scheduler evidence says about one record's process."""

    #: Certain: the job, or the incarnation of it the record started in, is over (-> dead).
    ENDED = "ended"
    #: The job's current incarnation runs, and the record belongs to it (-> alive).
    RUNNING = "running"
    #: No conclusion: the judge uses the other evidence; the reason says why.
    UNDECIDED = "undecided"


class Incarnation(str, enum.Enum):
    """Which run of a (possibly requeued) job a record started in."""

    CURRENT = "current"
    EARLIER = "earlier"
    #: The job cannot be the one the record ran in (it was submitted after the record started,
    #: or it has fewer restarts than the record saw): the job id was reused.
    OTHER_JOB = "other_job"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class JobRef:
    """A scheduler job a record names in its provenance.

    Attributes:
        scheduler: the :attr:`SchedulerSource.name` that understands this reference.
        job_id: the job's id as the scheduler spells it (SLURM: ``4211``, or ``4211_7`` for an
            array task known only by its array id).
        step: the job step the record's process ran in, if it ran in one (SLURM: ``srun``).
        cluster: the cluster the job ran on, where the provenance recorded it (ids repeat
            across clusters).
        restarts: how many times the job had been requeued when the record started (SLURM's
            ``SLURM_RESTART_COUNT``), if recorded: it names the incarnation exactly.
    """

    scheduler: str
    job_id: str
    step: str | None = None
    cluster: str | None = None
    restarts: int | None = None


@dataclass(frozen=True)
class JobEvidence:
    """What a scheduler says about one record, ready for the judge.

    Attributes:
        liveness: the conclusion (ended, running, or undecided).
        reason: one sentence in the scheduler's words that a person can check.
        ended_at: when the job (or the record's incarnation of it) ended, if the scheduler
            says: a closed record's end time is this when it is earlier than its last activity.
    """

    liveness: Liveness
    reason: str
    ended_at: datetime | None = None


def moment(value: datetime) -> str:
    """A time people read in a reason: ``2026-01-01 10:42:05 UTC``."""
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def _check_aware(name: str, value: datetime | None) -> None:
    if value is not None and value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware, got {value!r}")


@dataclass(frozen=True)
class JobStatus:
    """What a scheduler says about one job (or one step of it), now.

    Attributes:
        job: the reference this status answers (as it was asked).
        label: how a person names it, e.g. ``SLURM job 4211``, ``SLURM job 123_4``, ``step 0
            of SLURM job 4211``.
        state: the scheduler's own word: ``RUNNING``, ``CANCELLED``, ``OUT_OF_MEMORY``, ...
        phase: what the state means for the job's processes.
        reason: the scheduler's reason for the state (SLURM's ``Reason``), if it gives one.
        exit: how the job's main process ended, in words (``exit code 1``, ``signal 9``).
        submitted_at: when the current incarnation was queued (a requeue resets it).
        started_at: when the current incarnation started running (``None`` while pending).
        ended_at: when it ended (``None`` while it has not).
        node: the node(s) it runs or ran on, in the scheduler's notation.
        restarts: how many times it was requeued (``None``: the scheduler did not say).
        answered_by: which query answered (e.g. ``squeue``, ``sacct``), for the reason.
        text: the source's own sentence, where the generic one would misdescribe the status.
    """

    job: JobRef
    label: str
    state: str
    phase: JobPhase
    reason: str | None = None
    exit: str | None = None
    submitted_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    node: str | None = None
    restarts: int | None = None
    answered_by: str | None = None
    text: str | None = None

    def __post_init__(self) -> None:
        for name in ("submitted_at", "started_at", "ended_at"):
            _check_aware(name, getattr(self, name))

    # -- words -----------------------------------------------------------------------------------
    def sentence(self) -> str:
        """One sentence in the scheduler's words, e.g. ``SLURM job 4211 ended OUT_OF_MEMORY at
        2026-11-30 14:02:05 UTC on node gpu07``."""
        if self.text:
            return self.text
        on_node = f" on node {self.node}" if self.node else ""
        details = self._details()
        if self.phase is JobPhase.ENDED:
            at = f" at {moment(self.ended_at)}" if self.ended_at else ""
            return f"{self.label} ended {self.state}{details}{at}{on_node}"
        if self.phase is JobPhase.RUNNING:
            since = f" since {moment(self.started_at)}" if self.started_at else ""
            return f"{self.label} is {self.state}{details}{on_node}{since}{self._requeues()}"
        if self.phase is JobPhase.PENDING:
            return f"{self.label} is {self.state}{details}{self._requeues()}"
        if self.phase is JobPhase.ENDING:
            return f"{self.label} is {self.state}{on_node}: it has ended and is being cleaned up"
        return f"{self.label} is {self.state}{details}{on_node}"

    def _details(self) -> str:
        parts = [part for part in (self.exit, self.reason) if part]
        return f" ({', '.join(parts)})" if parts else ""

    def _requeues(self) -> str:
        if not self.restarts:
            return ""
        times = "once" if self.restarts == 1 else f"{self.restarts} times"
        when = f", last at {moment(self.submitted_at)}" if self.submitted_at else ""
        return f" (requeued {times}{when})"

    # -- one record ------------------------------------------------------------------------------
    def incarnation_of(
        self,
        started_at: datetime | None,
        restarts: int | None = None,
        tolerance: timedelta = DEFAULT_CLOCK_TOLERANCE,
    ) -> Incarnation:
        """Which incarnation of this job a record started in (see :meth:`evidence_for`)."""
        _check_aware("started_at", started_at)
        seen = self.job.restarts if restarts is None else restarts
        if seen is not None and self.restarts is not None:
            if seen < self.restarts:
                return Incarnation.EARLIER
            return Incarnation.CURRENT if seen == self.restarts else Incarnation.OTHER_JOB
        if started_at is None:
            return Incarnation.UNKNOWN if self.restarts else Incarnation.CURRENT
        if self.restarts:
            if self.phase is JobPhase.PENDING:
                return Incarnation.EARLIER
            if self.started_at is None:
                return Incarnation.UNKNOWN
            return Incarnation.EARLIER if started_at < self._cut(tolerance) else Incarnation.CURRENT
        if self.submitted_at is not None and started_at < self.submitted_at - tolerance:
            return Incarnation.OTHER_JOB
        return Incarnation.CURRENT

    def _cut(self, tolerance: timedelta) -> datetime:
        """Records that started before this time belong to an earlier incarnation.

        The earlier incarnation ended when the job was requeued (``submitted_at``), the current
        one began at ``started_at``: halfway between leaves the most room for clock skew either
        way. Without the requeue time, *tolerance* before the start.
        """
        assert self.started_at is not None
        if self.submitted_at is not None and self.submitted_at <= self.started_at:
            return self.submitted_at + (self.started_at - self.submitted_at) / 2
        return self.started_at - tolerance

    def evidence_for(
        self,
        started_at: datetime | None,
        *,
        restarts: int | None = None,
        tolerance: timedelta = DEFAULT_CLOCK_TOLERANCE,
    ) -> JobEvidence:
        """What this status says about a record that started at *started_at* in this job.

        A requeued job is judged by its current incarnation: a record that started in an
        earlier one has ended, whatever the job does now.

        Args:
            started_at: when the record started (aware), if known.
            restarts: the job's restart count the record saw when it started, if recorded
                (exact; preferred over comparing clocks). Defaults to :attr:`JobRef.restarts`.
            tolerance: how far the record's clock and the scheduler's may disagree, where the
                time the job was requeued is not known.
        """
        incarnation = self.incarnation_of(started_at, restarts, tolerance)
        said = self.sentence()
        if incarnation is Incarnation.OTHER_JOB:
            return JobEvidence(
                Liveness.UNDECIDED,
                f"{said}; it cannot be the job this record ran in (the id was reused, or it is "
                "another cluster's job)",
            )
        if incarnation is Incarnation.EARLIER:
            when = f" at {moment(self.submitted_at)}" if self.submitted_at else ""
            running = self.node and self.phase is JobPhase.RUNNING
            on_node = f" on node {self.node}" if running else ""
            return JobEvidence(
                Liveness.ENDED,
                f"{self.label} was requeued{when}, which ended the incarnation this record "
                f"started in; it is now {self.state}{self._details()}{on_node}",
                ended_at=self.submitted_at,
            )
        if self.phase is JobPhase.ENDED:
            return JobEvidence(Liveness.ENDED, said, ended_at=self.ended_at)
        if self.phase is JobPhase.RUNNING and incarnation is Incarnation.CURRENT:
            return JobEvidence(Liveness.RUNNING, said)
        if self.phase is JobPhase.RUNNING:
            return JobEvidence(
                Liveness.UNDECIDED,
                f"{said}; without the record's start time it is not known whether the record "
                "belongs to the current incarnation",
            )
        if self.phase is JobPhase.PENDING:
            return JobEvidence(
                Liveness.UNDECIDED, f"{said} and has not started: this record cannot be from it"
            )
        if self.phase is JobPhase.ENDING:
            return JobEvidence(Liveness.UNDECIDED, said)
        return JobEvidence(Liveness.UNDECIDED, f"{said}, a state mltidy does not interpret")


@dataclass(frozen=True)
class SchedulerAnswer:
    """What one source answered for one batch of jobs.

    Attributes:
        title: the scheduler as people name it (``SLURM``).
        statuses: one status per reference that the scheduler knows; unknown ones are absent.
        unavailable: why the scheduler could not be asked at all (no client, no permission,
            controller down, time bound exceeded), or ``None``.
        missing_hint: what an absent job can mean here, e.g. that finished jobs are kept only
            for ``MinJobAge`` and accounting storage is disabled.
        calls: how many scheduler commands the query ran (one batch each).
    """

    title: str
    statuses: Mapping[JobRef, JobStatus] = field(default_factory=dict)
    unavailable: str | None = None
    missing_hint: str | None = None
    calls: int = 0

    def status(self, ref: JobRef) -> JobStatus | None:
        """The status of *ref*, or ``None`` when the scheduler does not know it."""
        return self.statuses.get(ref)

    def evidence_for(
        self,
        ref: JobRef,
        started_at: datetime | None,
        *,
        tolerance: timedelta = DEFAULT_CLOCK_TOLERANCE,
    ) -> JobEvidence:
        """The evidence for a record naming *ref*, including when there is none, and why."""
        if self.unavailable is not None:
            return JobEvidence(
                Liveness.UNDECIDED, f"{self.title} could not be asked: {self.unavailable}"
            )
        status = self.statuses.get(ref)
        if status is None:
            step = f"step {ref.step} of " if ref.step else ""
            hint = f" ({self.missing_hint})" if self.missing_hint else ""
            return JobEvidence(
                Liveness.UNDECIDED, f"{self.title} does not know {step}job {ref.job_id}{hint}"
            )
        return status.evidence_for(started_at, tolerance=tolerance)


class SchedulerSource(abc.ABC):
    """A scheduler mltidy can ask about jobs (the contract is the module docstring).

    Attributes:
        name: the key of this source; :attr:`JobRef.scheduler` of the references it makes.
        title: the scheduler as people name it, used in reasons.
    """

    name: ClassVar[str]
    title: ClassVar[str]

    @abc.abstractmethod
    def job_of(self, tags: Mapping[str, str]) -> JobRef | None:
        """The job a record's provenance names, or ``None`` when it names none for this source.

        Pure: reads only *tags* (``mltidy.*`` tags or trial system attributes).
        """

    @abc.abstractmethod
    def query(self, jobs: Collection[JobRef]) -> SchedulerAnswer:
        """Ask the scheduler about every job in *jobs* at once.

        Args:
            jobs: references made by :meth:`job_of`; references for other schedulers are
                ignored. Duplicates cost nothing.

        Returns:
            One answer. Scheduler failures are reported in :attr:`SchedulerAnswer.unavailable`,
            never raised; the call returns within the source's time bound.
        """

    def unavailable_reason(self) -> str | None:
        """Why this source cannot be asked on this host, found without asking (e.g. no client
        binaries), or ``None``. For ``mltidy doctor``; :meth:`query` checks again itself."""
        return None


@dataclass(frozen=True)
class SchedulerEvidence:
    """The answers of every source for one scan, and a lookup from a record's tags.

    Attributes:
        sources: the sources that were considered.
        answers: one answer per source name that had at least one job to ask about.
    """

    sources: Sequence[SchedulerSource] = ()
    answers: Mapping[str, SchedulerAnswer] = field(default_factory=dict)

    def evidence_for(
        self,
        tags: Mapping[str, str],
        started_at: datetime | None,
        *,
        tolerance: timedelta = DEFAULT_CLOCK_TOLERANCE,
    ) -> JobEvidence | None:
        """What the scheduler that ran this record says, or ``None`` if no source claims it."""
        for source in self.sources:
            ref = source.job_of(tags)
            if ref is None:
                continue
            answer = self.answers.get(source.name)
            if answer is None:
                continue
            return answer.evidence_for(ref, started_at, tolerance=tolerance)
        return None


def ask(
    sources: Sequence[SchedulerSource], tag_sets: Iterable[Mapping[str, str]]
) -> SchedulerEvidence:
    """Ask every source once about all the jobs the records name (no call for a source whose
    jobs no record names)."""
    wanted: dict[str, set[JobRef]] = {source.name: set() for source in sources}
    for tags in tag_sets:
        for source in sources:
            ref = source.job_of(tags)
            if ref is not None:
                wanted[source.name].add(ref)
    answers = {
        source.name: source.query(wanted[source.name]) for source in sources if wanted[source.name]
    }
    return SchedulerEvidence(sources=tuple(sources), answers=answers)


def default_sources() -> tuple[SchedulerSource, ...]:
    """Every source mltidy ships, constructed with defaults (no I/O)."""
    from mltidy.evidence.slurm import SlurmSource

    return (SlurmSource(),)
