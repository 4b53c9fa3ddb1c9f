"""What both ways of reading MLflow (SQL tables, ``MlflowClient``) share about runs.

A run becomes the same :class:`~mltidy.model.Record` and :class:`~mltidy.model.RunRef` whichever
way it was read: the same name and user fallbacks, the same tags, epoch milliseconds made aware.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from mltidy import names
from mltidy.model import Record, RecordKind, RunRef, StoreId, from_epoch_ms

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
) -> Record:
    """A run as a record. ``times_ms`` are its start, end and newest metric, in epoch ms."""
    start, end, last_metric = times_ms
    return Record(
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


__all__ = ["ENDED", "epoch_ms", "parse_time", "run_record", "run_ref", "wanted_tags"]
