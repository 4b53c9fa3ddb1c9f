"""Optuna RDB storages (sqlite, PostgreSQL, MySQL) read with SQLAlchemy Core: the fast path.

optuna's ``RDBStorage`` creates tables and checks/migrates the schema when constructed, and
listing RUNNING trials through its API costs one round of queries per study; so the read side
goes straight to the tables (``studies``, ``trials``, ``trial_heartbeats``,
``trial_user_attributes``, ``trial_system_attributes``) and never imports optuna. It is used for
the schema versions listed in ``schema_versions.py``; the registry sends other versions to
``optuna_sql_library.py``.

Reads stream: the RUNNING trials of all studies come from one query (server-side cursor where
the database has one) in partitions of :data:`CHUNK`, and each partition's attributes from one
``IN`` query per attribute table.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from mltidy.backends.interface import (
    Backend,
    Closer,
    CloseRequest,
    CloseResult,
    CloseStatus,
    Selection,
    StudyHealth,
    StudyReporter,
    TrialRetrier,
)
from mltidy.backends.optuna_time import rdb_to_utc, writes_naive_utc
from mltidy.backends.schema_versions import OPTUNA_REVISIONS, OPTUNA_SCHEMA_VERSION
from mltidy.backends.sql import (
    create_reader_engine,
    retry_locked,
    side_connection,
    table_names,
    translate_sql_error,
)
from mltidy.errors import NotAStore, StoreError
from mltidy.model import Record, RecordKind, StoreKind, utc_now
from mltidy.redact import redact

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.engine import Connection, Engine, Row

REQUIRED_TABLES = frozenset({"studies", "trials", "version_info"})
LINK_KEYS = ("mlflow_run_id",)
CHUNK = 500


def _schema() -> dict[str, Any]:
    from sqlalchemy import DateTime, Integer, String, column, table

    def attrs(name: str) -> Any:
        return table(
            name, column("trial_id", Integer), column("key", String), column("value_json", String)
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
        "trial_user_attributes": attrs("trial_user_attributes"),
        "trial_system_attributes": attrs("trial_system_attributes"),
        "version_info": table(
            "version_info", column("schema_version", Integer), column("library_version", String)
        ),
    }


class OptunaSqlBackend(Backend, Closer, TrialRetrier, StudyReporter):
    """An Optuna RDB storage, read without importing optuna."""

    kind = StoreKind.OPTUNA
    close_guarantee = (
        "compare-and-set: one transaction runs UPDATE trials ... WHERE state = 'RUNNING' and "
        "writes the audit system attributes only if that row changed"
    )

    def __init__(self, url: str, *, writable: bool = False) -> None:
        self.url = url
        self.uri = redact(url)
        self._engine: Engine = create_reader_engine(url, writable=writable)
        self._t = _schema()
        try:
            self.version = inspect_storage(self._engine, self.uri)
        except BaseException:
            self._engine.dispose()
            raise
        self._has_heartbeats = self.version.has_heartbeats
        self._schema_version = self.version.schema_version
        self._library_version = self.version.library_version
        self._naive_utc = writes_naive_utc(self._library_version)
        self.schema_known = self.version.known

    def describe(self) -> str:
        dialect = self._engine.dialect.name
        return (
            f"Optuna RDB storage ({dialect}), schema {self._schema_version}"
            f"{'/' + self.version.revision if self.version.revision else ''}, "
            f"set up by optuna {self._library_version}"
        )

    def _select(self) -> Select[Any]:
        from sqlalchemy import func, select

        trials, studies = self._t["trials"], self._t["studies"]
        columns = [
            trials.c.trial_id,
            trials.c.number,
            trials.c.state,
            trials.c.datetime_start,
            studies.c.study_id,
            studies.c.study_name,
        ]
        if self._has_heartbeats:
            beats = self._t["trial_heartbeats"]
            latest = (
                select(func.max(beats.c.heartbeat))
                .where(beats.c.trial_id == trials.c.trial_id)
                .scalar_subquery()
            )
            columns.append(latest.label("heartbeat"))
        return select(*columns).select_from(
            trials.join(studies, studies.c.study_id == trials.c.study_id)
        )

    def _db_clock_offset(self, conn: Connection) -> timedelta:
        return db_clock_offset(conn)

    def iter_active(self, selection: Selection) -> Iterator[Record]:
        from sqlalchemy.exc import SQLAlchemyError

        trials, studies = self._t["trials"], self._t["studies"]
        query = self._select().where(trials.c.state == "RUNNING")
        if selection.studies:
            query = query.where(studies.c.study_name.in_(selection.studies))
        try:
            with self._engine.connect() as conn, side_connection(self._engine, conn) as side:
                offset = self._db_clock_offset(conn) if self._has_heartbeats else timedelta(0)
                result = conn.execute(query, execution_options={"yield_per": CHUNK})
                for chunk in result.partitions():
                    attrs = self._attrs(side, [row.trial_id for row in chunk])
                    for row in chunk:
                        if str(row.state) == "RUNNING" or str(row.state).endswith(".RUNNING"):
                            yield self._record(row, attrs.get(row.trial_id, {}), offset)
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc

    def read(self, record_id: str) -> Record | None:
        from sqlalchemy.exc import SQLAlchemyError

        if not record_id.isdigit():
            return None
        trial_id = int(record_id)
        try:
            with self._engine.connect() as conn:
                offset = self._db_clock_offset(conn) if self._has_heartbeats else timedelta(0)
                row = conn.execute(self._select().where(self._t["trials"].c.trial_id == trial_id))
                found = row.first()
                if found is None:
                    return None
                return self._record(found, self._attrs(conn, [trial_id]).get(trial_id, {}), offset)
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc

    def _attrs(self, conn: Connection, trial_ids: Sequence[int]) -> dict[int, dict[str, str]]:
        from sqlalchemy import or_, select

        found: dict[int, dict[str, str]] = {}
        for name in ("trial_user_attributes", "trial_system_attributes"):
            attrs = self._t[name]
            query = select(attrs.c.trial_id, attrs.c.key, attrs.c.value_json).where(
                attrs.c.trial_id.in_(list(trial_ids)),
                or_(attrs.c.key.in_(LINK_KEYS), attrs.c.key.like("mltidy.%")),
            )
            for trial_id, key, value_json in conn.execute(query):
                found.setdefault(trial_id, {})[key] = _json_text(value_json)
        return found

    def _record(self, row: Row[Any], attrs: dict[str, str], offset: timedelta) -> Record:
        now = utc_now()
        heartbeat = getattr(row, "heartbeat", None)
        last = None
        if isinstance(heartbeat, datetime):
            aware = heartbeat.tzinfo is not None
            last = heartbeat if aware else (heartbeat - offset).replace(tzinfo=now.tzinfo)
        state = str(row.state).rsplit(".", 1)[-1]
        return Record(
            kind=RecordKind.OPTUNA_TRIAL,
            store=self.uri,
            id=str(row.trial_id),
            name=f"trial {row.number}",
            container=row.study_name,
            container_id=str(row.study_id),
            state=state,
            started_at=rdb_to_utc(row.datetime_start, naive_utc=self._naive_utc, now=now),
            last_activity_at=last,
            trial_number=row.number,
            tags=attrs,
        )

    def _to_store_time(self, value: datetime) -> datetime:
        """An aware time as this storage writes it: naive UTC (5.x) or naive local (4.x)."""
        if self._naive_utc:
            return value.astimezone(timezone.utc).replace(tzinfo=None)
        return value.astimezone().replace(tzinfo=None)

    def close_record(self, request: CloseRequest) -> CloseResult:
        from sqlalchemy import delete, insert, select, update

        if not request.record_id.isdigit():
            return CloseResult(CloseStatus.MISSING)
        trial_id = int(request.record_id)
        trials, attrs = self._t["trials"], self._t["trial_system_attributes"]

        def attempt() -> CloseResult:
            with self._engine.begin() as conn:
                changed = conn.execute(
                    update(trials)
                    .where(trials.c.trial_id == trial_id, trials.c.state == "RUNNING")
                    .values(
                        state=request.new_state,
                        datetime_complete=self._to_store_time(request.end_time),
                    )
                ).rowcount
                if changed == 1:
                    if request.attributes:
                        keys = list(request.attributes)
                        conn.execute(
                            delete(attrs).where(attrs.c.trial_id == trial_id, attrs.c.key.in_(keys))
                        )
                        conn.execute(
                            insert(attrs),
                            [
                                {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                                for k, v in request.attributes.items()
                            ],
                        )
                    return CloseResult(CloseStatus.CLOSED)
                state = conn.execute(
                    select(trials.c.state).where(trials.c.trial_id == trial_id)
                ).scalar()
            if state is None:
                return CloseResult(CloseStatus.MISSING)
            return CloseResult(CloseStatus.NOT_RUNNING, str(state).rsplit(".", 1)[-1])

        return retry_locked(attempt, self.uri)

    def enqueue_retry(self, trial_id: str, max_retry: int | None) -> int | None:
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        from mltidy.backends.optuna_retry import enqueue_retry

        trials = self._t["trials"]
        try:
            with self._engine.connect() as conn:
                study_id = conn.execute(
                    select(trials.c.study_id).where(trials.c.trial_id == int(trial_id))
                ).scalar()
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        if study_id is None:
            raise StoreError(f"{self.uri}: trial {trial_id} does not exist")
        try:
            from optuna.storages import RDBStorage

            storage = RDBStorage(self.url, skip_table_creation=True)
        except Exception as exc:
            raise StoreError(f"{self.uri}: optuna cannot open this storage ({exc})") from exc
        try:
            return enqueue_retry(storage, int(study_id), int(trial_id), max_retry)
        except Exception as exc:
            raise StoreError(f"{self.uri}: could not enqueue a retry ({exc})") from exc
        finally:
            storage.remove_session()
            storage.engine.dispose()

    def study_health(self, selection: Selection) -> list[StudyHealth]:
        from sqlalchemy import case, func, select
        from sqlalchemy.exc import SQLAlchemyError

        trials, studies = self._t["trials"], self._t["studies"]
        attrs = self._t["trial_system_attributes"]
        closed = (
            select(func.count())
            .select_from(attrs)
            .where(attrs.c.trial_id == trials.c.trial_id, attrs.c.key == "mltidy.closed_at")
            .scalar_subquery()
        )
        counts = (
            select(
                studies.c.study_name,
                func.count(trials.c.trial_id),
                func.sum(case((trials.c.state == "RUNNING", 1), else_=0)),
                func.sum(case((trials.c.state == "FAIL", 1), else_=0)),
                func.sum(case((closed > 0, 1), else_=0)),
            )
            .select_from(studies.outerjoin(trials, trials.c.study_id == studies.c.study_id))
            .group_by(studies.c.study_name)
            .order_by(studies.c.study_name)
        )
        spans = (
            select(studies.c.study_name, trials.c.datetime_start, trials.c.datetime_complete)
            .select_from(trials.join(studies, studies.c.study_id == trials.c.study_id))
            .where(trials.c.state == "FAIL")
        )
        if selection.studies:
            counts = counts.where(studies.c.study_name.in_(selection.studies))
            spans = spans.where(studies.c.study_name.in_(selection.studies))
        seconds: dict[str, float] = {}
        try:
            with self._engine.connect() as conn:
                rows = list(conn.execute(counts))
                for name, start, end in conn.execute(spans):
                    if isinstance(start, datetime) and isinstance(end, datetime):
                        seconds[name] = seconds.get(name, 0.0) + max(
                            (end - start).total_seconds(), 0.0
                        )
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        return [
            StudyHealth(
                study=name,
                trials=int(total or 0),
                running=int(running or 0),
                failed=int(failed or 0),
                closed_by_mltidy=int(closed_n or 0),
                failed_seconds=seconds.get(name, 0.0),
            )
            for name, total, running, failed, closed_n in rows
        ]

    def close(self) -> None:
        self._engine.dispose()


@dataclass(frozen=True)
class StorageVersion:
    """What an Optuna storage says about its schema.

    Attributes:
        schema_version: ``version_info.schema_version`` (12 since Optuna moved to alembic).
        library_version: the Optuna version that set the storage up.
        revision: the alembic revision in ``alembic_version``, where that table exists.
        has_heartbeats: whether ``trial_heartbeats`` exists (Optuna 2.6 and newer).
    """

    schema_version: int | None
    library_version: str | None
    revision: str | None
    has_heartbeats: bool

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
        tables = table_names(engine)
        if not tables >= REQUIRED_TABLES:
            hint = None
            if {"runs", "experiments"} <= tables:
                hint = "it looks like an MLflow tracking store: pass it with --mlflow"
            raise NotAStore(f"{uri} is not an Optuna storage", hint=hint)
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT schema_version, library_version FROM version_info")
            ).first()
            revision = None
            if "alembic_version" in tables:
                revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        raise translate_sql_error(exc, uri) from exc
    return StorageVersion(
        schema_version=row[0] if row else None,
        library_version=row[1] if row else None,
        revision=str(revision) if revision else None,
        has_heartbeats="trial_heartbeats" in tables,
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


def _json_text(value_json: str | None) -> str:
    """Attribute values are JSON; mltidy keeps their text form."""
    if value_json is None:
        return ""
    try:
        value = json.loads(value_json)
    except ValueError:
        return value_json
    return value if isinstance(value, str) else json.dumps(value)


__all__ = ["OptunaSqlBackend", "StorageVersion", "db_clock_offset", "inspect_storage"]
