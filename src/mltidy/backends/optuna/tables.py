"""Optuna's tables as the SQL fast path reads them, and the check that runs before either path.

:func:`inspect_storage` runs first on every Optuna RDB storage, on a read-only engine: it tells
an Optuna storage from anything else and reads its schema version, which picks the read path
(``sql.py`` or ``library.py``). The rest is what the fast path's queries share: the table
objects (only the columns it reads), attribute writes, the dashboard notes of studies, and the
database clock heartbeats are measured against.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any

from mltidy import names
from mltidy.backends.optuna.trials import decode
from mltidy.backends.schema_versions import OPTUNA_REVISIONS, OPTUNA_SCHEMA_VERSION
from mltidy.backends.sql import table_names, translate_sql_error
from mltidy.errors import NotAStore
from mltidy.model import StoreId, utc_now

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

REQUIRED_TABLES = frozenset({"studies", "trials", "version_info"})
#: Rows per partition of a streamed read.
CHUNK = 500


@cache
def lenient_datetime() -> Any:
    """``DateTime`` that reads a value it cannot parse (SQLite keeps any text a writer gave
    it) as ``None``, a time unknown, instead of failing the whole storage."""
    from sqlalchemy import DateTime
    from sqlalchemy.types import TypeDecorator

    class LenientDateTime(TypeDecorator[datetime]):
        impl = DateTime
        cache_ok = True

        def result_processor(self, dialect: Any, coltype: Any) -> Any:
            inner = super().result_processor(dialect, coltype)
            if inner is None:
                return None

            def process(value: Any) -> Any:
                try:
                    return inner(value)
                except (ValueError, TypeError, OverflowError):
                    return None

            return process

    return LenientDateTime


def tables() -> dict[str, Any]:
    """SQLAlchemy table objects for the columns the fast path reads and writes."""
    from sqlalchemy import Float, Integer, String, column, table

    DateTime = lenient_datetime()

    def attrs(name: str, owner: str) -> Any:
        return table(
            name, column(owner, Integer), column("key", String), column("value_json", String)
        )

    return {
        "studies": table("studies", column("study_id", Integer), column("study_name", String)),
        "trials": table(
            "trials",
            column("trial_id", Integer),
            column("number", Integer),
            column("study_id", Integer),
            column("state", String),
            column("datetime_start", DateTime),
            column("datetime_complete", DateTime),
        ),
        "trial_heartbeats": table(
            "trial_heartbeats", column("trial_id", Integer), column("heartbeat", DateTime)
        ),
        "trial_user_attributes": attrs("trial_user_attributes", "trial_id"),
        "trial_system_attributes": attrs("trial_system_attributes", "trial_id"),
        "study_user_attributes": attrs("study_user_attributes", "study_id"),
        "study_system_attributes": attrs("study_system_attributes", "study_id"),
        "version_info": table(
            "version_info", column("schema_version", Integer), column("library_version", String)
        ),
        "study_directions": table(
            "study_directions",
            column("study_id", Integer),
            column("direction", String),
            column("objective", Integer),
        ),
        "trial_values": table(
            "trial_values",
            column("trial_id", Integer),
            column("objective", Integer),
            column("value", Float),
        ),
    }


@dataclass(frozen=True)
class StorageVersion:
    """What an Optuna storage says about its schema.

    Attributes:
        schema_version: ``version_info.schema_version`` (12 since Optuna moved to alembic).
        library_version: the Optuna version that set the storage up.
        revision: the alembic revision in ``alembic_version``, where that table exists.
        has_heartbeats: whether ``trial_heartbeats`` exists (Optuna 2.6 and newer).
        tables: every table of the storage.
    """

    schema_version: int | None
    library_version: str | None
    revision: str | None
    has_heartbeats: bool
    tables: frozenset[str] = frozenset()

    @property
    def known(self) -> bool:
        """Whether the fast path knows this schema (else the library path reads it)."""
        return self.schema_version == OPTUNA_SCHEMA_VERSION and self.revision in OPTUNA_REVISIONS


def inspect_storage(engine: Engine, uri: str) -> StorageVersion:
    """The schema version of an Optuna storage, read before anything else touches it.

    Raises:
        NotAStore: the database lacks Optuna's tables (with a hint for MLflow stores).
        StoreError: the database cannot be read.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        found = table_names(engine)
        check_tables(found, uri)
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT schema_version, library_version FROM version_info")
            ).first()
            revision = None
            if "alembic_version" in found:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        raise translate_sql_error(exc, uri) from exc
    return storage_version(found, tuple(row) if row else None, revision)


def check_tables(found: set[str], uri: str) -> None:
    """Refuse a database without Optuna's tables.

    Raises:
        NotAStore: it lacks them (with a hint when it is an MLflow store).
    """
    if not found >= REQUIRED_TABLES:
        hint = None
        if {"runs", "experiments"} <= found:
            hint = "it looks like an MLflow tracking store: pass it with --mlflow"
        raise NotAStore(f"{uri} is not an Optuna storage", hint=hint)


def storage_version(
    found: set[str], version_row: tuple[Any, ...] | None, revision: Any
) -> StorageVersion:
    """A :class:`StorageVersion` from the tables, the ``version_info`` row and the alembic
    revision."""
    return StorageVersion(
        schema_version=version_row[0] if version_row else None,
        library_version=version_row[1] if version_row else None,
        revision=str(revision) if revision else None,
        has_heartbeats="trial_heartbeats" in found,
        tables=frozenset(found),
    )


