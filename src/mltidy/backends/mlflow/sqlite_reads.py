"""The reads a scan makes of an MLflow SQLite store, through the standard library's sqlite3.

The same queries as the SQLAlchemy Core ones in ``sql.py`` (the RUNNING runs with their
experiment and newest metric time, then their tags, one ``IN`` query per :data:`CHUNK` runs),
written out for SQLite: a scan of a local file should not pay SQLAlchemy's import, which costs
more than the scan itself (``SqliteReader`` in ``backends/sql.py``). Server databases, and the
reads only other commands make, keep the Core queries.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from mltidy.backends.mlflow.runs import Rhythm
from mltidy.backends.mlflow.schema import CHUNK, check_tables, rhythms_of
from mltidy.backends.sql import SqliteReader, chunks, marks
from mltidy.model import Selection


class RunRow(NamedTuple):
    """A run as the queries return it (the columns of ``MlflowSqlBackend._select``)."""

    run_uuid: str
    name: str | None
    user_id: str | None
    status: str
    start_time: int | None
    end_time: int | None
    experiment_id: int
    experiment_name: str
    last_metric: int | None


RUNS = """
SELECT r.run_uuid, r.name, r.user_id, r.status, r.start_time, r.end_time, r.experiment_id,
       e.name,
       (SELECT max(m.timestamp) FROM latest_metrics m WHERE m.run_uuid = r.run_uuid)
FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
WHERE r.lifecycle_stage = 'active'"""

Tags = dict[str, dict[str, str]]


class SqliteRuns:
    """The scan's reads of one MLflow SQLite file (errors are ``sqlite3.Error``)."""

    def __init__(self, path: Path) -> None:
        self.reader = SqliteReader(path)

    def inspect(self, uri: str) -> tuple[str | None, set[str]]:
        """The alembic revision and the tables (``schema.inspect_store``'s answer).

        Raises:
            NotAStore: the file lacks MLflow's core tables.
            sqlite3.Error: it cannot be read.
        """
        with self.reader.connect() as conn:
            found = self.reader.table_names(conn)
            check_tables(found, uri)
            row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
        revision = row[0] if row else None
        return (str(revision) if revision else None), found

    def active(
        self, selection: Selection, wanted: tuple[Sequence[str], Sequence[str]]
    ) -> Iterator[tuple[list[RunRow], Tags]]:
        """The RUNNING runs of active, selected experiments, :data:`CHUNK` at a time, each
        chunk with the ``wanted`` tags (keys, prefixes) of its runs."""
        where, params = _selected(selection)
        sql = RUNS + " AND r.status = 'RUNNING'" + where
        with self.reader.connect() as conn:
            cursor = conn.execute(sql, params)
            while chunk := cursor.fetchmany(CHUNK):
                rows = [RunRow._make(row) for row in chunk]
                yield rows, _tags(conn, [row.run_uuid for row in rows], wanted)

    def by_ids(
        self,
        run_ids: Sequence[str],
        wanted: tuple[Sequence[str], Sequence[str]],
        conn: sqlite3.Connection,
    ) -> tuple[list[RunRow], Tags]:
        """These runs (active ones, any state) and their ``wanted`` tags, read on ``conn``
        (one of :attr:`reader`'s, or a writer's that is open anyway)."""
        rows: list[RunRow] = []
        tags: Tags = {}
        for chunk in chunks(run_ids, CHUNK):
            sql = RUNS + f" AND r.run_uuid IN ({marks(len(chunk))})"
            rows += [RunRow._make(row) for row in conn.execute(sql, list(chunk))]
            tags.update(_tags(conn, chunk, wanted))
        return rows, tags

    @staticmethod
    def position(conn: sqlite3.Connection) -> int:
        """The largest ``rowid`` of ``runs``: a run added later gets a larger one (SQLite picks
        one more than the largest; ``VACUUM`` may renumber, which makes it smaller)."""
        row = conn.execute("SELECT max(rowid) FROM runs").fetchone()
        return int(row[0] or 0)

    @staticmethod
    def ended_or_running(
        conn: sqlite3.Connection, selection: Selection, since_ms: int, ended: Sequence[str]
    ) -> list[RunRow]:
        """Every RUNNING run, and every run that ended (``ended`` states) at or after
        ``since_ms``: one read of the whole table."""
        where, params = _selected(selection)
        sql = (
            RUNS + f" AND (r.status = 'RUNNING' OR (r.status IN ({marks(len(ended))})"
            " AND r.end_time >= ?))" + where
        )
        return [RunRow._make(row) for row in conn.execute(sql, [*ended, since_ms, *params])]

    @staticmethod
    def changed_since(
        conn: sqlite3.Connection, selection: Selection, position: int, running: Sequence[str]
    ) -> list[RunRow]:
        """The runs added after ``position`` and the ``running`` ones, in any state: the only
        runs that can have ended since a poll that saw ``running`` RUNNING and no run beyond
        ``position``. Ranges of ``rowid`` and of the primary key: nothing else is read."""
        where, params = _selected(selection)
        rows = conn.execute(RUNS + " AND r.rowid > ?" + where, [position, *params]).fetchall()
        for chunk in chunks(running, CHUNK):
            sql = RUNS + f" AND r.run_uuid IN ({marks(len(chunk))})" + where
            rows += conn.execute(sql, [*chunk, *params]).fetchall()
        unique = {row[0]: row for row in rows}
        return [RunRow._make(row) for row in unique.values()]


