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

from mltidy.backends.identity import store_id
from mltidy.backends.interface import Backend, Closer, StudyReporter, StudyWatcher, TrialRetrier
from mltidy.backends.optuna_sql_links import OptunaSqlLinks
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
from mltidy.model import (
    CloseRequest,
    CloseResult,
    CloseStatus,
    Record,
    RecordKind,
    Selection,
    StoreKind,
    StudyHealth,
    StudyProgress,
    utc_now,
)

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.engine import Connection, Engine, Row

REQUIRED_TABLES = frozenset({"studies", "trials", "version_info"})
LINK_KEYS = ("mlflow_run_id",)
CHUNK = 500
#: The study user attribute ``watch`` reads as the study's trial budget.
BUDGET_KEY = "mltidy.budget"


def _schema() -> dict[str, Any]:
    from sqlalchemy import DateTime, Float, Integer, String, column, table

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
        "study_directions": table(
            "study_directions",
            column("study_id", Integer),
            column("direction", String),
            column("objective", Integer),
        ),
        "study_user_attributes": table(
            "study_user_attributes",
            column("study_id", Integer),
            column("key", String),
            column("value_json", String),
        ),
        "trial_values": table(
            "trial_values",
            column("trial_id", Integer),
            column("objective", Integer),
            column("value", Float),
        ),
    }


class OptunaSqlBackend(Backend, Closer, TrialRetrier, StudyReporter, StudyWatcher, OptunaSqlLinks):
    """An Optuna RDB storage, read without importing optuna."""

    kind = StoreKind.OPTUNA
    close_guarantee = (
        "compare-and-set: one transaction runs UPDATE trials ... WHERE state = 'RUNNING' and "
        "writes the audit system attributes only if that row changed"
    )

    def __init__(self, url: str, *, writable: bool = False) -> None:
        self.url = url
        self.uri = store_id(self.kind, url)
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
        self._tables: set[str] = set(self.version.tables)

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

    def study_progress(self, selection: Selection) -> list[StudyProgress]:
        from sqlalchemy import case, func, select
        from sqlalchemy.exc import SQLAlchemyError

        trials, studies = self._t["trials"], self._t["studies"]

        def count(state: str) -> Any:
            return func.sum(case((trials.c.state == state, 1), else_=0))

        query = (
            select(
                studies.c.study_id,
                studies.c.study_name,
                func.count(trials.c.trial_id).label("total"),
                count("RUNNING").label("running"),
                count("WAITING").label("waiting"),
                count("COMPLETE").label("complete"),
                count("PRUNED").label("pruned"),
                count("FAIL").label("failed"),
                func.min(trials.c.datetime_start).label("first_start"),
                func.max(trials.c.datetime_start).label("last_start"),
                func.max(trials.c.datetime_complete).label("last_complete"),
            )
            .select_from(studies.outerjoin(trials, trials.c.study_id == studies.c.study_id))
            .group_by(studies.c.study_id, studies.c.study_name)
            .order_by(studies.c.study_name)
        )
        if selection.studies:
            query = query.where(studies.c.study_name.in_(selection.studies))
        now = utc_now()
        found: list[StudyProgress] = []
        try:
            with self._engine.connect() as conn:
                for row in list(conn.execute(query)):
                    directions = self._directions(conn, row.study_id)
                    best = self._best(conn, row.study_id, directions)
                    found.append(
                        StudyProgress(
                            study=row.study_name,
                            study_id=str(row.study_id),
                            directions=directions,
                            trials=int(row.total or 0),
                            running=int(row.running or 0),
                            waiting=int(row.waiting or 0),
                            complete=int(row.complete or 0),
                            pruned=int(row.pruned or 0),
                            failed=int(row.failed or 0),
                            first_started_at=self._time(row.first_start, now),
                            last_started_at=self._time(row.last_start, now),
                            last_completed_at=self._time(row.last_complete, now),
                            best_value=best[0] if best else None,
                            best_trial_number=best[1] if best else None,
                            budget=self._budget(conn, row.study_id),
                        )
                    )
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        return found

    def _time(self, value: Any, now: datetime) -> datetime | None:
        if not isinstance(value, datetime):
            return None
        return rdb_to_utc(value, naive_utc=self._naive_utc, now=now)

    def _directions(self, conn: Connection, study_id: int) -> tuple[str, ...]:
        from sqlalchemy import select

        if "study_directions" not in self._tables:
            return ()
        table = self._t["study_directions"]
        rows = conn.execute(
            select(table.c.direction)
            .where(table.c.study_id == study_id)
            .order_by(table.c.objective)
        )
        return tuple(str(direction).rsplit(".", 1)[-1] for (direction,) in rows)

    def _best(
        self, conn: Connection, study_id: int, directions: tuple[str, ...]
    ) -> tuple[float, int] | None:
        """The best completed trial of a single-objective study (multi-objective: none)."""
        from sqlalchemy import select

        if len(directions) != 1 or "trial_values" not in self._tables:
            return None
        trials, values = self._t["trials"], self._t["trial_values"]
        order = values.c.value.desc() if directions[0] == "MAXIMIZE" else values.c.value.asc()
        row = conn.execute(
            select(values.c.value, trials.c.number)
            .select_from(trials.join(values, values.c.trial_id == trials.c.trial_id))
            .where(
                trials.c.study_id == study_id,
                trials.c.state == "COMPLETE",
                values.c.objective == 0,
                values.c.value.is_not(None),
            )
            .order_by(order, trials.c.number)
            .limit(1)
        ).first()
        return (float(row[0]), int(row[1])) if row else None

    def _budget(self, conn: Connection, study_id: int) -> int | None:
        from sqlalchemy import select

        if "study_user_attributes" not in self._tables:
            return None
        table = self._t["study_user_attributes"]
        value = conn.execute(
            select(table.c.value_json).where(
                table.c.study_id == study_id, table.c.key == BUDGET_KEY
            )
        ).scalar()
        return parse_budget(_json_text(value) if value is not None else None)

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
        tables=frozenset(tables),
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


def parse_budget(text: str | None) -> int | None:
    """A trial budget from an attribute's text form; ``None`` when absent or not a positive int."""
    if text is None:
        return None
    try:
        budget = int(float(text))
    except ValueError:
        return None
    return budget if budget > 0 else None


def _json_text(value_json: str | None) -> str:
    """Attribute values are JSON; mltidy keeps their text form."""
    if value_json is None:
        return ""
    try:
        value = json.loads(value_json)
    except ValueError:
        return value_json
    return value if isinstance(value, str) else json.dumps(value)


__all__ = [
    "BUDGET_KEY",
    "OptunaSqlBackend",
    "StorageVersion",
    "db_clock_offset",
    "inspect_storage",
    "parse_budget",
]
