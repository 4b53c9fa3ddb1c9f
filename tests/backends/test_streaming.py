"""The fast path streams: RUNNING records come through a server-side cursor where the database
has one, in partitions, with one tag query per partition, so memory does not follow store size."""

from __future__ import annotations

import shutil
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine

from killed_jobs import KilledJobs
from mltidy.backends import Selection, open_backend
from mltidy.backends.identity import sqlite_file
from mltidy.backends.mlflow.sql import CHUNK
from mltidy.model import StoreKind


@contextmanager
def statements() -> Iterator[list[tuple[str, Any, Any]]]:
    """Every statement sent to a driver meanwhile: (SQL, parameters, DBAPI cursor)."""
    seen: list[tuple[str, Any, Any]] = []

    def catch(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters, cursor))

    event.listen(Engine, "before_cursor_execute", catch)
    try:
        yield seen
    finally:
        event.remove(Engine, "before_cursor_execute", catch)


def _add_running_runs(path: Path, count: int) -> None:
    """Rows by hand on top of the real store: many RUNNING runs, each with a provenance tag."""
    with sqlite3.connect(path) as conn:
        experiment = conn.execute("SELECT min(experiment_id) FROM experiments").fetchone()[0]
        for n in range(count):
            run_id = uuid.uuid4().hex
            conn.execute(
                "INSERT INTO runs (run_uuid, name, user_id, status, start_time, lifecycle_stage,"
                " experiment_id, artifact_uri, source_type) VALUES (?, ?, 'u', 'RUNNING', ?,"
                " 'active', ?, '', 'LOCAL')",
                (run_id, f"bulk-{n}", 1_700_000_000_000 + n, experiment),
            )
            conn.execute(
                "INSERT INTO tags (key, value, run_uuid) VALUES ('mltidy.host', 'gpu-01', ?)",
                (run_id,),
            )
    conn.close()


def test_tags_are_read_one_partition_at_a_time(
    sqlite_world: KilledJobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    source = sqlite_file(sqlite_world.mlflow_uri)
    assert source is not None
    copy = tmp_path / "mlflow.db"
    shutil.copy(source, copy)
    _add_running_runs(copy, 2 * CHUNK + 7)
    monkeypatch.setenv("MLTIDY_READ_PATH", "fast")
    # SQLite files are scanned through sqlite3 itself: its trace shows every statement.
    seen: list[str] = []
    connect = sqlite3.connect

    def traced(*args: Any, **kwargs: Any) -> sqlite3.Connection:
        conn = connect(*args, **kwargs)
        conn.set_trace_callback(seen.append)
        return conn

    monkeypatch.setattr(sqlite3, "connect", traced)
    with open_backend(StoreKind.MLFLOW, f"sqlite:///{copy}") as backend:
        records = list(backend.iter_active(Selection()))
    monkeypatch.undo()
    bulk = [r for r in records if r.name.startswith("bulk-")]
    assert len(bulk) == 2 * CHUNK + 7
    assert all(r.tags.get("mltidy.host") == "gpu-01" for r in bulk)
    main = [sql for sql in seen if "FROM runs" in sql and "latest_metrics" in sql]
    tag_queries = [sql for sql in seen if "FROM tags" in sql]
    assert len(main) == 1
    assert len(tag_queries) == 3  # one per partition of CHUNK runs, not one per run


@pytest.mark.postgres
@pytest.mark.parametrize("kind", [StoreKind.MLFLOW, StoreKind.OPTUNA], ids=lambda k: k.value)
def test_postgres_streams_through_a_server_side_cursor(
    postgres_world: KilledJobs, kind: StoreKind, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = postgres_world.mlflow_uri if kind is StoreKind.MLFLOW else postgres_world.optuna_url
    marker = "FROM runs" if kind is StoreKind.MLFLOW else "FROM trials"
    monkeypatch.setenv("MLTIDY_READ_PATH", "fast")
    with open_backend(kind, uri) as backend, statements() as seen:
        assert list(backend.iter_active(Selection()))
    main = [cursor for sql, _, cursor in seen if marker in sql]
    lookups = [cursor for sql, _, cursor in seen if "attributes" in sql or "FROM tags" in sql]
    assert main and all(cursor.name for cursor in main)  # psycopg2 named cursor: server-side
    assert lookups and not any(cursor.name for cursor in lookups)
