"""Optuna RDB storages (sqlite, PostgreSQL, MySQL) read with SQLAlchemy Core: the fast path.

optuna's ``RDBStorage`` creates tables and checks/migrates the schema when constructed, and
listing RUNNING trials through its API costs one round of queries per study; so the read side
goes straight to the tables (``studies``, ``trials``, ``trial_heartbeats``,
``trial_user_attributes``, ``trial_system_attributes``) and never imports optuna. It is used for
the schema versions listed in ``schema_versions.py``; the registry sends other versions to
``library.py``.

Reads stream: the RUNNING trials of all studies come from one query (server-side cursor where
the database has one) in partitions of :data:`CHUNK`, and each partition's attributes from one
``IN`` query per attribute table.

SQLite files are checked, scanned and re-read through the standard library's ``sqlite3``
(``sqlite_reads.py``, the same queries written out), so that a scan does not import SQLAlchemy
at all; SQLAlchemy's engine is made on first use, by a write or by another command's read.

Links are written straight to the tables in one transaction: optuna's storage API refuses
attributes on finished trials, and the trials worth linking are mostly finished.

Size: one backend class, the fast path, whose reads, batched closes, retries, links and clock share
one engine and one table map.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from mltidy import dashboard_notes, names
from mltidy.backends.batch_writes import current_states, retry_batch, set_if_running
from mltidy.backends.engine import LazyEngine
from mltidy.backends.identity import store_id
from mltidy.backends.interface import (
    Backend,
    BatchCloser,
    ContainerLister,
    MakesWritable,
    NaiveTimes,
    StoreClock,
    StudyReporter,
    StudyWatcher,
    TrialLinker,
    TrialRetrier,
)
from mltidy.backends.optuna.sql_studies import StudyQueries
from mltidy.backends.optuna.sqlite_reads import SqliteTrials, TrialRow
from mltidy.backends.optuna.storage_ops import quiet_optuna
from mltidy.backends.optuna.tables import (
    CHUNK,
    db_clock_offset,
    inspect_storage,
    naive_linked_starts,
    read_notes,
    replace_attrs,
    replace_attrs_of_many,
    tables,
)
from mltidy.backends.optuna.time import StorageTimes, heartbeat_to_utc, writes_naive_utc
from mltidy.backends.optuna.trials import decode, json_text, trial_record, trial_ref
from mltidy.backends.sql import (
    SqliteReader,
    checked_sqlite_file,
    chunks,
    database_now,
    newest_time,
    retry_locked,
    side_connection,
    translate_sql_error,
)
from mltidy.errors import StoreError
from mltidy.model import (
    ClockReading,
    CloseRequest,
    CloseResult,
    CloseStatus,
    Record,
    Selection,
    StoreKind,
    StudyHealth,
    StudyProgress,
    TrialRef,
    utc_now,
)

if TYPE_CHECKING:
    from sqlalchemy import Select
    from sqlalchemy.engine import Connection, Engine, Row


def _datetime(value: object) -> datetime | None:
    """A datetime column's value (SQLite may hand back text for an aggregate)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            return None
    return None


#: The trial attributes a link reads (user and system attributes).
LINK_ATTRS = [names.MLFLOW_RUN_ID, names.MLFLOW_RUN_URL]
#: Dashboard notes written per transaction (whole studies: a study's notes go together).
NOTES_PER_TRANSACTION = 500
#: The attributes the re-read before a close reads: the activity it compares (mltidy's
#: heartbeat).
ACTIVITY_ATTRS = (names.HEARTBEAT_AT,)


