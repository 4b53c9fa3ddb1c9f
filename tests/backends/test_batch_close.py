"""``BatchCloser.close_records`` on every SQL database: one result per request, in order; each
record compare-and-set; the path without ``UPDATE ... RETURNING`` (MySQL, MariaDB, old SQLite)
gives the same answers, and starts its transaction over when rows change under it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from dead_records import AUDIT, DeadStores, half_closed, make_dead_stores
from mltidy.backends.interface import BatchCloser
from mltidy.backends.mlflow.sql import MlflowSqlBackend
from mltidy.backends.optuna.sql import OptunaSqlBackend
from mltidy.model import CloseRequest, CloseStatus

COUNT = 1_100  # more than two statement chunks (backends/sql.py: STATEMENT_CHUNK)
END = datetime(2026, 1, 1, 12, 30, tzinfo=timezone.utc)

CASES = [
    pytest.param(("sqlite", True), id="sqlite-returning"),
    pytest.param(("sqlite", False), id="sqlite-locking"),
    pytest.param(("postgres", True), id="postgres", marks=pytest.mark.postgres),
    pytest.param(("mysql", False), id="mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=CASES)
def case(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[DeadStores, bool]]:
    kind, returning = request.param
    name = f"batch_{kind}_{os.getpid()}_{len(request.node.name)}"
    if kind == "sqlite":
        pair = (f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}")
    else:
        server = request.getfixturevalue(f"{kind}_server")
        pair = (server.create_database(f"m_{name}"), server.create_database(f"o_{name}"))
    yield make_dead_stores(*pair, name, COUNT), returning


def _backends(stores: DeadStores, returning: bool) -> tuple[Any, Any]:
    runs = MlflowSqlBackend(stores.mlflow_uri, writable=True)
    trials = OptunaSqlBackend(stores.optuna_url, writable=True)
    for backend in (runs, trials):
        assert isinstance(backend, BatchCloser)
        dialect = backend._engine.dialect
        assert bool(dialect.update_returning) is returning or dialect.name == "sqlite"
        dialect.update_returning = returning
    return runs, trials


def _ids(backend: Any) -> list[str]:
    return sorted(r.id for r in backend.read_many(_all_ids(backend)).values())


def _all_ids(backend: Any) -> list[str]:
    with backend._engine.connect() as conn:
        if isinstance(backend, MlflowSqlBackend):
            rows = conn.execute(text("SELECT run_uuid FROM runs"))
        else:
            rows = conn.execute(text("SELECT trial_id FROM trials"))
        return [str(r[0]) for r in rows]


def _request(record_id: str, state: str, n: int) -> CloseRequest:
    audit = {key: f"{key} of {record_id}" for key in AUDIT}
    return CloseRequest(record_id, state, END - timedelta(seconds=n), audit)


def test_one_result_per_request_in_order(case: tuple[DeadStores, bool]) -> None:
    stores, returning = case
    runs, trials = _backends(stores, returning)
    try:
        for backend, state in ((runs, "KILLED"), (trials, "FAIL")):
            ids = _ids(backend)
            assert len(ids) == COUNT
            done_before = backend.close_record(_request(ids[3], state, 3))
            assert done_before.status is CloseStatus.CLOSED
            requests = [_request(i, state, n) for n, i in enumerate(ids)]
            requests.insert(10, _request("123456789", state, 0))  # no such record
            results = backend.close_records(requests)
            assert len(results) == len(requests)
            statuses = [r.status for r in results]
            assert statuses[10] is CloseStatus.MISSING
            assert results[3].status is CloseStatus.NOT_RUNNING  # closed before
            assert results[3].state == state
            assert statuses.count(CloseStatus.CLOSED) == COUNT - 1
            again = backend.close_records(requests[:5])
            assert {r.status for r in again} == {CloseStatus.NOT_RUNNING}
            fresh = backend.read_many(ids)
            assert {r.state for r in fresh.values()} == {state}
            ended = {r.id: r.ended_at for r in fresh.values()} if backend is runs else {}
            if ended:
                assert ended[ids[7]] == END - timedelta(seconds=7)  # each its own end time
        assert half_closed(stores) == ([], 2 * COUNT)
    finally:
        runs.close()
        trials.close()


def test_rows_that_change_under_a_locking_batch_start_it_over(tmp_path: Path) -> None:
    stores = make_dead_stores(
        f"sqlite:///{tmp_path / 'm.db'}", f"sqlite:///{tmp_path / 'o.db'}", "locking", 50
    )
    runs, trials = _backends(stores, returning=False)
    ids = _ids(runs)
    updates: list[str] = []

    @event.listens_for(runs._engine, "before_cursor_execute")
    def meanwhile(conn: Any, cursor: Any, statement: str, *_: Any) -> None:
        # Another closer ends a run after this batch locked its rows and before it updates them
        # (sqlite's driver opens the transaction only at the UPDATE).
        if statement.startswith("UPDATE runs") and not updates:
            updates.append(statement)
            other = MlflowSqlBackend(stores.mlflow_uri, writable=True)
            assert other.close_record(_request(ids[0], "FAILED", 0)).status is CloseStatus.CLOSED
            other.close()

    try:
        results = runs.close_records([_request(i, "KILLED", n) for n, i in enumerate(ids)])
    finally:
        runs.close()
        trials.close()
    assert updates
    assert results[0].status is CloseStatus.NOT_RUNNING and results[0].state == "FAILED"
    assert {r.status for r in results[1:]} == {CloseStatus.CLOSED}