def _selected(selection: Selection) -> tuple[str, list[Any]]:
    """The conditions of active, selected experiments, and their parameters."""
    where = " AND e.lifecycle_stage = 'active'"
    if not selection.experiments:
        return where, []
    ids = [int(e) for e in selection.experiments if e.isdigit()]
    where += (
        f" AND (e.name IN ({marks(len(selection.experiments))})"
        f" OR e.experiment_id IN ({marks(len(ids))}))"
    )
    return where, [*selection.experiments, *ids]


def rhythms(conn: sqlite3.Connection, run_ids: Sequence[str]) -> dict[str, Rhythm]:
    """The rhythms of these runs (``schema.read_rhythms``, its two queries written out).

    The gaps are computed in Python: a window function over the same rows in SQLite was
    measured several times slower (MLflow's metric indexes do not cover the timestamps)."""

    def latest_of(chunk: list[str]) -> Iterator[tuple[str, str, int | None]]:
        sql = (
            "SELECT run_uuid, key, timestamp FROM latest_metrics "
            f"WHERE run_uuid IN ({marks(len(chunk))})"
        )
        return conn.execute(sql, chunk)

    def history_of(runs: list[str], keys: list[str]) -> Iterator[tuple[str, str, int]]:
        sql = (
            "SELECT run_uuid, key, timestamp FROM metrics "
            f"WHERE run_uuid IN ({marks(len(runs))}) AND key IN ({marks(len(keys))})"
        )
        return conn.execute(sql, [*runs, *keys])

    return rhythms_of(run_ids, latest_of, history_of)


def tags_of(
    conn: sqlite3.Connection, run_ids: Sequence[str], wanted: tuple[Sequence[str], Sequence[str]]
) -> Tags:
    """The ``wanted`` tags of these runs, one query per :data:`CHUNK` runs."""
    found: Tags = {}
    for chunk in chunks(run_ids, CHUNK):
        found.update(_tags(conn, chunk, wanted))
    return found


def _tags(
    conn: sqlite3.Connection,
    run_ids: Sequence[str],
    wanted: tuple[Sequence[str], Sequence[str]],
) -> Tags:
    """``schema.read_tags`` for one chunk of runs."""
    keys, prefixes = wanted
    if not run_ids:
        return {}
    like = "".join(' OR "key" LIKE ?' for _ in prefixes)
    sql = (
        f'SELECT run_uuid, "key", value FROM tags WHERE run_uuid IN ({marks(len(run_ids))}) '
        f'AND ("key" IN ({marks(len(keys))}){like})'
    )
    params = [*run_ids, *keys, *(f"{p}%" for p in prefixes)]
    found: Tags = {}
    for run_id, key, value in conn.execute(sql, params).fetchall():
        found.setdefault(run_id, {})[key] = value if value is not None else ""
    return found


__all__ = ["RunRow", "SqliteRuns", "rhythms", "tags_of"]
