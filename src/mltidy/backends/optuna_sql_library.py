"""Optuna RDB storages read through optuna's ``RDBStorage``: the library path.

The fast path (``optuna_sql.py``) reads Optuna's tables directly and so only trusts the schema
versions someone has checked (``schema_versions.py``). A storage with any other version is read
through optuna itself, which knows its own schema: one round of queries per study instead of one
query for all of them, but right by construction.

``RDBStorage`` is not a reader either. ``skip_table_creation=True`` keeps it from creating
tables, but it still inserts a ``version_info`` row and stamps ``alembic_version`` when those are
empty. So before optuna sees the URL this module checks, on a read-only engine, that the storage
is an Optuna storage (the fast path's own table check) and that both are filled; and optuna's
engine itself is read-only (sqlite ``mode=ro``, PostgreSQL ``default_transaction_read_only``)
unless the command writes. A storage optuna finds incompatible is reported with optuna's advice.

Everything optuna's public API offers comes from it; the two things it does not expose, the
heartbeat times and the study of a trial id, come from optuna's own ORM models, which follow
whatever schema the installed optuna has. The storage-API methods (close, retry, study health)
are :class:`~mltidy.backends.optuna_journal.OptunaJournalBackend`'s: written against optuna's
``BaseStorage``, they serve an ``RDBStorage`` unchanged.
"""

from __future__ import annotations

import json
import logging
import sqlite3
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mltidy.backends.identity import sqlite_file, store_id
from mltidy.backends.optuna_journal import LINK_KEYS, OptunaJournalBackend
from mltidy.backends.optuna_sql import db_clock_offset, inspect_storage
from mltidy.backends.optuna_time import rdb_to_utc, writes_naive_utc
from mltidy.backends.sql import (
    CONNECT_TIMEOUT_S,
    PG_READ_ONLY_OPTIONS,
    SQLITE_BUSY_TIMEOUT_S,
    create_reader_engine,
    takes_libpq_options,
    translate_sql_error,
)
from mltidy.errors import StoreError, UnsupportedSchema
from mltidy.model import Record, RecordKind, Selection, utc_now
from mltidy.redact import redact

if TYPE_CHECKING:
    from optuna.storages import RDBStorage
    from optuna.trial import FrozenTrial

_log = logging.getLogger(__name__)


