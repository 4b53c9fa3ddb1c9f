"""What both ways of reading MLflow (SQL tables, ``MlflowClient``) share about runs.

A run becomes the same :class:`~mltidy.model.Record` and :class:`~mltidy.model.RunRef` whichever
way it was read: the same name and user fallbacks, the same tags, epoch milliseconds made aware.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from mltidy import names
from mltidy.model import ActivitySource, Record, RecordKind, RunRef, StoreId, from_epoch_ms

#: The states of a run that ended.
ENDED = ("FINISHED", "FAILED", "KILLED")


def epoch_ms(value: datetime) -> int:
    """An aware time as MLflow stores it: epoch milliseconds."""
    return int(value.timestamp() * 1000)


def parse_time(text: str | None) -> datetime | None:
    """A time mltidy wrote in a tag (ISO 8601); ``None`` when absent or unreadable."""
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def wanted_tags(
    tags: Mapping[str, Any], keys: tuple[str, ...], prefixes: tuple[str, ...]
) -> dict[str, Any]:
    """The tags named in ``keys`` or starting with one of ``prefixes``."""
    return {k: v for k, v in tags.items() if k in keys or k.startswith(prefixes)}


@dataclass(frozen=True)
class Rhythm:
    """How a run logged while it ran: the longest gap between two consecutive distinct
    timestamps of its most recently logged metric key (its longest pause), and how many
    distinct timestamps it has. Every read path (SQL, MlflowClient, REST) reads the same key's
    history, so a run has the same rhythm whichever way it is read. With MLflow's system metrics
    on, that key is usually a ``system/...`` metric, logged every 10 s while the process lives.
    """

    longest_pause: timedelta | None
    count: int

    @classmethod
    def of(cls, stamps_ms: Iterable[int | None]) -> Rhythm:
        """The rhythm of a set of epoch-millisecond timestamps (order and repeats do not
        matter)."""
        distinct = sorted({int(s) for s in stamps_ms if s is not None})
        gaps = [b - a for a, b in itertools.pairwise(distinct)]
        return cls(timedelta(milliseconds=max(gaps)) if gaps else None, len(distinct))


#: No metric history was read (finished runs, or a path that could not read it).
NO_RHYTHM = Rhythm(None, 0)


def with_rhythm(record: Record, rhythm: Rhythm) -> Record:
    """A RUNNING run's record with its rhythm; its activity is a metric."""
    return dataclasses.replace(
        record,
        activity_source=ActivitySource.METRIC,
        longest_pause=rhythm.longest_pause,
        activity_count=rhythm.count,
    )


def latest_key(metrics: Iterable[tuple[str, int | None]]) -> str | None:
    """The key of the most recently logged metric among (key, timestamp ms) pairs."""
    best: tuple[int, str] | None = None
    for key, stamp in metrics:
        if stamp is not None and (best is None or (int(stamp), key) > best):
            best = (int(stamp), key)
    return None if best is None else best[1]


def run_record(
    store: StoreId,
    run_id: str,
    *,
    name: str | None,
    experiment: str,
    experiment_id: str,
    state: str,
    times_ms: tuple[int | None, int | None, int | None],
    user: str | None,
    tags: dict[str, str],
    rhythm: Rhythm | None = None,
) -> Record:
    """A run as a record. ``times_ms`` are its start, end and newest metric, in epoch ms;
    ``rhythm`` its metric history (read for RUNNING runs only)."""
    start, end, last_metric = times_ms
    record = Record(
        kind=RecordKind.MLFLOW_RUN,
        store=store,
        id=run_id,
        name=name or tags.get(names.MLFLOW_RUN_NAME) or run_id,
        container=experiment,
        container_id=experiment_id,
        state=state,
        started_at=from_epoch_ms(start),
        last_activity_at=from_epoch_ms(last_metric),
        user=user or tags.get(names.MLFLOW_USER),
        tags=tags,
        ended_at=None if state == "RUNNING" else from_epoch_ms(end),
    )
    return record if rhythm is None else with_rhythm(record, rhythm)


def run_ref(
    store: StoreId,
    run_id: str,
    name: str | None,
    experiment: tuple[str, str],
    tags: dict[str, Any],
) -> RunRef:
    """A run as a link candidate; ``experiment`` is its (id, name)."""
    experiment_id, experiment_name = experiment
    return RunRef(
        store=store,
        run_id=run_id,
        name=name or run_id,
        experiment_id=experiment_id,
        experiment=experiment_name,
        tags=tags,
    )


__all__ = [
    "ENDED",
    "NO_RHYTHM",
    "Rhythm",
    "epoch_ms",
    "latest_key",
    "parse_time",
    "run_record",
    "run_ref",
    "wanted_tags",
    "with_rhythm",
]
