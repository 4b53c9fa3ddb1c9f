"""The contract every store backend keeps.

A backend adapts one MLflow tracking store or one Optuna storage to mltidy. The rules:

* **Reading never creates, migrates or locks a store for long.** Opening a backend on a path that
  does not exist raises :class:`~mltidy.errors.StoreNotFound` and leaves no file behind; a store
  with a schema the backend does not understand raises :class:`~mltidy.errors.UnsupportedSchema`
  instead of being upgraded.
* **Errors are translated at the boundary.** Every method raises only subclasses of
  :class:`~mltidy.errors.StoreError`; library exceptions (SQLAlchemy, MLflow, Optuna, requests)
  never escape. Messages never contain secrets.
* **Values are immutable and in UTC.** Methods return frozen :class:`~mltidy.model.Record`
  objects whose datetimes are timezone-aware UTC, whatever the store keeps.
* **Heavy imports are lazy.** Importing a backend module must not import mlflow, optuna or
  sqlalchemy; that happens when a backend is opened.
* **Never trust a server to filter.** Backends check states themselves before returning records.
* A backend is used from one thread at a time.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from mltidy.model import Record, StoreKind


@dataclass(frozen=True)
class Selection:
    """Which containers to read. Empty tuples mean all of them."""

    experiments: tuple[str, ...] = ()
    studies: tuple[str, ...] = ()

    def wants_experiment(self, name: str, experiment_id: str) -> bool:
        """Whether an experiment (by name or id) is selected."""
        return not self.experiments or name in self.experiments or experiment_id in self.experiments

    def wants_study(self, name: str) -> bool:
        """Whether a study is selected."""
        return not self.studies or name in self.studies


class Backend(abc.ABC):
    """One store, opened. Use it as a context manager, or call :meth:`close` when done.

    Attributes:
        kind: which kind of store this is.
        uri: the store's URI for display, with secrets redacted.
    """

    kind: StoreKind
    uri: str

    @abc.abstractmethod
    def describe(self) -> str:
        """One line about the store (backend type, schema version) for ``--verbose`` and doctor.

        Raises:
            StoreError: the store cannot be read.
        """

    @abc.abstractmethod
    def iter_active(self, selection: Selection) -> Iterator[Record]:
        """Every record still in the running state (MLflow ``RUNNING``, Optuna ``RUNNING``).

        Args:
            selection: which experiments or studies to read.

        Returns:
            Records in no particular order, streamed where the store allows it.

        Raises:
            StoreError: the store cannot be read.
        """

    @abc.abstractmethod
    def read(self, record_id: str) -> Record | None:
        """Read one record fresh from the store, whatever its state.

        Args:
            record_id: a run id, or a trial id as a string.

        Returns:
            The record, or ``None`` when the store has no such record.

        Raises:
            StoreError: the store cannot be read.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections. Safe to call twice."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class CloseStatus(str, Enum):
    """What happened to one record a close tried to change."""

    CLOSED = "closed"
    NOT_RUNNING = "not_running"
    MISSING = "missing"


@dataclass(frozen=True)
class CloseRequest:
    """Close one record, if and only if it is still running.

    Attributes:
        record_id: the run id or trial id.
        new_state: ``KILLED``/``FAILED`` for MLflow runs, ``FAIL`` for Optuna trials.
        end_time: the true end (last activity), written as the run's ``end_time`` or the
            trial's ``datetime_complete`` where the store allows it.
        attributes: the audit trail (``mltidy.closed_*``) written on the record in the same
            change, as tags or trial system attributes.
    """

    record_id: str
    new_state: str
    end_time: datetime
    attributes: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CloseResult:
    """The outcome of one :class:`CloseRequest`, and the state found when it was not closed."""

    status: CloseStatus
    state: str | None = None


class Closer(abc.ABC):
    """Capability: end a running record with a compare-and-set.

    Each backend documents its guarantee: a conditional write (``UPDATE ... WHERE state =
    'RUNNING'``) where the store has one, else a fresh re-read right before the write.
    """

    #: One line for docs and ``--verbose``: how the backend makes the change conditional.
    close_guarantee: str = ""

    @abc.abstractmethod
    def close_record(self, request: CloseRequest) -> CloseResult:
        """Close the record if it is still running; never touch it otherwise.

        Raises:
            StoreError: the write failed (permission denied, locked after retries, ...).
        """


class TrialRetrier(abc.ABC):
    """Capability: enqueue a WAITING copy of a failed trial, as Optuna's retry callback does."""

    @abc.abstractmethod
    def enqueue_retry(self, trial_id: str, max_retry: int | None) -> int | None:
        """Enqueue a retry of a finished trial.

        Uses Optuna's own ``failed_trial`` / ``retry_history`` system attributes
        (``RetryHeartbeatStaleTrialCallback``), so Optuna's helpers recognise the retry.

        Returns:
            The new trial's number, or ``None`` when ``max_retry`` retries were already made.

        Raises:
            StoreError: the storage refused.
        """


@dataclass(frozen=True)
class RunContents:
    """What a finished run holds, to tell an empty leftover from a run worth keeping."""

    record: Record
    closed_at: datetime | None
    metrics: int
    params: int
    artifacts: int | None
    """``None`` when the artifact store cannot be checked cheaply (kept, to be safe)."""

    @property
    def is_empty(self) -> bool:
        """Nothing worth keeping: no metrics, no params, no artifacts."""
        return self.metrics == 0 and self.params == 0 and self.artifacts == 0


