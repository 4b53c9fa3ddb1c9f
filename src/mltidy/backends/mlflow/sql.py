"""MLflow SQL tracking stores (sqlite, PostgreSQL, MySQL) read with SQLAlchemy Core: the fast path.

The read side is a few queries over MLflow's long-stable tables (``runs``, ``experiments``,
``tags``, ``latest_metrics``, ``metrics``); mlflow itself is not imported, because importing it
costs seconds and because MLflow's own ``SqlAlchemyStore`` would create and migrate tables when
opened, which a read must never do. It is used for the schema revisions listed in
``schema_versions.py``; the registry sends other revisions to ``library.py``.

Reads stream: the RUNNING runs come from one query through a server-side cursor where the
database has one, in partitions of :data:`CHUNK` rows, and each partition's tags come from one
``IN`` query. Memory follows the partition size, not the number of runs in the store. Each
partition's rhythms (the longest pause between two distinct timestamps of each run's latest
metric key, and how many there are) come from two more queries.

SQLite files are checked, scanned and re-read through the standard library's ``sqlite3``
(``sqlite_reads.py``, the same queries written out), so that a scan does not import SQLAlchemy
at all; SQLAlchemy's engine is made on first use, by a write or by another command's read.

Size: one backend class, the fast path, whose reads (SQLAlchemy and sqlite3), batched closes,
declutter, links, history and clock share one engine and one table map.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mltidy import names
from mltidy.backends.batch_writes import current_states, retry_batch, set_if_running
from mltidy.backends.engine import LazyEngine
from mltidy.backends.identity import store_id
from mltidy.backends.interface import (
    Backend,
    BatchCloser,
    ContainerLister,
    MakesWritable,
    RhythmReader,
    RunDeclutterer,
    RunHistory,
    RunLinker,
    StoreClock,
)
from mltidy.backends.mlflow.runs import (
    ENDED,
    NO_RHYTHM,
    Rhythm,
    epoch_ms,
    parse_time,
    run_record,
    run_ref,
    with_rhythm,
)
from mltidy.backends.mlflow.schema import (
    CHUNK,
    REQUIRED_TABLES,
    inspect_store,
    read_rhythms,
    read_tags,
    replace_tags,
    replace_tags_of_runs,
    tables,
)
from mltidy.backends.mlflow.sqlite_reads import RunRow, SqliteRuns, tags_of
from mltidy.backends.mlflow.sqlite_reads import rhythms as sqlite_rhythms
from mltidy.backends.schema_versions import mlflow_fast_revisions
from mltidy.backends.sql import (
    SqliteReader,
    checked_sqlite_file,
    chunks,
    database_now,
    local_artifact_count,
    newest_time,
    retry_locked,
    side_connection,
    translate_sql_error,
)
from mltidy.model import (
    ClockReading,
    CloseRequest,
    CloseResult,
    CloseStatus,
    HistoryMark,
    Record,
    RunContents,
    RunRef,
    Selection,
    StoreKind,
    from_epoch_ms,
    utc_now,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

    from sqlalchemy import Select
    from sqlalchemy.engine import Engine, Row

#: How often ``watch`` reads a SQLite store's whole run history even so (``ended_runs_after``).
FULL_HISTORY_EVERY = timedelta(hours=1)
#: The tags every record carries, and the tags every link candidate carries (keys, prefixes).
RECORD_TAGS = (names.RUN_TAG_KEYS, names.RUN_TAG_PREFIXES)
LINK_TAGS = (names.LINK_RUN_TAG_KEYS, names.LINK_RUN_TAG_PREFIXES)
#: The tags the re-read before a close reads: the activity it compares (mltidy's heartbeat).
ACTIVITY_TAGS: tuple[tuple[str, ...], tuple[str, ...]] = ((names.HEARTBEAT_AT,), ())


class MlflowSqlBackend(
    Backend,
    BatchCloser,
    RunDeclutterer,
    RunHistory,
    RunLinker,
    MakesWritable,
    StoreClock,
    ContainerLister,
    RhythmReader,
):
    """An MLflow tracking store in a SQL database, read without importing mlflow.

    Closing is a compare-and-set: one transaction runs ``UPDATE runs ... WHERE status =
    'RUNNING'`` and writes the audit tags of the runs it changed, one run or a batch of them
    (``set_if_running`` in ``backends/sql.py``).
    """

    kind = StoreKind.MLFLOW

    def __init__(self, url: str, *, writable: bool = False) -> None:
        self.url = url
        self.uri = store_id(self.kind, url)
        self._db = LazyEngine(url, writable=writable)
        self._sqlite = SqliteRuns(checked_sqlite_file(url)) if url.startswith("sqlite:") else None
        try:
            if self._sqlite is not None:
                self._revision, found = self._sqlite.inspect(self.uri)
            else:
                self._revision, found = inspect_store(self._engine, self.uri)
        except SqliteReader.Error as exc:
            raise translate_sql_error(exc, self.uri) from exc
        except BaseException:
            self.close()
            raise
        self.schema_known = self._revision in mlflow_fast_revisions() and found >= REQUIRED_TABLES

    @property
    def _engine(self) -> Engine:
        """SQLAlchemy's engine (read-only until :meth:`make_writable`), made on first use."""
        return self._db.engine

    @cached_property
    def _t(self) -> dict[str, Any]:
        return tables()

    @property
    def revision(self) -> str | None:
        """The store's alembic revision (``None`` when ``alembic_version`` is empty)."""
        return self._revision

    @property
    def schema(self) -> str:
        """The store's schema, in words."""
        return f"MLflow schema revision {self._revision}"

    def make_writable(self) -> None:
        """From now on the engine is a writable one (the store is not inspected again)."""
        self._db.make_writable()

    def describe(self) -> str:
        dialect = self._db.dialect(sqlite=self._sqlite is not None)
        return f"MLflow SQL store ({dialect}), schema revision {self._revision or 'unknown'}"

    def clock(self) -> ClockReading:
        from sqlalchemy import func, select
        from sqlalchemy.exc import SQLAlchemyError

        runs, metrics = self._t["runs"], self._t["latest_metrics"]
        try:
            with self._engine.connect() as conn:
                server = database_now(conn)
                start, end = conn.execute(
                    select(func.max(runs.c.start_time), func.max(runs.c.end_time))
                ).one()
                metric = conn.execute(select(func.max(metrics.c.timestamp))).scalar()
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        newest, what = newest_time(
            (from_epoch_ms(value), what)
            for value, what in ((start, "run start"), (end, "run end"), (metric, "metric"))
        )
        return ClockReading(server, newest, what)

    def _select(self, selection: Selection | None = None) -> Select[Any]:
        """Active runs with their experiment and newest metric time; only the selected
        experiments' (by name or id) when ``selection`` names some."""
        from sqlalchemy import func, or_, select

        runs, exps, metrics = self._t["runs"], self._t["experiments"], self._t["latest_metrics"]
        last_metric = (
            select(func.max(metrics.c.timestamp))
            .where(metrics.c.run_uuid == runs.c.run_uuid)
            .scalar_subquery()
        )
        query = (
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
        if selection is not None and selection.experiments:
            ids = [int(e) for e in selection.experiments if e.isdigit()]
            query = query.where(
                or_(exps.c.name.in_(selection.experiments), exps.c.experiment_id.in_(ids))
            )
        return query

    def containers(self) -> dict[str, str]:
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        exps = self._t["experiments"]
        query = select(exps.c.experiment_id, exps.c.name).where(exps.c.lifecycle_stage == "active")
        try:
            with self._engine.connect() as conn:
                return {str(row.experiment_id): str(row.name) for row in conn.execute(query)}
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc

    def iter_active(self, selection: Selection) -> Iterator[Record]:
        if self._sqlite is not None:
            try:
                for rows, tags in self._sqlite.active(selection, RECORD_TAGS):
                    for run in rows:
                        if run.status == "RUNNING":
                            yield self._record(run, tags.get(run.run_uuid, {}))
            except SqliteReader.Error as exc:
                raise translate_sql_error(exc, self.uri) from exc
            return
        from sqlalchemy.exc import SQLAlchemyError

        runs, exps = self._t["runs"], self._t["experiments"]
        query = self._select(selection).where(
            runs.c.status == "RUNNING", exps.c.lifecycle_stage == "active"
        )
        try:
            with self._engine.connect() as conn, side_connection(self._engine, conn) as side:
                result = conn.execute(query, execution_options={"yield_per": CHUNK})
                for chunk in result.partitions():
                    ids = [row.run_uuid for row in chunk]
                    tags = read_tags(side, self._t["tags"], ids, RECORD_TAGS)
                    for row in chunk:
                        # Never trust the filter alone: some compatible stores ignore it.
                        if row.status == "RUNNING":
                            yield self._record(row, tags.get(row.run_uuid, {}))
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc

    def read(self, record_id: str) -> Record | None:
        return self._read([record_id], RECORD_TAGS, rhythms=True).get(record_id)

    def with_rhythms(self, runs: Sequence[Record]) -> list[Record]:
        ids = [run.id for run in runs]
        if self._sqlite is not None:
            try:
                with self._sqlite.reader.connect() as conn:
                    found = sqlite_rhythms(conn, ids)
            except SqliteReader.Error as exc:
                raise translate_sql_error(exc, self.uri) from exc
        else:
            from sqlalchemy.exc import SQLAlchemyError

            try:
                with self._engine.connect() as conn:
                    found = read_rhythms(conn, self._t, ids)
            except SQLAlchemyError as exc:
                raise translate_sql_error(exc, self.uri) from exc
        return [with_rhythm(run, found.get(run.id, NO_RHYTHM)) for run in runs]

    def read_many(self, record_ids: Sequence[str]) -> dict[str, Record]:
        """The runs as the re-read before a close needs them: state and activity (the newest
        metric, mltidy's heartbeat tag); their other tags and their rhythm are not read."""
        return self._read(record_ids, ACTIVITY_TAGS, rhythms=False)

    def _read(
        self,
        record_ids: Sequence[str],
        wanted: tuple[tuple[str, ...], tuple[str, ...]],
        *,
        rhythms: bool,
    ) -> dict[str, Record]:
        """Runs by id, any state, with their ``wanted`` tags (keys, prefixes); a RUNNING run
        with its rhythm when ``rhythms``."""
        if self._sqlite is not None:
            writer = self._db.writer
            try:
                with self._sqlite.reader.connection(writer) as conn:
                    runs_found, run_tags = self._sqlite.by_ids(list(record_ids), wanted, conn)
                    running = [run.run_uuid for run in runs_found if run.status == "RUNNING"]
                    run_rhythms = sqlite_rhythms(conn, running) if rhythms else None
            except SqliteReader.Error as exc:
                raise translate_sql_error(exc, self.uri) from exc
            return {
                run.run_uuid: self._record(
                    run, run_tags.get(run.run_uuid, {}), self._rhythm(run, run_rhythms)
                )
                for run in runs_found
            }
        from sqlalchemy.exc import SQLAlchemyError

        runs = self._t["runs"]
        found: dict[str, Record] = {}
        try:
            with self._engine.connect() as conn:
                for chunk in chunks(list(record_ids)):
                    rows = list(conn.execute(self._select().where(runs.c.run_uuid.in_(chunk))))
                    tags = read_tags(conn, self._t["tags"], chunk, wanted)
                    running = [row.run_uuid for row in rows if row.status == "RUNNING"]
                    found_rhythms = read_rhythms(conn, self._t, running) if rhythms else None
                    for row in rows:
                        rhythm = self._rhythm(row, found_rhythms)
                        found[row.run_uuid] = self._record(row, tags.get(row.run_uuid, {}), rhythm)
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        return found

    def _read_all(self, query: Select[Any]) -> tuple[list[Row[Any]], dict[str, dict[str, str]]]:
        """Every row of ``query`` and the record tags of their runs, read at once.

        Materialised, not streamed: callers write while they iterate (declutter soft-deletes),
        and an open read on sqlite would make those writes wait for this very cursor.
        """
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self._engine.connect() as conn:
                rows = list(conn.execute(query))
                ids = [row.run_uuid for row in rows]
                return rows, read_tags(conn, self._t["tags"], ids, RECORD_TAGS)
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc

    @staticmethod
    def _rhythm(row: Row[Any] | RunRow, found: Mapping[str, Rhythm] | None) -> Rhythm | None:
        """A RUNNING run's rhythm (none found: no metric history); ``None`` for other runs and
        when rhythms were not read (``found`` is ``None``)."""
        if row.status != "RUNNING" or found is None:
            return None
        return found.get(row.run_uuid, NO_RHYTHM)

    def _record(
        self, row: Row[Any] | RunRow, tags: dict[str, str], rhythm: Rhythm | None = None
    ) -> Record:
        return run_record(
            self.uri,
            row.run_uuid,
            name=row.name,
            experiment=row.experiment_name,
            experiment_id=str(row.experiment_id),
            state=row.status,
            times_ms=(row.start_time, row.end_time, row.last_metric),
            user=row.user_id,
            tags=tags,
            rhythm=rhythm,
        )

    def iter_ended_runs(self, selection: Selection, since: datetime) -> Iterator[Record]:
        runs, exps = self._t["runs"], self._t["experiments"]
        since_ms = epoch_ms(since)
        query = (
            self._select(selection)
            .where(
                runs.c.status.in_(ENDED),
                runs.c.end_time >= since_ms,
                exps.c.lifecycle_stage == "active",
            )
            .order_by(runs.c.end_time)
        )
        rows, tags = self._read_all(query)
        for row in rows:
            if row.status in ENDED and row.end_time is not None:
                yield self._record(row, tags.get(row.run_uuid, {}))

    def ended_runs_after(
        self, selection: Selection, since: datetime, mark: HistoryMark | None, now: datetime
    ) -> tuple[list[Record], HistoryMark | None]:
        """On SQLite, the runs that ended since the previous poll without reading all of
        ``runs`` (whose ``end_time`` has no index): only the runs added since (``rowid`` beyond
        the mark) and the runs that were RUNNING then (by primary key). The whole table is read
        on the first poll, when ``rowid`` went backwards (``VACUUM`` renumbers), and every
        :data:`FULL_HISTORY_EVERY` in any case, which also catches a run resumed and ended
        again between two polls. Other databases read the whole table each time."""
        if self._sqlite is None:
            return super().ended_runs_after(selection, since, mark, now)
        since_ms = epoch_ms(since)
        try:
            with self._sqlite.reader.connect() as conn:
                position = self._sqlite.position(conn)
                full = (
                    mark is None
                    or position < mark.position
                    or now - mark.full_at >= FULL_HISTORY_EVERY
                )
                if full or mark is None:
                    rows = self._sqlite.ended_or_running(conn, selection, since_ms, ENDED)
                else:
                    rows = self._sqlite.changed_since(
                        conn, selection, mark.position, sorted(mark.running)
                    )
                ended = sorted(
                    (
                        r
                        for r in rows
                        if r.status in ENDED and r.end_time is not None and r.end_time >= since_ms
                    ),
                    key=lambda r: r.end_time or 0,
                )
                tags = tags_of(conn, [r.run_uuid for r in ended], RECORD_TAGS)
        except SqliteReader.Error as exc:
            raise translate_sql_error(exc, self.uri) from exc
        running = frozenset(r.run_uuid for r in rows if r.status == "RUNNING")
        full_at = now if full or mark is None else mark.full_at
        records = [self._record(r, tags.get(r.run_uuid, {})) for r in ended]
        return records, HistoryMark(position, running, full_at)

    def close_record(self, request: CloseRequest) -> CloseResult:
        from sqlalchemy import select, update

        runs = self._t["runs"]

        def attempt() -> CloseResult:
            with self._engine.begin() as conn:
                changed = conn.execute(
                    update(runs)
                    .where(
                        runs.c.run_uuid == request.record_id,
                        runs.c.status == "RUNNING",
                        runs.c.lifecycle_stage == "active",
                    )
                    .values(status=request.new_state, end_time=epoch_ms(request.end_time))
                ).rowcount
                if changed == 1:
                    replace_tags(conn, self._t["tags"], request.record_id, request.attributes)
                    return CloseResult(CloseStatus.CLOSED)
                state = conn.execute(
                    select(runs.c.status).where(runs.c.run_uuid == request.record_id)
                ).scalar()
            if state is None:
                return CloseResult(CloseStatus.MISSING)
            return CloseResult(CloseStatus.NOT_RUNNING, str(state))

        return retry_locked(attempt, self.uri)

    def close_records(self, requests: Sequence[CloseRequest]) -> list[CloseResult]:
        runs = self._t["runs"]
        wanted = {r.record_id: r for r in requests}
        ends = [(r.record_id, r.new_state, epoch_ms(r.end_time)) for r in requests]
        guards = (runs.c.status == "RUNNING", runs.c.lifecycle_stage == "active")

        def attempt() -> tuple[set[str], dict[str, Any]]:
            with self._engine.begin() as conn:
                columns = (runs.c.run_uuid, runs.c.status, runs.c.end_time)
                closed = set_if_running(conn, columns, guards, ends)
                audit = {run_id: wanted[run_id].attributes for run_id in closed}
                replace_tags_of_runs(conn, self._t["tags"], audit)
                others = [run_id for run_id in wanted if run_id not in closed]
                return closed, current_states(conn, runs.c.run_uuid, runs.c.status, others)

        closed, states = retry_batch(attempt, self.uri)
        return [_result(r.record_id, closed, states) for r in requests]

    def iter_closed_runs(self, selection: Selection) -> Iterator[RunContents]:
        from sqlalchemy import func, select

        runs, tags = self._t["runs"], self._t["tags"]
        metrics, params = self._t["latest_metrics"], self._t["params"]
        closed = (
            select(tags.c.value)
            .where(tags.c.run_uuid == runs.c.run_uuid, tags.c.key == names.CLOSED_AT)
            .scalar_subquery()
        )
        n_metrics = (
            select(func.count()).where(metrics.c.run_uuid == runs.c.run_uuid).scalar_subquery()
        )
        n_params = (
            select(func.count()).where(params.c.run_uuid == runs.c.run_uuid).scalar_subquery()
        )
        query = (
            self._select(selection)
            .add_columns(
                runs.c.artifact_uri,
                closed.label("closed_at"),
                n_metrics.label("n_metrics"),
                n_params.label("n_params"),
            )
            .where(runs.c.status != "RUNNING", closed.is_not(None))
        )
        rows, all_tags = self._read_all(query)
        for row in rows:
            yield RunContents(
                record=self._record(row, all_tags.get(row.run_uuid, {})),
                closed_at=parse_time(row.closed_at),
                metrics=int(row.n_metrics),
                params=int(row.n_params),
                artifacts=local_artifact_count(row.artifact_uri, row.run_uuid),
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
                    .values(lifecycle_stage="deleted", deleted_time=epoch_ms(now))
                ).rowcount
                if changed == 1:
                    deleted = {names.DELETED_AT: now.isoformat(timespec="seconds")}
                    replace_tags(conn, self._t["tags"], run_id, deleted)
                return bool(changed == 1)

        return retry_locked(attempt, self.uri)

    def link_candidates(self, run_ids: set[str], studies: set[str]) -> list[RunRef]:
        from sqlalchemy import exists, select
        from sqlalchemy.exc import SQLAlchemyError

        runs, exps, tags = self._t["runs"], self._t["experiments"], self._t["tags"]
        base = (
            select(runs.c.run_uuid, runs.c.name, runs.c.experiment_id, exps.c.name.label("exp"))
            .select_from(runs.join(exps, exps.c.experiment_id == runs.c.experiment_id))
            .where(runs.c.lifecycle_stage == "active")
        )
        ids = sorted(run_ids)
        queries = [
            base.where(runs.c.run_uuid.in_(ids[start : start + CHUNK]))
            for start in range(0, len(ids), CHUNK)
        ]
        if studies:
            named = sorted(studies)
            tagged = exists().where(
                tags.c.run_uuid == runs.c.run_uuid,
                tags.c.key.in_(names.STUDY_TAGS),
                tags.c.value.in_(named),
            )
            numbered = exists().where(
                tags.c.run_uuid == runs.c.run_uuid, tags.c.key == names.CALLBACK_NUMBER
            )
            queries.append(base.where(tagged))
            queries.append(base.where(exps.c.name.in_(named), numbered))
        found: dict[str, Any] = {}
        try:
            with self._engine.connect() as conn:
                for query in queries:
                    for row in conn.execute(query):
                        found[row.run_uuid] = row
                run_tags = read_tags(conn, tags, list(found), LINK_TAGS)
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        return [
            run_ref(
                self.uri,
                row.run_uuid,
                row.name,
                (str(row.experiment_id), row.exp),
                run_tags.get(row.run_uuid, {}),
            )
            for row in found.values()
        ]

    def run_notes(self, run_ids: set[str]) -> dict[str, str]:
        """That one tag of these runs, an ``IN`` query per :data:`CHUNK` runs."""
        ids = sorted(run_ids)
        wanted: tuple[tuple[str, ...], tuple[str, ...]] = ((names.MLFLOW_NOTE,), ())
        if self._sqlite is not None:
            writer = self._db.writer
            try:
                with self._sqlite.reader.connection(writer) as conn:
                    found = tags_of(conn, ids, wanted)
            except SqliteReader.Error as exc:
                raise translate_sql_error(exc, self.uri) from exc
        else:
            from sqlalchemy.exc import SQLAlchemyError

            try:
                with self._engine.connect() as conn:
                    found = read_tags(conn, self._t["tags"], ids, wanted)
            except SQLAlchemyError as exc:
                raise translate_sql_error(exc, self.uri) from exc
        return {run_id: found.get(run_id, {}).get(names.MLFLOW_NOTE, "") for run_id in ids}

    def write_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        def attempt() -> None:
            with self._engine.begin() as conn:
                replace_tags(conn, self._t["tags"], run_id, tags)

        retry_locked(attempt, self.uri)

    def write_runs_tags(self, tags: Mapping[str, Mapping[str, str]]) -> None:
        """All in one transaction."""

        def attempt() -> None:
            with self._engine.begin() as conn:
                replace_tags_of_runs(conn, self._t["tags"], tags)

        if tags:
            retry_locked(attempt, self.uri)

    def close(self) -> None:
        self._db.close()


def _result(run_id: str, closed: set[str], states: dict[str, Any]) -> CloseResult:
    if run_id in closed:
        return CloseResult(CloseStatus.CLOSED)
    if run_id not in states:
        return CloseResult(CloseStatus.MISSING)
    return CloseResult(CloseStatus.NOT_RUNNING, str(states[run_id]))


__all__ = ["CHUNK", "MlflowSqlBackend", "inspect_store"]
