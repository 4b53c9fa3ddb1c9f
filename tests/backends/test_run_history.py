"""``RunHistory.ended_runs_after``: a polling caller gets the same ended runs as a full read of
the history, while on SQLite a poll after the first reads only the runs added since and the
runs that were RUNNING (``rowid`` and primary-key ranges; the plan is checked)."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import mlflow
import pytest

from mltidy.backends.mlflow.sql import FULL_HISTORY_EVERY, MlflowSqlBackend
from mltidy.model import HistoryMark, Selection


def _now() -> datetime:
    return datetime.now(timezone.utc)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[str, Any, str]]:
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    experiment = client.create_experiment("history")
    yield uri, client, experiment


def _run(client: Any, experiment: str, status: str | None = None) -> str:
    run_id = str(client.create_run(experiment).info.run_id)
    if status is not None:
        client.set_terminated(run_id, status)
    return run_id


def _ids(records: list[Any]) -> set[str]:
    return {r.id for r in records}


def test_later_polls_read_only_what_can_have_ended(
    store: tuple[str, Any, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    uri, client, experiment = store
    since = _now() - timedelta(minutes=10)
    finished_before = _run(client, experiment, "FINISHED")
    running = [_run(client, experiment) for _ in range(3)]
    backend = MlflowSqlBackend(uri)
    first, mark = backend.ended_runs_after(Selection(), since, None, _now())
    assert _ids(first) == {finished_before}
    assert mark is not None and mark.running == frozenset(running)

    # Between two polls: a RUNNING run ends, a run starts and ends, a run starts.
    client.set_terminated(running[0], "KILLED")
    quick = _run(client, experiment, "FAILED")
    started = _run(client, experiment)
    seen: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(seen.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)
    second, mark2 = backend.ended_runs_after(Selection(), since, mark, _now())
    monkeypatch.undo()
    assert _ids(second) == {running[0], quick}
    assert [r.ended_at is not None for r in second] == [True, True]
    assert mark2 is not None and mark2.running == frozenset({*running[1:], started})
    assert mark2.full_at == mark.full_at  # not read in full again
    full = _ids(list(backend.iter_ended_runs(Selection(), since)))
    assert _ids(second) <= full and full - _ids(second) == {finished_before}
    runs_queries = [sql for sql in seen if "FROM runs r" in sql]
    assert runs_queries and all("rowid >" in q or "run_uuid IN" in q for q in runs_queries)
    backend.close()


def test_the_whole_history_is_read_again_when_the_mark_cannot_be_trusted(
    store: tuple[str, Any, str],
) -> None:
    uri, client, experiment = store
    since = _now() - timedelta(minutes=10)
    ended = _run(client, experiment, "FINISHED")
    backend = MlflowSqlBackend(uri)
    now = _now()
    beyond = HistoryMark(position=10**9, running=frozenset(), full_at=now)  # rowid went back
    records, mark = backend.ended_runs_after(Selection(), since, beyond, now)
    assert _ids(records) == {ended} and mark is not None and mark.full_at == now
    stale = HistoryMark(position=mark.position, running=frozenset(), full_at=now)
    later = now + FULL_HISTORY_EVERY
    records, mark = backend.ended_runs_after(Selection(), since, stale, later)
    assert _ids(records) == {ended} and mark is not None and mark.full_at == later
    backend.close()


def test_a_resumed_run_that_ended_again_is_found_by_the_next_full_read(
    store: tuple[str, Any, str],
) -> None:
    uri, client, experiment = store
    since = _now() - timedelta(minutes=10)
    backend = MlflowSqlBackend(uri)
    finished = _run(client, experiment, "FINISHED")
    _, mark = backend.ended_runs_after(Selection(), since, None, _now())
    assert mark is not None
    time.sleep(0.01)
    client.update_run(finished, status="RUNNING")  # resumed, as mlflow.start_run(run_id=...) does
    client.set_terminated(finished, "FINISHED")
    bounded, _ = backend.ended_runs_after(Selection(), since, mark, _now())
    assert finished not in _ids(bounded)  # the documented gap...
    full, _ = backend.ended_runs_after(Selection(), since, mark, _now() + FULL_HISTORY_EVERY)
    assert finished in _ids(full)  # ...closed by the hourly full read
    backend.close()