class OptunaSqlLibraryBackend(OptunaJournalBackend):
    """An Optuna RDB storage read through ``RDBStorage``, after checks that opening it is safe."""

    close_guarantee = (
        "optuna's own check: RDBStorage refuses to change a finished trial (it locks the row "
        "where the database can); datetime_complete is the time of closing, the true end is "
        "kept in mltidy.end_time"
    )

    def __init__(self, url: str, *, writable: bool = False) -> None:
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        self.uri = store_id(self.kind, url)
        self._uri = url
        self.is_redis = False
        self.path = None
        engine = create_reader_engine(url)
        try:
            self.version = inspect_storage(engine, self.uri)
        finally:
            engine.dispose()
        if self.version.schema_version is None or self.version.revision is None:
            raise UnsupportedSchema(
                f"{self.uri}: version_info or alembic_version is empty, and optuna would fill "
                "them when opening the storage",
                hint="mltidy never changes a storage to read it; MLTIDY_READ_PATH=fast reads it "
                "without optuna",
            )
        self._naive_utc = writes_naive_utc(self.version.library_version)
        self._rdb = self._open_rdb(url, writable)
        self._storage = self._rdb

    def _open_rdb(self, url: str, writable: bool) -> RDBStorage:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            import optuna
            from optuna.storages import RDBStorage

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            return RDBStorage(
                url,
                engine_kwargs=_engine_kwargs(url, writable),
                skip_table_creation=True,
            )
        except RuntimeError as exc:
            # optuna's compatibility check: the schema is not the installed optuna's head.
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise UnsupportedSchema(
                f"{self.uri}: {redact(first)}",
                hint="mltidy never migrates a storage; 'optuna storage upgrade' does",
            ) from exc
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, self.uri) from exc
        except Exception as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: BaseException) -> StoreError:
        from sqlalchemy.exc import SQLAlchemyError

        if isinstance(exc, SQLAlchemyError):
            return translate_sql_error(exc, self.uri)
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return StoreError(f"{self.uri}: {redact(text)}")

    def describe(self) -> str:
        dialect = self._rdb.engine.dialect.name
        return (
            f"Optuna RDB storage ({dialect}) read through RDBStorage, schema "
            f"{self.version.schema_version}/{self.version.revision}, "
            f"set up by optuna {self.version.library_version}"
        )

    def iter_active(self, selection: Selection) -> Iterator[Record]:
        from optuna.trial import TrialState

        try:
            offset = self._clock_offset()
            for study in self._storage.get_all_studies():
                if not selection.wants_study(study.study_name):
                    continue
                trials = [
                    t
                    for t in self._storage.get_all_trials(
                        study._study_id, deepcopy=False, states=(TrialState.RUNNING,)
                    )
                    # Never trust the filter alone.
                    if t.state == TrialState.RUNNING
                ]
                beats = self._heartbeats([t._trial_id for t in trials])
                for trial in trials:
                    yield self._rdb_record(trial, study.study_name, study._study_id, beats, offset)
        except StoreError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc

    def read(self, record_id: str) -> Record | None:
        if not record_id.isdigit():
            return None
        trial_id = int(record_id)
        try:
            try:
                trial = self._storage.get_trial(trial_id)
            except KeyError:
                return None
            study_id = self._study_of(trial_id)
            if study_id is None:
                return None
            name = self._storage.get_study_name_from_id(study_id)
            beats = self._heartbeats([trial_id])
            return self._rdb_record(trial, name, study_id, beats, self._clock_offset())
        except StoreError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc

    def _study_of(self, trial_id: int) -> int | None:
        from optuna.storages._rdb import models

        session = self._rdb.scoped_session()
        try:
            found = session.get(models.TrialModel, trial_id)
            return None if found is None else int(found.study_id)
        finally:
            self._rdb.scoped_session.remove()

    def _heartbeats(self, trial_ids: Sequence[int]) -> dict[int, datetime]:
        """The newest heartbeat per trial, from optuna's own ORM model (no public API reads it)."""
        if not trial_ids or not self.version.has_heartbeats:
            return {}
        try:
            from optuna.storages._rdb.models import TrialHeartbeatModel
        except ImportError:
            _log.debug("this optuna has no TrialHeartbeatModel; trials carry no heartbeat")
            return {}
        session = self._rdb.scoped_session()
        try:
            found: dict[int, datetime] = {}
            query = session.query(TrialHeartbeatModel.trial_id, TrialHeartbeatModel.heartbeat)
            for start in range(0, len(trial_ids), 500):
                chunk = list(trial_ids[start : start + 500])
                for trial_id, beat in query.filter(TrialHeartbeatModel.trial_id.in_(chunk)):
                    if isinstance(beat, datetime) and (
                        trial_id not in found or beat > found[trial_id]
                    ):
                        found[trial_id] = beat
            return found
        finally:
            self._rdb.scoped_session.remove()

    def _clock_offset(self) -> timedelta:
        if not self.version.has_heartbeats:
            return timedelta(0)
        with self._rdb.engine.connect() as conn:
            return db_clock_offset(conn)

    def _rdb_record(
        self,
        trial: FrozenTrial,
        study_name: str,
        study_id: int,
        beats: dict[int, datetime],
        offset: timedelta,
    ) -> Record:
        now = utc_now()
        attrs: dict[str, Any] = {}
        for source in (trial.user_attrs, trial.system_attrs):
            for key, value in source.items():
                if key in LINK_KEYS or key.startswith("mltidy."):
                    attrs[key] = value if isinstance(value, str) else json.dumps(value)
        beat = beats.get(trial._trial_id)
        last = None
        if beat is not None:
            last = beat if beat.tzinfo else (beat - offset).replace(tzinfo=now.tzinfo)
        return Record(
            kind=RecordKind.OPTUNA_TRIAL,
            store=self.uri,
            id=str(trial._trial_id),
            name=f"trial {trial.number}",
            container=study_name,
            container_id=str(study_id),
            state=trial.state.name,
            started_at=rdb_to_utc(trial.datetime_start, naive_utc=self._naive_utc, now=now),
            last_activity_at=last,
            trial_number=trial.number,
            tags=attrs,
        )

    def close(self) -> None:
        rdb = getattr(self, "_rdb", None)
        if rdb is not None:
            rdb.remove_session()
            rdb.engine.dispose()


def _engine_kwargs(url: str, writable: bool) -> dict[str, Any]:
    """Engine options that keep optuna's sessions read-only unless the command writes.

    A sqlite file opens through a ``mode=ro`` URI (``mode=rw`` to write: still never created);
    PostgreSQL sessions start with ``default_transaction_read_only``.
    """
    path = sqlite_file(url)
    if path is not None:
        target = f"file:{quote(str(path.resolve()))}?mode={'rw' if writable else 'ro'}"

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(
                target, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False
            )

        return {"creator": connect}
    connect_args: dict[str, object] = {}
    if url.startswith(("postgresql", "postgres", "mysql", "mariadb")):
        connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
    if takes_libpq_options(url) and not writable:
        connect_args["options"] = PG_READ_ONLY_OPTIONS
    return {"connect_args": connect_args} if connect_args else {}


__all__ = ["OptunaSqlLibraryBackend"]
