"""Evidence for the judge beyond the record itself: the facts of this machine (``local``: host,
boot id, pid namespaces, processes) and the schedulers that ran the jobs (``scheduler``,
``slurm``).

Importing this package runs nothing and imports no source's dependencies; a source does its
I/O only in :meth:`~mltidy.evidence.scheduler.SchedulerSource.query`.
"""

from mltidy.evidence.scheduler import (
    DEFAULT_CLOCK_TOLERANCE,
    Incarnation,
    JobEvidence,
    JobPhase,
    JobRef,
    JobStatus,
    Liveness,
    SchedulerAnswer,
    SchedulerEvidence,
    SchedulerSource,
    ask,
    default_sources,
)

__all__ = [
    "DEFAULT_CLOCK_TOLERANCE",
    "Incarnation",
    "JobEvidence",
    "JobPhase",
    "JobRef",
    "JobStatus",
    "Liveness",
    "SchedulerAnswer",
    "SchedulerEvidence",
    "SchedulerSource",
    "ask",
    "default_sources",
]
