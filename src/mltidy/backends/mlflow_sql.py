"""MLflow SQL tracking stores (sqlite, PostgreSQL, MySQL) read with SQLAlchemy Core: the fast path.

The read side is a couple of queries over MLflow's long-stable tables (``runs``, ``experiments``,
``tags``, ``latest_metrics``); mlflow itself is not imported, because importing it costs seconds
and because MLflow's own ``SqlAlchemyStore`` would create and migrate tables when opened, which a
read must never do. It is used for the schema revisions listed in ``schema_versions.py``; the
registry sends other revisions to ``mlflow_sql_library.py``.

Reads stream: the RUNNING runs come from one query through a server-side cursor where the
database has one, in partitions of :data:`CHUNK` rows, and each partition's tags come from one
``IN`` query. Memory follows the partition size, not the number of runs in the store.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from mltidy.backends.identity import store_id
from mltidy.backends.interface import Backend, Closer, RunDeclutterer, RunHistory
from mltidy.backends.mlflow_sql_links import MlflowSqlLinks
from mltidy.backends.schema_versions import mlflow_fast_revisions
from mltidy.backends.sql import (
    create_reader_engine,
    local_artifact_count,
    retry_locked,
    side_connection,
    table_names,
    translate_sql_error,
)
from mltidy.errors import NotAStore
from mltidy.model import (
    CloseRequest,
    CloseResult,
    CloseStatus,
    Record,
    RecordKind,
    RunContents,
    Selection,
    StoreKind,
    from_epoch_ms,
    utc_now,
)

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.engine import Connection, Engine, Row

#: Without these tables a database is not an MLflow tracking store at all.
IDENTITY_TABLES = frozenset({"alembic_version", "runs", "experiments"})
#: The tables the fast path reads.
REQUIRED_TABLES = IDENTITY_TABLES | {"tags", "latest_metrics"}
TAG_PREFIXES = ("mltidy.", "optuna.")
TAG_KEYS = ("mlflow.user", "mlflow.runName", "mlflow.parentRunId")
CHUNK = 500
ENDED = ("FINISHED", "FAILED", "KILLED")


def _schema() -> dict[str, Any]:
    from sqlalchemy import column, table

    return {
        "runs": table(
            "runs",
            column("run_uuid"),
            column("name"),
            column("user_id"),
            column("status"),
            column("start_time"),
            column("end_time"),
            column("lifecycle_stage"),
            column("experiment_id"),
            column("artifact_uri"),
            column("deleted_time"),
        ),
        "params": table("params", column("key"), column("run_uuid")),
        "experiments": table(
            "experiments", column("experiment_id"), column("name"), column("lifecycle_stage")
        ),
        "tags": table("tags", column("key"), column("value"), column("run_uuid")),
        "latest_metrics": table(
            "latest_metrics", column("key"), column("timestamp"), column("run_uuid")
        ),
    }


class MlflowSqlBackend(Backend, Closer, RunDeclutterer, RunHistory, MlflowSqlLinks):
    """An MLflow tracking store in a SQL database, read without importing mlflow."""

    kind = StoreKind.MLFLOW
    close_guarantee = (
        "compare-and-set: one transaction runs UPDATE runs ... WHERE status = 'RUNNING' and "
        "writes the audit tags only if that row changed"
    )

    def __init__(self, url: str, *, writable: bool = False) -> None:
        self.url = url
        self.uri = store_id(self.kind, url)
        self._engine: Engine = create_reader_engine(url, writable=writable)
        self._t = _schema()
        try:
            self._revision, tables = inspect_store(self._engine, self.uri)
        except BaseException:
            self._engine.dispose()
            raise
        self.schema_known = self._revision in mlflow_fast_revisions() and tables >= REQUIRED_TABLES

    @property
    def revision(self) -> str | None:
        """The store's alembic revision (``None`` when ``alembic_version`` is empty)."""
        return self._revision

    def describe(self) -> str:
        dialect = self._engine.dialect.name
        return f"MLflow SQL store ({dialect}), schema revision {self._revision or 'unknown'}"

    def _select(self) -> Select[Any]:
        from sqlalchemy import func, select

        runs, exps, metrics = self._t["runs"], self._t["experiments"], self._t["latest_metrics"]
        last_metric = (
            select(func.max(metrics.c.timestamp))
            .where(metrics.c.run_uuid == runs.c.run_uuid)
            .scalar_subquery()
        )
        return (
            select(
                runs.c.run_uuid,
                runs.c.name,
                runs.c.user_id,
                runs.c.status,
                runs.c.start_time,
                runs.c.end_time,
                runs.c.experiment_id,
                exps.c.name.label("experiment_name"),
                last_metric.label("last_metric"),
            )
            .select_from(runs.join(exps, exps.c.experiment_id == runs.c.experiment_id))
            .where(runs.c.lifecycle_stage == "active")
        )

    def iter_active(self, selection: Selection) -> Iterator[Record]:
        from sqlalchemy import or_
        from sqlalchemy.exc import SQLAlchemyError

        runs, exps = self._t["runs"], self._t["experiments"]
        query = self._select().where(runs.c.status == "RUNNING", exps.c.lifecycle_stage == "active")
        if selection.experiments:
            ids = [int(e) for e in selection.experiments if e.isdigit()]
            query = query.where(
                or_(exps.c.name.in_(selection.experiments), exps.c.experiment_id.in_(ids))
            )
        try:
            with self._engine.connect() as conn, side_connection(self._engine, conn) as side:
                result = conn.execute(query, execution_options={"yield_per": CHUNK})
                for chunk in result.partitions():
                    tags = self._tags(side, [row.run_uuid for row in chunk])
                    for row in chunk:
                        # Never trust the filter alone: some compatible stores ignore it.
                        if row.status == "RUNNING":
                            yield self._record(row, tags.get(row.run_uuid, {}))
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc

    def read(self, record_id: str) -> Record | None:
        from sqlalchemy.exc import SQLAlchemyError

        runs = self._t["runs"]
        try:
            with self._engine.connect() as conn:
                row = conn.execute(self._select().where(runs.c.run_uuid == record_id)).first()
                if row is None:
                    return None
                return self._record(row, self._tags(conn, [record_id]).get(record_id, {}))
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc

    def _tags(self, conn: Connection, run_ids: Sequence[str]) -> dict[str, dict[str, str]]:
        from sqlalchemy import or_, select

        tags = self._t["tags"]
        wanted = or_(
            tags.c.key.in_(TAG_KEYS), *(tags.c.key.like(f"{prefix}%") for prefix in TAG_PREFIXES)
        )
        query = select(tags.c.run_uuid, tags.c.key, tags.c.value).where(
            tags.c.run_uuid.in_(list(run_ids)), wanted
        )
        found: dict[str, dict[str, str]] = {}
        for run_id, key, value in conn.execute(query):
            found.setdefault(run_id, {})[key] = value if value is not None else ""
        return found

    def _record(self, row: Row[Any], tags: dict[str, str]) -> Record:
        return Record(
            kind=RecordKind.MLFLOW_RUN,
            store=self.uri,
            id=row.run_uuid,
            name=row.name or tags.get("mlflow.runName") or row.run_uuid,
            container=row.experiment_name,
            container_id=str(row.experiment_id),
            state=row.status,
            started_at=from_epoch_ms(row.start_time),
            last_activity_at=from_epoch_ms(row.last_metric),
            user=row.user_id or tags.get("mlflow.user"),
            tags=tags,
            ended_at=None if row.status == "RUNNING" else from_epoch_ms(row.end_time),
        )

    def iter_ended_runs(self, selection: Selection, since: datetime) -> Iterator[Record]:
        from sqlalchemy import or_
        from sqlalchemy.exc import SQLAlchemyError

        runs, exps = self._t["runs"], self._t["experiments"]
        since_ms = int(since.timestamp() * 1000)
        query = (
            self._select()
            .where(
                runs.c.status.in_(ENDED),
                runs.c.end_time >= since_ms,
                exps.c.lifecycle_stage == "active",
            )
            .order_by(runs.c.end_time)
        )
        if selection.experiments:
            ids = [int(e) for e in selection.experiments if e.isdigit()]
            query = query.where(
                or_(exps.c.name.in_(selection.experiments), exps.c.experiment_id.in_(ids))
            )
        try:
            with self._engine.connect() as conn:
                rows = list(conn.execute(query))
                for chunk in _chunks(rows, CHUNK):
                    tags = self._tags(conn, [row.run_uuid for row in chunk])
                    for row in chunk:
                        if row.status in ENDED and row.end_time is not None:
                            yield self._record(row, tags.get(row.run_uuid, {}))
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc

    def close_record(self, request: CloseRequest) -> CloseResult:
        from sqlalchemy import select, update

        runs = self._t["runs"]
        end_ms = int(request.end_time.timestamp() * 1000)

        def attempt() -> CloseResult:
            with self._engine.begin() as conn:
                changed = conn.execute(
                    update(runs)
                    .where(
                        runs.c.run_uuid == request.record_id,
                        runs.c.status == "RUNNING",
                        runs.c.lifecycle_stage == "active",
                    )
                    .values(status=request.new_state, end_time=end_ms)
                ).rowcount
                if changed == 1:
                    self._write_tags(conn, request.record_id, request.attributes)
                    return CloseResult(CloseStatus.CLOSED)
                state = conn.execute(
                    select(runs.c.status).where(runs.c.run_uuid == request.record_id)
                ).scalar()
            if state is None:
                return CloseResult(CloseStatus.MISSING)
            return CloseResult(CloseStatus.NOT_RUNNING, str(state))

        return retry_locked(attempt, self.uri)

    def _write_tags(self, conn: Connection, run_id: str, tags: Mapping[str, str]) -> None:
        from sqlalchemy import delete, insert

        table = self._t["tags"]
        if not tags:
            return
        conn.execute(delete(table).where(table.c.run_uuid == run_id, table.c.key.in_(list(tags))))
        conn.execute(
            insert(table), [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()]
        )

    def iter_closed_runs(self, selection: Selection) -> Iterator[RunContents]:
        from sqlalchemy import func, or_, select
        from sqlalchemy.exc import SQLAlchemyError

        runs, exps, tags = self._t["runs"], self._t["experiments"], self._t["tags"]
        metrics, params = self._t["latest_metrics"], self._t["params"]
        closed = (
            select(tags.c.value)
            .where(tags.c.run_uuid == runs.c.run_uuid, tags.c.key == "mltidy.closed_at")
            .scalar_subquery()
        )
        n_metrics = (
            select(func.count()).where(metrics.c.run_uuid == runs.c.run_uuid).scalar_subquery()
        )
        n_params = (
            select(func.count()).where(params.c.run_uuid == runs.c.run_uuid).scalar_subquery()
        )
        query = (
            self._select()
            .add_columns(
                runs.c.artifact_uri,
                closed.label("closed_at"),
                n_metrics.label("n_metrics"),
                n_params.label("n_params"),
            )
            .where(runs.c.status != "RUNNING", closed.is_not(None))
        )
        if selection.experiments:
            ids = [int(e) for e in selection.experiments if e.isdigit()]
            query = query.where(
                or_(exps.c.name.in_(selection.experiments), exps.c.experiment_id.in_(ids))
            )
        try:
            # Materialised, not streamed: declutter soft-deletes while it iterates, and an open
            # read on sqlite would make those writes wait for this very cursor.
            with self._engine.connect() as conn:
                rows = list(conn.execute(query))
                all_tags = {}
                for chunk in _chunks(rows, CHUNK):
                    all_tags.update(self._tags(conn, [row.run_uuid for row in chunk]))
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        for row in rows:
            yield RunContents(
                record=self._record(row, all_tags.get(row.run_uuid, {})),
                closed_at=_parse_time(row.closed_at),
                metrics=int(row.n_metrics),
                params=int(row.n_params),
                artifacts=local_artifact_count(row.artifact_uri),
            )

    def soft_delete(self, run_id: str) -> bool:
        from sqlalchemy import update

        runs = self._t["runs"]
        now = utc_now()

        def attempt() -> bool:
            with self._engine.begin() as conn:
                changed = conn.execute(
                    update(runs)
                    .where(
                        runs.c.run_uuid == run_id,
                        runs.c.status != "RUNNING",
                        runs.c.lifecycle_stage == "active",
                    )
                    .values(lifecycle_stage="deleted", deleted_time=int(now.timestamp() * 1000))
                ).rowcount
                if changed == 1:
                    self._write_tags(
                        conn,
                        run_id,
                        {"mltidy.deleted_at": now.isoformat(timespec="seconds")},
                    )
                return bool(changed == 1)

        return retry_locked(attempt, self.uri)

    def close(self) -> None:
        self._engine.dispose()


def inspect_store(engine: Engine, uri: str) -> tuple[str | None, set[str]]:
    """The alembic revision and the table names of an MLflow tracking database.

    Runs before anything else touches a store, on a read-only engine, so that neither path ever
    hands MLflow a database it would create tables in.

    Raises:
        NotAStore: the database lacks MLflow's core tables (with a hint for Optuna storages).
        StoreError: the database cannot be read.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        tables = table_names(engine)
        if not tables >= IDENTITY_TABLES:
            hint = None
            if {"studies", "trials", "version_info"} <= tables:
                hint = "it looks like an Optuna storage: pass it with --optuna"
            raise NotAStore(f"{uri} is not an MLflow tracking database", hint=hint)
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        raise translate_sql_error(exc, uri) from exc
    return (str(revision) if revision else None), tables


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _chunks(rows: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


__all__ = ["MlflowSqlBackend", "inspect_store"]