class RunDeclutterer(abc.ABC):
    """Capability: find the runs mltidy closed, and soft-delete (restorable) empty ones."""

    @abc.abstractmethod
    def iter_closed_runs(self, selection: Selection) -> Iterator[RunContents]:
        """Active (not deleted) runs carrying ``mltidy.closed_at``, with what they hold."""

    @abc.abstractmethod
    def soft_delete(self, run_id: str) -> bool:
        """Move a finished run to MLflow's ``deleted`` lifecycle stage (``mlflow runs restore``
        brings it back). Returns ``False`` when the run is running, gone or already deleted."""


@dataclass(frozen=True)
class StudyHealth:
    """How many of a study's trials are failures or zombies, and what they cost."""

    study: str
    trials: int
    running: int
    failed: int
    closed_by_mltidy: int
    failed_seconds: float


class StudyReporter(abc.ABC):
    """Capability: per-study counts of failed and unfinished trials."""

    @abc.abstractmethod
    def study_health(self, selection: Selection) -> list[StudyHealth]:
        """One entry per selected study."""


@dataclass(frozen=True)
class RunRef:
    """An MLflow run as the linker sees it (any state).

    ``tags`` holds the keys linking reads: ``mltidy.optuna.*`` (the plugin's), ``optuna.*``
    (mltidy's links), ``number``/``datetime_start`` (optuna-integration's MLflowCallback) and
    ``mlflow.note.content`` (the run's description).
    """

    store: str
    run_id: str
    name: str
    experiment_id: str
    experiment: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class TrialRef:
    """An Optuna trial as the linker sees it (any state)."""

    store: str
    study: str
    study_id: str
    trial_id: str
    number: int
    state: str
    started_at: datetime | None
    run_id_user_attr: str | None
    run_id_system_attr: str | None
    run_url: str | None
    note: str


class RunLinker(abc.ABC):
    """Capability: find the runs that belong to trials, and write links on runs."""

    @abc.abstractmethod
    def link_candidates(self, run_ids: set[str], studies: set[str]) -> list[RunRef]:
        """Runs with one of these ids, or naming one of these studies (mltidy plugin or link
        tags), or in an experiment named after one of them with a ``number`` tag
        (optuna-integration's MLflowCallback)."""

    @abc.abstractmethod
    def write_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set tags on a run, in any state (MLflow allows tags on finished runs).

        Raises:
            StoreError: the write failed.
        """


class TrialLinker(abc.ABC):
    """Capability: list trials with their link attributes and notes, and write links on them."""

    @abc.abstractmethod
    def iter_link_trials(self, selection: Selection) -> Iterator[TrialRef]:
        """Every trial of the selected studies, any state."""

    @abc.abstractmethod
    def write_trial_link(self, trial: TrialRef, run_url: str | None, note: str | None) -> str:
        """Write ``mlflow_run_url`` (if not ``None``) and the trial's optuna-dashboard note (if
        not ``None``). Returns a short remark when a part could not be written, else ``""``.

        Raises:
            StoreError: the write failed.
        """


class RunHistory(abc.ABC):
    """Capability: the MLflow runs that ended recently (for ``watch``'s finished/failed/killed)."""

    @abc.abstractmethod
    def iter_ended_runs(self, selection: Selection, since: datetime) -> Iterator[Record]:
        """Runs of selected, active experiments that ended (``FINISHED``, ``FAILED``,
        ``KILLED``) at or after ``since``; each has :attr:`~mltidy.model.Record.ended_at` set.

        ``since`` is compared with the run's ``end_time``, which the training job's clock wrote:
        callers leave a margin and deduplicate.

        Raises:
            StoreError: the store cannot be read.
        """


@dataclass(frozen=True)
class StudyProgress:
    """Where an Optuna study stands, for ``watch``'s "study finished" and "study stopped".

    Attributes:
        study: the study name.
        study_id: the storage's study id (as a string; optuna-dashboard links use it).
        directions: ``MINIMIZE``/``MAXIMIZE`` per objective.
        trials: all trials, in any state.
        running, waiting, complete, pruned, failed: trials per state.
        first_started_at: the earliest trial start (aware UTC), if any.
        last_started_at: the newest trial start, if any.
        last_completed_at: the newest trial end, if any.
        best_value: the best objective value of a single-objective study, if any trial completed.
        best_trial_number: the number of that trial.
        budget: the trial budget from the study's ``mltidy.budget`` user attribute, if set.
    """

    study: str
    study_id: str
    directions: tuple[str, ...]
    trials: int
    running: int
    waiting: int
    complete: int
    pruned: int
    failed: int
    first_started_at: datetime | None = None
    last_started_at: datetime | None = None
    last_completed_at: datetime | None = None
    best_value: float | None = None
    best_trial_number: int | None = None
    budget: int | None = None

    @property
    def finished(self) -> int:
        """Trials that ended, whatever their outcome (complete, pruned, failed)."""
        return self.complete + self.pruned + self.failed

    @property
    def last_activity_at(self) -> datetime | None:
        """The newest trial start or end."""
        times = [t for t in (self.last_started_at, self.last_completed_at) if t is not None]
        return max(times) if times else None


class StudyWatcher(abc.ABC):
    """Capability: per-study progress (trial counts per state, best value, budget)."""

    @abc.abstractmethod
    def study_progress(self, selection: Selection) -> list[StudyProgress]:
        """One entry per selected study, ordered by name.

        Raises:
            StoreError: the storage cannot be read.
        """
