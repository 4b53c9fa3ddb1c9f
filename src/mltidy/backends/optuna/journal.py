"""Optuna journal storages: journal files (``JournalFileBackend``) and redis journals.

The journal is replayed by optuna itself, so every log format optuna understands is read right.
A journal has no heartbeat table: trials carry no activity time unless mltidy's heartbeat ran.
This module checks and opens the journal; the reads and writes are :class:`StorageOps`.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from mltidy import names
from mltidy.backends.identity import JOURNAL_PREFIXES, store_id, strip_scheme
from mltidy.backends.interface import (
    MakesWritable,
    NaiveTimes,
)
from mltidy.backends.optuna.storage_ops import StorageOps, StorageOpsBackend, quiet_optuna
from mltidy.backends.optuna.time import StorageTimes
from mltidy.backends.translate import first_line
from mltidy.bounded import read_head
from mltidy.errors import NotAStore, StoreError, StoreNotFound, StoreUnreachable
from mltidy.model import (
    StoreKind,
    utc_now,
)

if TYPE_CHECKING:
    from optuna.storages import JournalStorage


def journal_path(uri: str) -> Path:
    """The file behind a journal URI (``journal:///path``, ``file:///path`` or a plain path)."""
    return strip_scheme(uri, JOURNAL_PREFIXES)


def looks_like_journal(path: Path, limit: int = 1 << 16) -> bool:
    """Whether a file starts with an Optuna journal operation (a JSON object with ``op_code``),
    judged from at most ``limit`` bytes (discovery reads a few KB per file)."""
    head = read_head(path, limit)
    if not head:
        return False
    first = head.split(b"\n", 1)[0]
    try:
        entry = json.loads(first)
    except ValueError:
        return False
    return isinstance(entry, dict) and "op_code" in entry


class OptunaJournalBackend(
    StorageOpsBackend,
    MakesWritable,
    NaiveTimes,
):
    """An Optuna journal file or redis journal, replayed through optuna's ``JournalStorage``.

    Closing relies on optuna's own check: the journal is replayed right before the write and
    optuna refuses to change a finished trial. ``datetime_complete`` is the time of closing (the
    journal API sets it); the true end is kept in ``mltidy.end_time``.
    """

    kind = StoreKind.OPTUNA

    def __init__(self, uri: str, *, writable: bool = False) -> None:
        self.uri = store_id(self.kind, uri)
        self.is_redis = uri.startswith(("redis://", "rediss://", "unix://"))
        self.path: Path | None = None
        if not self.is_redis:
            path = journal_path(uri)
            if not path.exists():
                raise StoreNotFound(
                    f"{path} does not exist", hint="check the path; mltidy never creates a store"
                )
            if not path.is_file():
                raise NotAStore(f"{path} is not an Optuna journal file")
            if path.stat().st_size and not looks_like_journal(path):
                raise NotAStore(f"{path} is not an Optuna journal file")
            self.path = path
        # Journal lines of Optuna 5 carry their offset; naive ones are 4.x local time.
        self._times = StorageTimes(naive_utc=False)
        self._ops = StorageOps(
            self._open(uri),
            self.uri,
            self._translate,
            started_at=lambda value: self._times.to_utc(value, utc_now()),
            assumed=lambda value: self._times.assumed(value, utc_now()),
        )

    def _open(self, uri: str) -> JournalStorage:
        try:
            import optuna
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            if self.path is not None:
                return JournalStorage(JournalFileBackend(str(self.path)))
            from optuna.storages.journal import JournalRedisBackend

            with quiet_optuna():
                return JournalStorage(JournalRedisBackend(uri))
        except ImportError as exc:
            raise StoreError(
                f"{self.uri}: redis journals need the redis package", hint="pip install redis"
            ) from exc
        except Exception as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: BaseException) -> StoreError:
        if isinstance(exc, AssertionError):
            # optuna's replay ends in `assert False, "Should not reach."` at an operation it
            # does not know.
            found = self._unknown_op()
            what = f"operation {found}" if found else "an operation"
            return NotAStore(
                f"{self.uri} holds {what} that optuna {_optuna_version()} does not know: written "
                "by a newer optuna, or not an Optuna journal",
                hint="read it with the optuna version that wrote it",
            )
        text = first_line(exc)
        lowered = text.lower()
        if "connect" in lowered or "refused" in lowered:
            return StoreUnreachable(f"{self.uri}: cannot connect ({text})")
        if isinstance(exc, (ValueError, KeyError, TypeError)):
            return NotAStore(f"{self.uri} is not a readable Optuna journal ({text})")
        return StoreError(f"{self.uri}: {text}")

    def _unknown_op(self) -> str | None:
        """The first ``op_code`` in the journal file that optuna has no operation for."""
        if self.path is None:
            return None
        from optuna.storages.journal._storage import JournalOperation

        known = {op.value for op in JournalOperation}
        try:
            with self.path.open("rb") as handle:
                for number, line in enumerate(handle, start=1):
                    try:
                        op = json.loads(line).get("op_code")
                    except (ValueError, AttributeError):
                        continue
                    if op not in known:
                        return f"op_code {str(op)[:20]!r} (line {number})"
        except OSError:
            return None
        return None

    def make_writable(self) -> None:
        """Nothing to do: a journal opens no read-only session."""

    def describe(self) -> str:
        return "Optuna redis journal" if self.is_redis else "Optuna journal file"

    @property
    def writer_times(self) -> StorageTimes:
        return self._times

    def describe_times(self) -> str:
        return "offsets in the journal (Optuna 5); naive lines: " + self._times.describe()

    def linked_starts(self, limit: int) -> list[tuple[str, datetime]]:
        storage = self._ops.storage
        found: list[tuple[int, str, datetime]] = []
        try:
            for study in storage.get_all_studies():
                for trial in storage.get_all_trials(study._study_id, deepcopy=False):
                    start = trial.datetime_start
                    run_id = trial.user_attrs.get(names.MLFLOW_RUN_ID) or trial.system_attrs.get(
                        names.MLFLOW_RUN_ID
                    )
                    if isinstance(run_id, str) and start is not None and start.tzinfo is None:
                        found.append((trial._trial_id, run_id, start))
        except Exception as exc:
            raise self._translate(exc) from exc
        found.sort(reverse=True)
        return [(run_id, start) for _, run_id, start in found[:limit]]


def _optuna_version() -> str:
    from importlib.metadata import version

    return version("optuna")


__all__ = ["OptunaJournalBackend", "journal_path", "looks_like_journal"]
