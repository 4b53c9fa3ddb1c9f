"""The reads a scan makes of an Optuna SQLite storage, through the standard library's sqlite3.

The same queries as the SQLAlchemy Core ones in ``sql.py`` (the RUNNING trials with their
study and newest Optuna heartbeat, then their attributes, one ``IN`` query per :data:`CHUNK`
trials and attribute table), written out for SQLite, so that a scan of a local file does not
pay SQLAlchemy's import (``SqliteReader`` in ``backends/sql.py``). SQLite keeps Optuna's
``DateTime`` columns as text; it is parsed here as SQLAlchemy would.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, NamedTuple

from mltidy import names
from mltidy.backends.optuna.tables import CHUNK, StorageVersion, check_tables, storage_version
from mltidy.backends.optuna.trials import json_text
from mltidy.backends.sql import SqliteReader, chunks, marks
from mltidy.model import Selection


class TrialRow(NamedTuple):
    """A trial as the queries return it (the columns of ``OptunaSqlBackend._select``)."""

    trial_id: int
    number: int
    state: str
    datetime_start: datetime | None
    study_id: int
    study_name: str
    heartbeat: datetime | None


Attrs = dict[int, dict[str, str]]
ATTRIBUTE_TABLES = ("trial_user_attributes", "trial_system_attributes")


def _when(value: Any) -> datetime | None:
    """A ``DateTime`` column as SQLite holds it (``2026-01-01 10:00:00.123456``), naive."""
    if value is None or isinstance(value, datetime):
        return value
    try:
        return datetime.fromisoformat(str(value))
    except ValueError:
        return None


class SqliteTrials:
    """The scan's reads of one Optuna SQLite file (errors are ``sqlite3.Error``)."""

    def __init__(self, path: Path) -> None:
        self.reader = SqliteReader(path)

    def inspect(self, uri: str) -> StorageVersion:
        """``tables.inspect_storage``'s answer.

        Raises:
            NotAStore: the file lacks Optuna's tables.
            sqlite3.Error: it cannot be read.
        """
        with self.reader.connect() as conn:
            found = self.reader.table_names(conn)
            check_tables(found, uri)
            row = conn.execute("SELECT schema_version, library_version FROM version_info")
            version = row.fetchone()
            revision = None
            if "alembic_version" in found:
                revisions = conn.execute("SELECT version_num FROM alembic_version").fetchone()
                revision = revisions[0] if revisions else None
        return storage_version(found, tuple(version) if version else None, revision)

    @staticmethod
    def _query(heartbeats: bool) -> str:
        latest = (
            "(SELECT max(h.heartbeat) FROM trial_heartbeats h WHERE h.trial_id = t.trial_id)"
            if heartbeats
            else "NULL"
        )
        return (
            "SELECT t.trial_id, t.number, t.state, t.datetime_start, s.study_id, s.study_name, "
            f"{latest} FROM trials t JOIN studies s ON s.study_id = t.study_id WHERE 1 = 1"
        )

    def active(
        self, selection: Selection, heartbeats: bool
    ) -> Iterator[tuple[list[TrialRow], Attrs]]:
        """The RUNNING trials of the selected studies, :data:`CHUNK` at a time, each chunk with
        its trials' attributes."""
        sql = self._query(heartbeats) + " AND t.state = 'RUNNING'"
        params: list[Any] = []
        if selection.studies:
            sql += f" AND s.study_name IN ({marks(len(selection.studies))})"
            params += selection.studies
        with self.reader.connect() as conn:
            cursor = conn.execute(sql, params)
            while chunk := cursor.fetchmany(CHUNK):
                rows = [_row(row) for row in chunk]
                yield rows, _attrs(conn, [row.trial_id for row in rows])

    def by_ids(
        self,
        trial_ids: Sequence[int],
        heartbeats: bool,
        conn: sqlite3.Connection,
        keys: Sequence[str] | None = None,
    ) -> tuple[list[TrialRow], Attrs]:
        """These trials (any state) and their attributes (only ``keys`` when given), read on
        ``conn`` (one of :attr:`reader`'s, or a writer's that is open anyway)."""
        rows: list[TrialRow] = []
        attrs: Attrs = {}
        for chunk in chunks(trial_ids, CHUNK):
            sql = self._query(heartbeats) + f" AND t.trial_id IN ({marks(len(chunk))})"
            rows += [_row(row) for row in conn.execute(sql, list(chunk))]
            attrs.update(_attrs(conn, chunk, keys))
        return rows, attrs


def _row(row: tuple[Any, ...]) -> TrialRow:
    trial_id, number, state, start, study_id, study, heartbeat = row
    return TrialRow(trial_id, number, state, _when(start), study_id, study, _when(heartbeat))


def _attrs(
    conn: sqlite3.Connection, trial_ids: Sequence[int], only: Sequence[str] | None = None
) -> Attrs:
    """``OptunaSqlBackend._attrs`` for one chunk of trials."""
    found: Attrs = {}
    if not trial_ids:
        return found
    keys = names.TRIAL_LINK_KEYS if only is None else only
    prefix = "" if only is not None else ' OR "key" LIKE ?'
    for table in ATTRIBUTE_TABLES:
        sql = (
            f'SELECT trial_id, "key", value_json FROM {table} '
            f"WHERE trial_id IN ({marks(len(trial_ids))}) "
            f'AND ("key" IN ({marks(len(keys))}){prefix})'
        )
        params = [*trial_ids, *keys, *([f"{names.PREFIX}%"] if only is None else [])]
        for trial_id, key, value_json in conn.execute(sql, params).fetchall():
            found.setdefault(trial_id, {})[key] = json_text(value_json)
    return found


__all__ = ["SqliteTrials", "TrialRow"]
