"""Optuna RDB storages read through optuna's ``RDBStorage``: the library path.

The fast path (``sql.py``) reads Optuna's tables directly and so only trusts the schema
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
whatever schema the installed optuna has. Everything else is
:class:`~mltidy.backends.optuna.storage_ops.StorageOps`, the journal backend's code: written
against optuna's ``BaseStorage``, it serves an ``RDBStorage`` unchanged.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from mltidy import names
from mltidy.backends.identity import sqlite_file, store_id
from mltidy.backends.interface import (
    NaiveTimes,
)
from mltidy.backends.optuna.storage_ops import StorageOps, StorageOpsBackend, quiet_optuna
from mltidy.backends.optuna.tables import (
    CHUNK,
    db_clock_offset,
    inspect_storage,
    naive_linked_starts,
    tables,
)
from mltidy.backends.optuna.time import StorageTimes, heartbeat_to_utc, writes_naive_utc
from mltidy.backends.sql import (
    PG_READ_ONLY_OPTIONS,
    create_reader_engine,
    server_connect_args,
    sqlite_connector,
    takes_libpq_options,
    translate_sql_error,
)
from mltidy.backends.translate import first_line
from mltidy.errors import StoreError, UnsupportedSchema
from mltidy.model import (
    StoreKind,
    utc_now,
)

if TYPE_CHECKING:
    from optuna.storages import RDBStorage

_log = logging.getLogger(__name__)


class OptunaSqlLibraryBackend(
    StorageOpsBackend,
    NaiveTimes,
):
    """An Optuna RDB storage read through ``RDBStorage``, after checks that opening it is safe.

    Closing relies on optuna's own check: ``RDBStorage`` refuses to change a finished trial (it
    locks the row where the database can). ``datetime_complete`` is the time of closing; the true
    end is kept in ``mltidy.end_time``.
    """

    kind = StoreKind.OPTUNA

    def __init__(self, url: str, *, writable: bool = False) -> None:
        if url.startswith("postgres://"):
            url = "postgresql://" + url[len("postgres://") :]
        self.uri = store_id(self.kind, url)
        engine = create_reader_engine(url)
        try:
            self.version = inspect_storage(engine, self.uri)
        finally:
            engine.dispose()
        if self.version.schema_version is None or self.version.revision is None:
            raise UnsupportedSchema(
                f"{self.uri}: version_info or alembic_version is empty, and optuna would fill "
                "them when opening the storage",
                hint="mltidy never changes a storage to read it; "
                f"{names.READ_PATH_ENV}=fast reads it without optuna",
            )
        self._times = StorageTimes(writes_naive_utc(self.version.library_version))
        self._rdb = self._open_rdb(url, writable)
        import optuna

        self._optuna_converts = writes_naive_utc(optuna.__version__)
        self._ops = StorageOps(
            self._rdb,
            self.uri,
            self._translate,
            started_at=self._started_at,
            activity=self._heartbeats,
            study_of=self._study_of,
            assumed=self._assumed,
        )

    def _open_rdb(self, url: str, writable: bool) -> RDBStorage:
        from sqlalchemy.exc import SQLAlchemyError

        try:
            import optuna
            from optuna.storages import RDBStorage

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            with quiet_optuna():
                return RDBStorage(
                    url,
                    engine_kwargs=_engine_kwargs(url, writable),
                    skip_table_creation=True,
                )
        except RuntimeError as exc:
            # optuna's compatibility check: the schema is not the installed optuna's head.
            raise UnsupportedSchema(
                f"{self.uri}: {first_line(exc)}",
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
        return StoreError(f"{self.uri}: {first_line(exc)}")

    def describe(self) -> str:
        dialect = self._rdb.engine.dialect.name
        return (
            f"Optuna RDB storage ({dialect}) read through RDBStorage, schema "
            f"{self.version.schema_version}/{self.version.revision}, "
            f"set up by optuna {self.version.library_version}"
        )

    def _stored(self, value: datetime | None) -> datetime | None:
        """A ``FrozenTrial`` datetime as the table holds it: optuna 5 converts the stored value
        (taken as naive UTC) to naive local time of this machine when it reads; undo that."""
        if value is None or value.tzinfo is not None or not self._optuna_converts:
            return value
        return value.astimezone(timezone.utc).replace(tzinfo=None)

    def _started_at(self, value: datetime | None) -> datetime | None:
        return self._times.to_utc(self._stored(value), utc_now())

    def _assumed(self, value: datetime | None) -> timedelta | None:
        return self._times.assumed(self._stored(value), utc_now())

    @property
    def writer_times(self) -> StorageTimes:
        return self._times

    def linked_starts(self, limit: int) -> list[tuple[str, datetime]]:
        return naive_linked_starts(self._rdb.engine, tables(), limit, self.uri)

    def _study_of(self, trial_id: int) -> int | None:
        from optuna.storages._rdb import models

        session = self._rdb.scoped_session()
        try:
            found = session.get(models.TrialModel, trial_id)
            return None if found is None else int(found.study_id)
        finally:
            self._rdb.scoped_session.remove()

    def _heartbeats(self, trial_ids: Sequence[int]) -> dict[int, datetime]:
        """The newest heartbeat per trial, from optuna's own ORM model (no public API reads it),
        as aware UTC."""
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
            for start in range(0, len(trial_ids), CHUNK):
                chunk = list(trial_ids[start : start + CHUNK])
                for trial_id, beat in query.filter(TrialHeartbeatModel.trial_id.in_(chunk)):
                    if isinstance(beat, datetime) and (
                        trial_id not in found or beat > found[trial_id]
                    ):
                        found[trial_id] = beat
        finally:
            self._rdb.scoped_session.remove()
        if not found:
            return {}
        with self._rdb.engine.connect() as conn:
            offset = db_clock_offset(conn)
        return {trial_id: heartbeat_to_utc(beat, offset) for trial_id, beat in found.items()}

    def close(self) -> None:
        self._rdb.remove_session()
        self._rdb.engine.dispose()


def _engine_kwargs(url: str, writable: bool) -> dict[str, Any]:
    """Engine options that keep optuna's sessions read-only unless the command writes.

    A sqlite file opens through a ``mode=ro`` URI (``mode=rw`` to write: still never created);
    PostgreSQL sessions start with ``default_transaction_read_only``.
    """
    path = sqlite_file(url)
    if path is not None:
        return {"creator": sqlite_connector(path.resolve(), writable=writable)}
    connect_args = server_connect_args(url)
    if takes_libpq_options(url) and not writable:
        connect_args["options"] = PG_READ_ONLY_OPTIONS
    return {"connect_args": connect_args} if connect_args else {}


__all__ = ["OptunaSqlLibraryBackend"]
