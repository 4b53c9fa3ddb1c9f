"""The value types every layer shares. All are frozen; all times are timezone-aware UTC.

Size: every value type has one home on purpose: layers share these types, and one module avoids
import cycles between them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from enum import Enum
from types import MappingProxyType
from typing import NewType

#: A store's canonical, secret-free identity: the absolute path of a file store, the normalised
#: URI without credentials of a server (``backends/identity.py`` computes it).
StoreId = NewType("StoreId", str)


class StoreKind(str, Enum):
    """What a store holds."""

    MLFLOW = "mlflow"
    OPTUNA = "optuna"


class RecordKind(str, Enum):
    """What a record is (the ``kind`` field of the JSON contract)."""

    MLFLOW_RUN = "mlflow_run"
    OPTUNA_TRIAL = "optuna_trial"


class VerdictKind(str, Enum):
    """How sure mltidy is that the process behind a record is gone (a contract, docs/json.md).

    ``alive`` needs proof of life (the process with its recorded start time, a fresh heartbeat,
    a scheduler that says the job runs); ``active`` is recent activity without such proof.
    """

    DEAD = "dead"
    STALE = "stale"
    ACTIVE = "active"
    ALIVE = "alive"
    UNKNOWN = "unknown"


class Basis(str, Enum):
    """What a verdict rests on, so that commands can act on some bases and not others."""

    PROCESS = "process"
    REBOOT = "reboot"
    NAMESPACE = "namespace"
    SUPERVISOR = "supervisor"
    SCHEDULER = "scheduler"
    HEARTBEAT = "heartbeat"
    RHYTHM = "rhythm"
    STALE_AFTER = "stale-after"
    ACTIVITY = "activity"
    CLOCK = "clock"
    NONE = "none"


@dataclass(frozen=True)
class Verdict:
    """A judgement and the one sentence of evidence a person can check."""

    kind: VerdictKind
    reason: str
    basis: Basis = Basis.NONE
    ended_at: datetime | None = None
    """When the process ended, where the evidence says (a scheduler's end time)."""


class ActivitySource(str, Enum):
    """What a record's ``last_activity_at`` is, in the words of a reason."""

    METRIC = "metric"
    OPTUNA_HEARTBEAT = "Optuna heartbeat"
    RUN_METRIC = "metric of its MLflow run"


_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Record:
    """One unfinished MLflow run or Optuna trial, as a backend read it.

    Attributes:
        kind: run or trial.
        store: the identity of the store it was read from.
        id: the MLflow run id, or the Optuna trial id (as a string).
        name: run name, or ``"trial N"``.
        container: experiment name or study name.
        container_id: experiment id or study id.
        state: the store's own state name (``RUNNING``).
        started_at: when the run or trial started (aware UTC), if known.
        last_activity_at: newest evidence of work (metric, heartbeat), if any.
        trial_number: the Optuna trial number, ``None`` for runs.
        user: who started it, where the store knows.
        tags: the record's ``mltidy.*`` tags / system attributes, and link attributes such as
            ``mlflow_run_id``; backends pass only the keys the judge and the linker read.
        evidence_from: the MLflow run whose provenance and activity a trial inherited.
        ended_at: when a finished run or trial ended (``None`` while it runs); read by ``watch``.
        activity_source: what ``last_activity_at`` is (a metric, an Optuna heartbeat, ...).
        longest_pause: the longest silence between two activities while it was logging (its
            rhythm), where the store keeps a history; ``None`` otherwise.
        activity_count: how many distinct activity times that history holds.
        assumed_utc_offset: the UTC offset mltidy assumed to read the record's naive times (an
            Optuna 4.x storage whose writer's zone is neither set nor inferred: this machine's),
            ``None`` when its times are certain. Its true start may lie anywhere a real UTC
            offset (-12 to +14 h) puts it.
    """

    kind: RecordKind
    store: StoreId
    id: str
    name: str
    container: str
    container_id: str
    state: str
    started_at: datetime | None
    last_activity_at: datetime | None = None
    trial_number: int | None = None
    user: str | None = None
    tags: Mapping[str, str] = field(default_factory=lambda: _EMPTY)
    evidence_from: str | None = None
    ended_at: datetime | None = None
    activity_source: ActivitySource | None = None
    longest_pause: timedelta | None = None
    activity_count: int = 0
    assumed_utc_offset: timedelta | None = None

    @property
    def store_key(self) -> StoreKey:
        """The store this record was read from, as a store session calls it."""
        kind = StoreKind.MLFLOW if self.kind is RecordKind.MLFLOW_RUN else StoreKind.OPTUNA
        return (kind, self.store)


@dataclass(frozen=True)
class JudgedRecord:
    """A record with the verdict the judge gave it."""

    record: Record
    verdict: Verdict
    url: str | None = None


#: A store as a session knows it: its kind and identity (one database may hold both kinds).
StoreKey = tuple[StoreKind, StoreId]


@dataclass(frozen=True)
class StoreSpec:
    """A store a command works on, and how mltidy came to it.

    Attributes:
        kind: MLflow or Optuna.
        secret_uri: the URI as given, credentials included: only backends and the session see
            it; never print it.
        source: how mltidy came to it (``--mlflow``, ``MLFLOW_TRACKING_URI``, ``found mlflow.db``).
        id: the store's identity (secret-free, absolute), what everything else calls it.
    """

    kind: StoreKind
    secret_uri: str
    source: str
    id: StoreId

    @property
    def uri(self) -> str:
        """The secret URI (an alias kept for backends' constructors)."""
        return self.secret_uri

    @property
    def key(self) -> StoreKey:
        """What a store session calls this store (one database may hold both kinds)."""
        return (self.kind, self.id)


@dataclass(frozen=True)
class StoreStatus:
    """How reading one store went (the ``stores`` list of the JSON contract).

    ``uri`` is the store's identity (secret-free, absolute), shown and written as JSON.
    """

    uri: StoreId
    kind: StoreKind
    ok: bool
    error: str | None = None
    source: str = "--option"
    detail: str | None = None


#: The span of times mltidy computes with (room left for adding durations on either side).
_EARLIEST_S = datetime(1000, 1, 1, tzinfo=timezone.utc).timestamp()
_LATEST_S = datetime(9000, 1, 1, tzinfo=timezone.utc).timestamp()


@dataclass(frozen=True)
class ClockReading:
    """What a store says about time, for ``doctor``: the clock of its database server (or
    tracking server), and the newest time its records carry.

    Attributes:
        server_now: the server's clock when asked (aware UTC); ``None`` when it cannot say.
        newest: the newest time in its records (a run or trial start or end, a metric or
            heartbeat), ``None`` in an empty store.
        newest_what: what that newest time is, in words (``run start``, ``metric``).
        resolution: how coarse ``server_now`` is (an HTTP ``Date`` header: one second).
    """

    server_now: datetime | None
    newest: datetime | None
    newest_what: str = ""
    resolution: timedelta = timedelta(0)


def utc_now() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(tz=timezone.utc)


def from_epoch_ms(value: int | float | None) -> datetime | None:
    """MLflow stores epoch milliseconds."""
    if value is None:
        return None
    try:
        seconds = float(value) / 1000.0
    except (TypeError, ValueError):
        return None  # not a number at all (SQLite keeps whatever it was given)
    if seconds != seconds:  # NaN: no time at all
        return None
    # A store may hold any number (a broken clock, a hand-written row): times beyond the
    # calendar mltidy can compute with are pinned to its ends, which the judge reports as
    # far in the future (or the past), instead of failing the whole store.
    seconds = min(max(seconds, _EARLIEST_S), _LATEST_S)
    return datetime.fromtimestamp(seconds, tz=timezone.utc)


def naive_local_to_utc(value: datetime) -> datetime:
    """A naive datetime in this machine's local time (Optuna before 5.0), as aware UTC."""
    return value.astimezone(timezone.utc)


def naive_utc_to_utc(value: datetime) -> datetime:
    """A naive datetime that is already UTC (Optuna 5 RDB storages), as aware UTC."""
    return value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with offset, milliseconds precision (what the stores keep), or ``None``."""
    if value is None:
        return None
    return value.astimezone(timezone.utc).isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class TrialName:
    """A trial as tables show it and people type it: ``STUDY:N``, or ``#N`` in any study.

    Attributes:
        study: the study name, ``None`` for "whichever study has a trial with this number".
        number: the trial number.
    """

    study: str | None
    number: int

    def __str__(self) -> str:
        return f"{self.study}:{self.number}" if self.study is not None else f"#{self.number}"


@dataclass(frozen=True)
class Selection:
    """Which records a command works on (``scope.py`` says exactly how each field selects).

    Empty fields select everything. Containers are a union: ``experiments`` selects their runs
    and the trials linked to them, ``studies`` their trials and the runs linked to them. Every
    other field narrows that down (all must hold).

    Backends read only ``experiments`` and ``studies`` (:meth:`wants_experiment`,
    :meth:`wants_study`), and only from the selection ``scope.Scope.for_backend`` gives them:
    what a store can filter on its own, no more.

    Attributes:
        experiments: MLflow experiments, by name or id.
        studies: Optuna studies, by name.
        runs: MLflow run ids, or unique prefixes of them (tables show 8 characters).
        trials: Optuna trials by study and number.
        older_than: only records started at least this long ago.
        silent_for: only records without activity (metric, heartbeat, start) for this long.
        users: only records started by one of these users.
        hosts: only records whose provenance names one of these hosts.
    """

    experiments: tuple[str, ...] = ()
    studies: tuple[str, ...] = ()
    runs: tuple[str, ...] = ()
    trials: tuple[TrialName, ...] = ()
    older_than: timedelta | None = None
    silent_for: timedelta | None = None
    users: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()

    @property
    def names_records(self) -> bool:
        """Whether records are named one by one (``--run``, ``--trial``)."""
        return bool(self.runs or self.trials)

    @property
    def by_container(self) -> bool:
        """Whether experiments or studies are named."""
        return bool(self.experiments or self.studies)

    def narrowing(self) -> dict[str, list[str]]:
        """The filters besides experiments and studies, as text (only those given)."""
        given = {
            "runs": list(self.runs),
            "trials": [str(t) for t in self.trials],
            "older_than": [f"{self.older_than.total_seconds():g}s"] if self.older_than else [],
            "silent_for": [f"{self.silent_for.total_seconds():g}s"] if self.silent_for else [],
            "users": list(self.users),
            "hosts": list(self.hosts),
        }
        return {key: value for key, value in given.items() if value}

    def wants_experiment(self, name: str, experiment_id: str) -> bool:
        """Whether an experiment (by name or id) is selected (what a backend filters on)."""
        return not self.experiments or name in self.experiments or experiment_id in self.experiments

    def wants_study(self, name: str) -> bool:
        """Whether a study is selected (what a backend filters on)."""
        return not self.studies or name in self.studies


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


@dataclass(frozen=True)
class RunContents:
    """What a finished run holds, to tell an empty leftover from a run worth keeping."""

    record: Record
    closed_at: datetime | None
    metrics: int
    params: int
    artifacts: int | None
    """``None`` when the artifact store cannot be checked cheaply (kept, to be safe)."""


@dataclass(frozen=True)
class StudyHealth:
    """How many of a study's trials are failures or zombies, and what they cost."""

    study: str
    trials: int
    running: int
    failed: int
    closed_by_mltidy: int
    failed_seconds: float


@dataclass(frozen=True)
class RunRef:
    """An MLflow run as the linker sees it (any state).

    ``tags`` holds the keys linking reads: ``mltidy.optuna.*`` (the plugin's), ``optuna.*``
    (mltidy's links), ``number``/``datetime_start`` (optuna-integration's MLflowCallback) and
    ``mlflow.note.content`` (the run's description).
    """

    store: StoreId
    run_id: str
    name: str
    experiment_id: str
    experiment: str
    tags: Mapping[str, str]


@dataclass(frozen=True)
class TrialRef:
    """An Optuna trial as the linker sees it (any state)."""

    store: StoreId
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


@dataclass(frozen=True)
class HistoryMark:
    """Where a store's run history stood at a ``watch`` poll, so that the next poll can look
    only at what may have changed since (``RunHistory.ended_runs_after``).

    Attributes:
        position: the largest row position (SQLite's ``rowid``) of ``runs`` when it was read:
            any run added later has a larger one.
        running: the runs that were RUNNING then.
        full_at: when the history was last read in full (by ``end_time``).
    """

    position: int
    running: frozenset[str]
    full_at: datetime