class OptunaSqlBackend(
    Backend,
    BatchCloser,
    TrialRetrier,
    StudyReporter,
    StudyWatcher,
    TrialLinker,
    MakesWritable,
    NaiveTimes,
    StoreClock,
    ContainerLister,
):
    """An Optuna RDB storage, read without importing optuna.

    Closing is a compare-and-set: one transaction runs ``UPDATE trials ... WHERE state =
    'RUNNING'`` and writes the audit system attributes of the trials it changed, one trial or
    a batch of them (``set_if_running`` in ``backends/sql.py``). The trial's
    ``datetime_complete`` is written in the storage's own convention (naive UTC for 5.x, naive
    local time of the writer's zone for 4.x).
    """

    kind = StoreKind.OPTUNA

    def __init__(self, url: str, *, writable: bool = False) -> None:
        self.url = url
        self.uri = store_id(self.kind, url)
        self._db = LazyEngine(url, writable=writable)
        self._retries: Any = None
        self._sqlite = SqliteTrials(checked_sqlite_file(url)) if url.startswith("sqlite:") else None
        try:
            if self._sqlite is not None:
                self.version = self._sqlite.inspect(self.uri)
            else:
                self.version = inspect_storage(self._engine, self.uri)
        except SqliteReader.Error as exc:
            raise translate_sql_error(exc, self.uri) from exc
        except BaseException:
            self.close()
            raise
        self._has_heartbeats = self.version.has_heartbeats
        self._times = StorageTimes(writes_naive_utc(self.version.library_version))
        self.schema_known = self.version.known

    @property
    def _engine(self) -> Engine:
        """SQLAlchemy's engine (read-only until :meth:`make_writable`), made on first use."""
        return self._db.engine

    @cached_property
    def _t(self) -> dict[str, Any]:
        return tables()

    @property
    def _studies(self) -> StudyQueries:
        return StudyQueries(self._engine, self._t, self.uri, self.version.tables, self._times)

    @property
    def schema(self) -> str:
        """The storage's schema, in words."""
        return f"Optuna schema {self.version.schema_version}/{self.version.revision}"

    def make_writable(self) -> None:
        """From now on the engine is a writable one (the store is not inspected again)."""
        self._db.make_writable()

    def describe(self) -> str:
        dialect = self._db.dialect(sqlite=self._sqlite is not None)
        return (
            f"Optuna RDB storage ({dialect}), schema {self.version.schema_version}"
            f"{'/' + self.version.revision if self.version.revision else ''}, "
            f"set up by optuna {self.version.library_version}"
        )

    def clock(self) -> ClockReading:
        from sqlalchemy import func, select
        from sqlalchemy.exc import SQLAlchemyError

        trials = self._t["trials"]
        now = utc_now()
        try:
            with self._engine.connect() as conn:
                server = database_now(conn)
                start, end = conn.execute(
                    select(func.max(trials.c.datetime_start), func.max(trials.c.datetime_complete))
                ).one()
                beat, offset = None, timedelta(0)
                if self._has_heartbeats:
                    beats = self._t["trial_heartbeats"]
                    beat = conn.execute(select(func.max(beats.c.heartbeat))).scalar()
                    offset = self._clock_offset(conn)
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        newest, what = newest_time(
            [
                (self._times.to_utc(_datetime(start), now), "trial start"),
                (self._times.to_utc(_datetime(end), now), "trial end"),
                (
                    heartbeat_to_utc(beat, offset) if isinstance(beat, datetime) else None,
                    "Optuna heartbeat",
                ),
            ]
        )
        return ClockReading(server, newest, what)

    def _select(self, selection: Selection, *, heartbeat: bool) -> Select[Any]:
        """Trials with their study (the selected studies' only), and their newest heartbeat
        when asked and the storage has heartbeats."""
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
        if heartbeat and self._has_heartbeats:
            beats = self._t["trial_heartbeats"]
            latest = (
                select(func.max(beats.c.heartbeat))
                .where(beats.c.trial_id == trials.c.trial_id)
                .scalar_subquery()
            )
            columns.append(latest.label("heartbeat"))
        query = select(*columns).select_from(
            trials.join(studies, studies.c.study_id == trials.c.study_id)
        )
        if selection.studies:
            query = query.where(studies.c.study_name.in_(selection.studies))
        return query

    def _clock_offset(self, conn: Connection) -> timedelta:
        return db_clock_offset(conn) if self._has_heartbeats else timedelta(0)

    def containers(self) -> dict[str, str]:
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        studies = self._t["studies"]
        try:
            with self._engine.connect() as conn:
                rows = conn.execute(select(studies.c.study_id, studies.c.study_name))
                return {str(row.study_id): str(row.study_name) for row in rows}
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc

    def iter_active(self, selection: Selection) -> Iterator[Record]:
        if self._sqlite is not None:
            # SQLite's CURRENT_TIMESTAMP is UTC: heartbeats need no clock offset there.
            try:
                for rows, attrs in self._sqlite.active(selection, self._has_heartbeats):
                    for trial in rows:
                        if trial.state == "RUNNING":
                            yield self._record(trial, attrs.get(trial.trial_id, {}), timedelta(0))
            except SqliteReader.Error as exc:
                raise translate_sql_error(exc, self.uri) from exc
            return
        from sqlalchemy.exc import SQLAlchemyError

        trials = self._t["trials"]
        query = self._select(selection, heartbeat=True).where(trials.c.state == "RUNNING")
        try:
            with self._engine.connect() as conn, side_connection(self._engine, conn) as side:
                offset = self._clock_offset(conn)
                result = conn.execute(query, execution_options={"yield_per": CHUNK})
                for chunk in result.partitions():
                    attrs = self._attrs(side, [row.trial_id for row in chunk])
                    for row in chunk:
                        if str(row.state) == "RUNNING" or str(row.state).endswith(".RUNNING"):
                            yield self._record(row, attrs.get(row.trial_id, {}), offset)
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc

    def read(self, record_id: str) -> Record | None:
        return self._read([record_id], None).get(record_id)

    def read_many(self, record_ids: Sequence[str]) -> dict[str, Record]:
        """The trials as the re-read before a close needs them: state and activity (Optuna's
        heartbeat, mltidy's heartbeat attribute); their other attributes are not read."""
        return self._read(record_ids, ACTIVITY_ATTRS)

    def _read(self, record_ids: Sequence[str], only: Sequence[str] | None) -> dict[str, Record]:
        """Trials by id, any state, with their attributes (only the keys ``only`` names, when
        given)."""
        ids = [int(r) for r in record_ids if r.isdigit()]
        if self._sqlite is not None:
            writer = self._db.writer
            try:
                with self._sqlite.reader.connection(writer) as conn:
                    trials_found, attributes = self._sqlite.by_ids(
                        ids, self._has_heartbeats, conn, only
                    )
            except SqliteReader.Error as exc:
                raise translate_sql_error(exc, self.uri) from exc
            return {
                str(t.trial_id): self._record(t, attributes.get(t.trial_id, {}), timedelta(0))
                for t in trials_found
            }
        from sqlalchemy.exc import SQLAlchemyError

        trials = self._t["trials"]
        query = self._select(Selection(), heartbeat=True)
        found: dict[str, Record] = {}
        try:
            with self._engine.connect() as conn:
                offset = self._clock_offset(conn)
                for chunk in chunks(ids):
                    rows = list(conn.execute(query.where(trials.c.trial_id.in_(chunk))))
                    attrs = self._attrs(conn, chunk, only)
                    for row in rows:
                        record = self._record(row, attrs.get(row.trial_id, {}), offset)
                        found[record.id] = record
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        return found

    def _attrs(
        self, conn: Connection, trial_ids: Sequence[int], only: Sequence[str] | None = None
    ) -> dict[int, dict[str, str]]:
        """The attributes of these trials a record carries (only the keys ``only`` names,
        when given)."""
        from sqlalchemy import or_, select

        found: dict[int, dict[str, str]] = {}
        for name in ("trial_user_attributes", "trial_system_attributes"):
            attrs = self._t[name]
            wanted = (
                attrs.c.key.in_(list(only))
                if only is not None
                else or_(
                    attrs.c.key.in_(names.TRIAL_LINK_KEYS),
                    attrs.c.key.like(f"{names.PREFIX}%"),
                )
            )
            query = select(attrs.c.trial_id, attrs.c.key, attrs.c.value_json).where(
                attrs.c.trial_id.in_(list(trial_ids)), wanted
            )
            for trial_id, key, value_json in conn.execute(query).all():
                found.setdefault(trial_id, {})[key] = json_text(value_json)
        return found

    def _record(self, row: Row[Any] | TrialRow, attrs: dict[str, str], offset: timedelta) -> Record:
        now = utc_now()
        heartbeat = getattr(row, "heartbeat", None)
        return trial_record(
            self.uri,
            (row.trial_id, row.number, _state(row.state)),
            (row.study_name, row.study_id),
            started_at=self._times.to_utc(row.datetime_start, now),
            last_activity_at=(
                heartbeat_to_utc(heartbeat, offset) if isinstance(heartbeat, datetime) else None
            ),
            tags=attrs,
            assumed_utc_offset=self._times.assumed(row.datetime_start, now),
        )

    @property
    def writer_times(self) -> StorageTimes:
        return self._times

    def linked_starts(self, limit: int) -> list[tuple[str, datetime]]:
        return naive_linked_starts(self._engine, self._t, limit, self.uri)

    def close_record(self, request: CloseRequest) -> CloseResult:
        from sqlalchemy import select, update

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
                        datetime_complete=self._times.to_store(request.end_time),
                    )
                ).rowcount
                if changed == 1:
                    replace_attrs(conn, attrs, ("trial_id", trial_id), request.attributes)
                    return CloseResult(CloseStatus.CLOSED)
                state = conn.execute(
                    select(trials.c.state).where(trials.c.trial_id == trial_id)
                ).scalar()
            if state is None:
                return CloseResult(CloseStatus.MISSING)
            return CloseResult(CloseStatus.NOT_RUNNING, _state(state))

        return retry_locked(attempt, self.uri)

    def close_records(self, requests: Sequence[CloseRequest]) -> list[CloseResult]:
        trials = self._t["trials"]
        wanted = {int(r.record_id): r for r in requests if r.record_id.isdigit()}
        ends = [
            (trial_id, r.new_state, self._times.to_store(r.end_time))
            for trial_id, r in wanted.items()
        ]

        def attempt() -> tuple[set[int], dict[int, Any]]:
            with self._engine.begin() as conn:
                columns = (trials.c.trial_id, trials.c.state, trials.c.datetime_complete)
                closed = set_if_running(conn, columns, (trials.c.state == "RUNNING",), ends)
                audit = {trial_id: wanted[trial_id].attributes for trial_id in closed}
                replace_attrs_of_many(conn, self._t["trial_system_attributes"], "trial_id", audit)
                others = [trial_id for trial_id in wanted if trial_id not in closed]
                return closed, current_states(conn, trials.c.trial_id, trials.c.state, others)

        closed, states = retry_batch(attempt, self.uri)
        results = []
        for request in requests:
            trial_id = int(request.record_id) if request.record_id.isdigit() else None
            if trial_id in closed:
                results.append(CloseResult(CloseStatus.CLOSED))
            elif trial_id is None or trial_id not in states:
                results.append(CloseResult(CloseStatus.MISSING))
            else:
                results.append(CloseResult(CloseStatus.NOT_RUNNING, _state(states[trial_id])))
        return results

    def enqueue_retry(self, trial_id: str, max_retry: int | None) -> int | None:
        from sqlalchemy import select
        from sqlalchemy.exc import SQLAlchemyError

        from mltidy.backends.optuna.retry import enqueue_retry

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
        storage = self._optuna_storage()
        try:
            return enqueue_retry(storage, int(study_id), int(trial_id), max_retry)
        except Exception as exc:
            raise StoreError(f"{self.uri}: could not enqueue a retry ({exc})") from exc
        finally:
            storage.remove_session()

    def _optuna_storage(self) -> Any:
        """optuna's own ``RDBStorage`` over this storage, for retries (made once: it imports
        optuna and checks the schema when made)."""
        if self._retries is None:
            try:
                from optuna.storages import RDBStorage

                with quiet_optuna():
                    self._retries = RDBStorage(self.url, skip_table_creation=True)
            except Exception as exc:
                raise StoreError(f"{self.uri}: optuna cannot open this storage ({exc})") from exc
        return self._retries

    def study_health(self, selection: Selection) -> list[StudyHealth]:
        return self._studies.health(selection)

    def study_progress(self, selection: Selection) -> list[StudyProgress]:
        return self._studies.progress(selection)

    def iter_link_trials(self, selection: Selection) -> Iterator[TrialRef]:
        from sqlalchemy.exc import SQLAlchemyError

        query = self._select(selection, heartbeat=False)
        try:
            with self._engine.connect() as conn:
                rows = list(conn.execute(query))
                refs = self._link_refs(conn, rows, None)
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        yield from refs

    def link_trials(self, trial_ids: set[str], studies: Sequence[str]) -> list[TrialRef]:
        """These trials by id (an ``IN`` query per :data:`CHUNK` trials), with the link
        attributes of these trials only and the notes of their studies only."""
        from sqlalchemy.exc import SQLAlchemyError

        trials = self._t["trials"]
        ids = sorted(int(t) for t in trial_ids if t.isdigit())
        query = self._select(Selection(), heartbeat=False)
        try:
            with self._engine.connect() as conn:
                rows = [
                    row
                    for chunk in chunks(ids)
                    for row in conn.execute(query.where(trials.c.trial_id.in_(chunk)))
                ]
                return self._link_refs(conn, rows, ids)
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc

    def _link_refs(
        self, conn: Connection, rows: Sequence[Row[Any]], trial_ids: Sequence[int] | None
    ) -> list[TrialRef]:
        """The trials of ``rows`` as link refs: their link attributes (of ``trial_ids`` only,
        when given, else the whole tables' in one query each) and their studies' notes."""
        from sqlalchemy import select

        now = utc_now()
        attrs: dict[tuple[str, int], dict[str, Any]] = {}
        for kind in ("user", "system"):
            table = self._t[f"trial_{kind}_attributes"]
            attr_query = select(table.c.trial_id, table.c.key, table.c.value_json).where(
                table.c.key.in_(LINK_ATTRS)
            )
            queries = (
                [attr_query]
                if trial_ids is None
                else [attr_query.where(table.c.trial_id.in_(c)) for c in chunks(trial_ids)]
            )
            for q in queries:
                for trial_id, key, value in conn.execute(q):
                    attrs.setdefault((kind, trial_id), {})[key] = decode(value)
        study_ids = sorted({row.study_id for row in rows})
        notes: dict[int, dict[str, Any]] = {}
        for chunk in chunks(study_ids):
            notes.update(read_notes(conn, self._t["study_system_attributes"], chunk))
        refs = []
        for row in rows:
            _, note, _ = dashboard_notes.read_note(notes.get(row.study_id, {}), row.trial_id)
            refs.append(
                trial_ref(
                    self.uri,
                    (row.trial_id, int(row.number), _state(row.state)),
                    (row.study_name, row.study_id),
                    started_at=self._times.to_utc(row.datetime_start, now),
                    attrs=(
                        attrs.get(("user", row.trial_id), {}),
                        attrs.get(("system", row.trial_id), {}),
                    ),
                    note=note,
                )
            )
        return refs

    def write_trial_link(self, trial: TrialRef, run_url: str | None, note: str | None) -> str:
        user, study_attrs = self._t["trial_user_attributes"], self._t["study_system_attributes"]
        trial_id, study_id = int(trial.trial_id), int(trial.study_id)

        def attempt() -> str:
            with self._engine.begin() as conn:
                if run_url is not None:
                    url = {names.MLFLOW_RUN_URL: run_url}
                    replace_attrs(conn, user, ("trial_id", trial_id), url)
                if note is not None:
                    current = read_notes(conn, study_attrs, [study_id]).get(study_id, {})
                    version, _, chunks = dashboard_notes.read_note(current, trial_id)
                    values = dashboard_notes.note_attrs(trial_id, version + 1, note, chunks)
                    replace_attrs(conn, study_attrs, ("study_id", study_id), values)
            return ""

        return retry_locked(attempt, self.uri)

    def write_trial_notes(self, notes: Sequence[tuple[TrialRef, str]]) -> dict[str, str]:
        """Whole studies in one transaction, a few hundred notes per transaction (as a batched
        close): each transaction reads its studies' notes once and writes them together."""
        study_attrs = self._t["study_system_attributes"]
        by_study: dict[int, list[tuple[int, str]]] = {}
        for trial, note in notes:
            by_study.setdefault(int(trial.study_id), []).append((int(trial.trial_id), note))

        def attempt(group: list[int]) -> None:
            with self._engine.begin() as conn:
                current: dict[int, dict[str, Any]] = {}
                for chunk in chunks(group):
                    current.update(read_notes(conn, study_attrs, chunk))
                values: dict[int, dict[str, Any]] = {}
                for study_id in group:
                    attrs = current.get(study_id, {})
                    for trial_id, note in by_study[study_id]:
                        version, _, old = dashboard_notes.read_note(attrs, trial_id)
                        note_attrs = dashboard_notes.note_attrs(trial_id, version + 1, note, old)
                        values.setdefault(study_id, {}).update(note_attrs)
                replace_attrs_of_many(conn, study_attrs, "study_id", values)

        group: list[int] = []
        count = 0
        for study_id, study_notes in by_study.items():
            group.append(study_id)
            count += len(study_notes)
            if count >= NOTES_PER_TRANSACTION:
                retry_locked(lambda: attempt(group), self.uri)  # noqa: B023
                group, count = [], 0
        if group:
            retry_locked(lambda: attempt(group), self.uri)
        return {}

    def close(self) -> None:
        self._db.close()
        if self._retries is not None:
            self._retries.remove_session()
            self._retries.engine.dispose()
            self._retries = None


def _state(value: Any) -> str:
    """A state as the table holds it (``RUNNING`` or ``TrialState.RUNNING``), by its name."""
    return str(value).rsplit(".", 1)[-1]


__all__ = ["CHUNK", "OptunaSqlBackend"]
