"""The value types every layer shares. All are frozen; all times are timezone-aware UTC."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum
from types import MappingProxyType


class StoreKind(str, Enum):
    """What a store holds."""

    MLFLOW = "mlflow"
    OPTUNA = "optuna"


class RecordKind(str, Enum):
    """What a record is (the ``kind`` field of the JSON contract)."""

    MLFLOW_RUN = "mlflow_run"
    OPTUNA_TRIAL = "optuna_trial"


class VerdictKind(str, Enum):
    """How sure mltidy is that the process behind a record is gone."""

    DEAD = "dead"
    STALE = "stale"
    ALIVE = "alive"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class Verdict:
    """A judgement and the one sentence of evidence a person can check."""

    kind: VerdictKind
    reason: str


_EMPTY: Mapping[str, str] = MappingProxyType({})


@dataclass(frozen=True)
class Record:
    """One unfinished MLflow run or Optuna trial, as a backend read it.

    Attributes:
        kind: run or trial.
        store: the store's display URI (already redacted).
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
    """

    kind: RecordKind
    store: str
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


@dataclass(frozen=True)
class JudgedRecord:
    """A record with the verdict the judge gave it."""

    record: Record
    verdict: Verdict
    url: str | None = None


@dataclass(frozen=True)
class StoreStatus:
    """How reading one store went (the ``stores`` list of the JSON contract)."""

    uri: str
    kind: StoreKind
    ok: bool
    error: str | None = None
    source: str = "--option"
    detail: str | None = None


def utc_now() -> datetime:
    """The current time, aware UTC."""
    return datetime.now(tz=timezone.utc)


def from_epoch_ms(value: int | float | None) -> datetime | None:
    """MLflow stores epoch milliseconds."""
    if value is None:
        return None
    return datetime.fromtimestamp(float(value) / 1000.0, tz=timezone.utc)


def naive_local_to_utc(value: datetime) -> datetime:
    """A naive datetime in this machine's local time (Optuna before 5.0), as aware UTC."""
    return value.astimezone(timezone.utc)


def naive_utc_to_utc(value: datetime) -> datetime:
    """A naive datetime that is already UTC (Optuna 5 RDB storages), as aware UTC."""
    return value.replace(tzinfo=timezone.utc)


def iso(value: datetime | None) -> str | None:
    """ISO 8601 with offset, seconds precision, or ``None``."""
    return None if value is None else value.astimezone(timezone.utc).isoformat(timespec="seconds")
