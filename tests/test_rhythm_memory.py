"""A watch daemon reads a RUNNING run's rhythm again only when the run has new activity."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

from mltidy.model import Record, RecordKind, StoreId
from mltidy.scan import RhythmMemory

STORE = StoreId("sqlite:////data/mlflow.db")
T0 = datetime(2026, 11, 30, 9, 0, tzinfo=timezone.utc)


def _run(run_id: str, active: datetime | None) -> Record:
    return Record(
        kind=RecordKind.MLFLOW_RUN,
        store=STORE,
        id=run_id,
        name=run_id,
        container="exp",
        container_id="1",
        state="RUNNING",
        started_at=T0,
        last_activity_at=active,
    )


def test_a_run_without_new_activity_keeps_its_rhythm() -> None:
    memory = RhythmMemory()
    read = dataclasses.replace(_run("a", T0), longest_pause=timedelta(seconds=30), activity_count=9)
    memory.keep(STORE, [read])
    known, unread = memory.split(STORE, [_run("a", T0)])
    assert unread == []
    assert known == [read]


def test_new_activity_or_a_new_run_is_read_again() -> None:
    memory = RhythmMemory()
    memory.keep(STORE, [dataclasses.replace(_run("a", T0), longest_pause=timedelta(seconds=30))])
    later = _run("a", T0 + timedelta(seconds=5))
    known, unread = memory.split(STORE, [later, _run("b", None)])
    assert known == []
    assert unread == [later, _run("b", None)]
    # another store's runs are not this store's
    assert memory.split(StoreId("sqlite:////other.db"), [_run("a", T0)])[1] == [_run("a", T0)]


def test_only_the_latest_scans_runs_are_kept() -> None:
    memory = RhythmMemory()
    memory.keep(STORE, [_run("a", T0), _run("b", T0)])
    memory.keep(STORE, [_run("b", T0)])
    assert memory.split(STORE, [_run("a", T0)])[1] == [_run("a", T0)]
    assert memory.split(STORE, [_run("b", T0)])[0] == [_run("b", T0)]