def db_clock_offset(conn: Connection) -> timedelta:
    """How far the database's naive ``CURRENT_TIMESTAMP`` is ahead of UTC.

    Optuna writes heartbeats with the database's clock in the session's time zone, so
    heartbeat ages are measured against that clock, not ours. SQLite's ``CURRENT_TIMESTAMP`` is
    UTC by definition (and has one-second resolution, so measuring it would only add jitter).
    """
    from sqlalchemy import DateTime, func, select

    if conn.dialect.name == "sqlite":
        return timedelta(0)
    db_now = conn.execute(select(func.current_timestamp(type_=DateTime))).scalar()
    if not isinstance(db_now, datetime):
        return timedelta(0)
    now = utc_now()
    if db_now.tzinfo is not None:
        return timedelta(0)
    return db_now - now.replace(tzinfo=None)


def naive_linked_starts(
    engine: Engine, t: dict[str, Any], limit: int, uri: StoreId
) -> list[tuple[str, datetime]]:
    """Up to ``limit`` trials (newest first) that name their MLflow run, with their naive
    ``datetime_start`` as stored (``NaiveTimes.linked_starts``).

    Raises:
        StoreError: the storage cannot be read.
    """
    from sqlalchemy.exc import SQLAlchemyError

    try:
        with engine.connect() as conn:
            found = read_linked_starts(conn, t, limit)
    except SQLAlchemyError as exc:
        raise translate_sql_error(exc, uri) from exc
    return [(r, s) for r, s in found if isinstance(s, datetime) and s.tzinfo is None]


def read_linked_starts(conn: Connection, t: dict[str, Any], limit: int) -> list[tuple[str, Any]]:
    """Up to ``limit`` trials, newest first, with an ``mlflow_run_id`` (user or system
    attribute): (run id, ``datetime_start`` as stored)."""
    from sqlalchemy import select

    trials = t["trials"]
    found: dict[int, tuple[str, Any]] = {}
    for name in ("trial_user_attributes", "trial_system_attributes"):
        attrs = t[name]
        query = (
            select(trials.c.trial_id, attrs.c.value_json, trials.c.datetime_start)
            .select_from(trials.join(attrs, attrs.c.trial_id == trials.c.trial_id))
            .where(attrs.c.key == names.MLFLOW_RUN_ID, trials.c.datetime_start.is_not(None))
            .order_by(trials.c.trial_id.desc())
            .limit(limit)
        )
        for trial_id, value_json, start in conn.execute(query):
            run_id = decode(value_json)
            if isinstance(run_id, str) and run_id and trial_id not in found:
                found[trial_id] = (run_id, start)
    return [found[k] for k in sorted(found, reverse=True)[:limit]]


def replace_attrs(
    conn: Connection, table: Any, owner: tuple[str, int], values: Mapping[str, Any]
) -> None:
    """Set attributes of one trial or study (``owner``: its id column and id) inside the
    caller's transaction, stored as JSON the way optuna stores them."""
    from sqlalchemy import delete, insert

    if not values:
        return
    column, owner_id = owner
    conn.execute(delete(table).where(table.c[column] == owner_id, table.c.key.in_(list(values))))
    conn.execute(
        insert(table),
        [{column: owner_id, "key": k, "value_json": json.dumps(v)} for k, v in values.items()],
    )


def replace_attrs_of_many(
    conn: Connection, table: Any, owner: str, values: Mapping[int, Mapping[str, Any]]
) -> None:
    """Set attributes of many trials or studies (``owner``: the id column, ``trial_id`` or
    ``study_id``) inside the caller's transaction, stored as JSON the way optuna stores them
    (see :func:`~mltidy.backends.batch_writes.replace_keyed_rows`)."""
    from mltidy.backends.batch_writes import replace_keyed_rows

    replace_keyed_rows(
        conn,
        table,
        owner,
        values,
        lambda owner_id, k, v: {owner: owner_id, "key": k, "value_json": json.dumps(v)},
    )


def read_notes(
    conn: Connection, study_attrs: Any, study_ids: Sequence[int]
) -> dict[int, dict[str, Any]]:
    """optuna-dashboard's note attributes of these studies, decoded, by study id."""
    from sqlalchemy import select

    notes: dict[int, dict[str, Any]] = {}
    if not study_ids:
        return notes
    query = select(study_attrs.c.study_id, study_attrs.c.key, study_attrs.c.value_json).where(
        study_attrs.c.study_id.in_(list(study_ids)),
        study_attrs.c.key.like(f"{names.DASHBOARD_PREFIX}%"),
    )
    for study_id, key, value in conn.execute(query):
        notes.setdefault(study_id, {})[key] = decode(value)
    return notes


__all__ = [
    "CHUNK",
    "REQUIRED_TABLES",
    "StorageVersion",
    "check_tables",
    "db_clock_offset",
    "inspect_storage",
    "naive_linked_starts",
    "read_linked_starts",
    "read_notes",
    "replace_attrs",
    "replace_attrs_of_many",
    "storage_version",
    "tables",
]
