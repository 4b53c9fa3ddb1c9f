"""The contract every store backend keeps.

A backend adapts one MLflow tracking store or one Optuna storage to mltidy. The rules:

* **Reading never creates, migrates or locks a store for long.** Opening a backend on a path that
  does not exist raises :class:`~mltidy.errors.StoreNotFound` and leaves no file behind; a store
  with a schema the backend does not understand raises :class:`~mltidy.errors.UnsupportedSchema`
  instead of being upgraded.
* **Errors are translated at the boundary.** Every method raises only subclasses of
  :class:`~mltidy.errors.StoreError`; library exceptions (SQLAlchemy, MLflow, Optuna, requests)
  never escape. Messages never contain secrets.
* **Values are immutable and in UTC.** Methods return frozen :class:`~mltidy.model.Record`
  objects whose datetimes are timezone-aware UTC, whatever the store keeps.
* **Heavy imports are lazy.** Importing a backend module must not import mlflow, optuna or
  sqlalchemy; that happens when a backend is opened.
* **Never trust a server to filter.** Backends check states themselves before returning records.
* A backend is used from one thread at a time.

Size: over 400 lines because it is the whole contract in one place: the Backend ABC and every
capability ABC, each with the docstring that is its specification (the code is mostly those
docstrings; splitting them would scatter the contract a newcomer reads in one go).
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, tzinfo
from typing import Protocol

from mltidy import names
from mltidy.model import (
    ClockReading,
    CloseRequest,
    CloseResult,
    HistoryMark,
    Record,
    RunContents,
    RunRef,
    Selection,
    StoreId,
    StoreKind,
    StudyHealth,
    StudyProgress,
    TrialRef,
)


class Backend(abc.ABC):
    """One store, opened. Use it as a context manager, or call :meth:`close` when done.

    Attributes:
        kind: which kind of store this is.
        uri: the store's identity (secret-free, absolute; ``backends/identity.py``).
    """

    kind: StoreKind
    uri: StoreId

    @abc.abstractmethod
    def describe(self) -> str:
        """One line about the store (backend type, schema version) for ``--verbose`` and doctor.

        Raises:
            StoreError: the store cannot be read.
        """

    @abc.abstractmethod
    def iter_active(self, selection: Selection) -> Iterator[Record]:
        """Every record still in the running state (MLflow ``RUNNING``, Optuna ``RUNNING``).

        Args:
            selection: which experiments or studies to read.

        Returns:
            Records in no particular order, streamed where the store allows it.

        Raises:
            StoreError: the store cannot be read.
        """

    @abc.abstractmethod
    def read(self, record_id: str) -> Record | None:
        """Read one record fresh from the store, whatever its state.

        Args:
            record_id: a run id, or a trial id as a string.

        Returns:
            The record, or ``None`` when the store has no such record.

        Raises:
            StoreError: the store cannot be read.
        """

    def read_many(self, record_ids: Sequence[str]) -> dict[str, Record]:
        """Read several records fresh, whatever their state, for the re-read before a close
        (their state and activity: the newest activity and mltidy's heartbeat; a backend may
        leave out what only judging needs, such as a run's rhythm or its provenance tags). A
        backend that can read them in one query overrides this loop over :meth:`read`.

        Returns:
            The records found, by id (ids the store does not have are left out).

        Raises:
            StoreError: the store cannot be read.
        """
        found = {}
        for record_id in record_ids:
            record = self.read(record_id)
            if record is not None:
                found[record_id] = record
        return found

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections. Safe to call twice."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Closer(abc.ABC):
    """Capability: end a running record with a compare-and-set.

    Each backend's class docstring states its guarantee: a conditional write (``UPDATE ...
    WHERE state = 'RUNNING'``) where the store has one, else a fresh re-read right before the
    write.
    """

    @abc.abstractmethod
    def close_record(self, request: CloseRequest) -> CloseResult:
        """Close the record if it is still running; never touch it otherwise.

        Raises:
            StoreError: the write failed (permission denied, locked after retries, ...).
        """


class BatchCloser(Closer):
    """Capability: close many records in one transaction, each still a compare-and-set.

    For stores with transactions (the SQL fast paths): each record changes state only if it is
    still running when the transaction writes it, and its audit attributes are written in the
    same transaction, so a record is never half closed, whatever kills the process and when.
    Callers pass a few hundred requests per call: each call holds the store's write lock for
    its one transaction, and training jobs writing to the same store wait for it.
    """

    @abc.abstractmethod
    def close_records(self, requests: Sequence[CloseRequest]) -> list[CloseResult]:
        """Close every requested record that is still running, in one transaction.

        Args:
            requests: records with distinct ids.

        Returns:
            One result per request, in the same order.

        Raises:
            StoreError: the transaction failed; nothing of it was written.
        """


class TrialRetrier(abc.ABC):
    """Capability: enqueue a WAITING copy of a failed trial, as Optuna's retry callback does."""

    @abc.abstractmethod
    def enqueue_retry(self, trial_id: str, max_retry: int | None) -> int | None:
        """Enqueue a retry of a finished trial.

        Uses Optuna's own ``failed_trial`` / ``retry_history`` system attributes
        (``RetryHeartbeatStaleTrialCallback``), so Optuna's helpers recognise the retry.

        Returns:
            The new trial's number, or ``None`` when ``max_retry`` retries were already made.

        Raises:
            StoreError: the storage refused.
        """


class RunDeclutterer(abc.ABC):
    """Capability: find the runs mltidy closed, and soft-delete (restorable) empty ones."""

    @abc.abstractmethod
    def iter_closed_runs(self, selection: Selection) -> Iterator[RunContents]:
        """Active (not deleted) runs carrying ``mltidy.closed_at``, with what they hold."""

    @abc.abstractmethod
    def soft_delete(self, run_id: str) -> bool:
        """Move a finished run to MLflow's ``deleted`` lifecycle stage (``mlflow runs restore``
        brings it back). Returns ``False`` when the run is running, gone or already deleted."""


class StudyReporter(abc.ABC):
    """Capability: per-study counts of failed and unfinished trials."""

    @abc.abstractmethod
    def study_health(self, selection: Selection) -> list[StudyHealth]:
        """One entry per selected study."""


class RunLinker(abc.ABC):
    """Capability: find the runs that belong to trials, and write links on runs."""

    @abc.abstractmethod
    def link_candidates(self, run_ids: set[str], studies: set[str]) -> list[RunRef]:
        """Runs with one of these ids, or naming one of these studies (mltidy plugin or link
        tags), or in an experiment named after one of them with a ``number`` tag
        (optuna-integration's MLflowCallback)."""

    @abc.abstractmethod
    def write_run_tags(self, run_id: str, tags: Mapping[str, str]) -> None:
        """Set tags on a run, in any state (MLflow allows tags on finished runs).

        Raises:
            StoreError: the write failed.
        """

    def run_notes(self, run_ids: set[str]) -> dict[str, str]:
        """The MLflow description (``mlflow.note.content``) of these runs, by id; ``""`` (or
        no entry) for a run without one or a run the store does not have. A store that can read
        that one tag alone overrides this; the default reads the runs as link candidates.

        Raises:
            StoreError: the store cannot be read.
        """
        return {
            ref.run_id: ref.tags.get(names.MLFLOW_NOTE, "")
            for ref in self.link_candidates(run_ids, set())
        }

    def write_runs_tags(self, tags: Mapping[str, Mapping[str, str]]) -> None:
        """Set tags on many runs (run id -> tags). A store that can write them in one
        transaction overrides this; the default writes run by run.

        Raises:
            StoreError: the write failed.
        """
        for run_id, values in tags.items():
            self.write_run_tags(run_id, values)


class TrialLinker(abc.ABC):
    """Capability: list trials with their link attributes and notes, and write links on them."""

    @abc.abstractmethod
    def iter_link_trials(self, selection: Selection) -> Iterator[TrialRef]:
        """Every trial of the selected studies, any state."""

    def link_trials(self, trial_ids: set[str], studies: Sequence[str]) -> list[TrialRef]:
        """These trials (of the ``studies`` named), any state, as :meth:`iter_link_trials`
        gives them; ids the store does not have are left out. A store that can read trials by
        id overrides this; the default reads every trial of the studies.

        Raises:
            StoreError: the store cannot be read.
        """
        selection = Selection(studies=tuple(studies))
        return [t for t in self.iter_link_trials(selection) if t.trial_id in trial_ids]

    @abc.abstractmethod
    def write_trial_link(self, trial: TrialRef, run_url: str | None, note: str | None) -> str:
        """Write ``mlflow_run_url`` (if not ``None``) and the trial's optuna-dashboard note (if
        not ``None``). Returns a short remark when a part could not be written, else ``""``.

        Raises:
            StoreError: the write failed.
        """

    def write_trial_notes(self, notes: Sequence[tuple[TrialRef, str]]) -> dict[str, str]:
        """Write the optuna-dashboard notes of many trials (of one study or several). Returns
        a short remark by trial id for each note that could not be written. A store that can
        write them in one transaction per study overrides this; the default goes trial by
        trial.

        Raises:
            StoreError: the write failed.
        """
        remarks: dict[str, str] = {}
        for trial, note in notes:
            remark = self.write_trial_link(trial, None, note)
            if remark:
                remarks[trial.trial_id] = remark
        return remarks


class RunHistory(abc.ABC):
    """Capability: the MLflow runs that ended recently (for ``watch``'s finished/failed/killed)."""

    @abc.abstractmethod
    def iter_ended_runs(self, selection: Selection, since: datetime) -> Iterator[Record]:
        """Runs of selected, active experiments that ended (``FINISHED``, ``FAILED``,
        ``KILLED``) at or after ``since``; each has :attr:`~mltidy.model.Record.ended_at` set.

        ``since`` is compared with the run's ``end_time``, which the training job's clock wrote:
        callers leave a margin and deduplicate.

        Raises:
            StoreError: the store cannot be read.
        """

    def ended_runs_after(
        self, selection: Selection, since: datetime, mark: HistoryMark | None, now: datetime
    ) -> tuple[list[Record], HistoryMark | None]:
        """:meth:`iter_ended_runs`, for a caller that polls: ``mark`` is what the previous call
        returned (``None`` the first time), and the call returns the next one.

        ``end_time`` has no index in MLflow's schema, so the query reads the whole ``runs``
        table; a backend that can find the runs that may have ended since ``mark`` without
        reading it all overrides this (the default reads it all and returns no mark). The
        runs returned are the same either way, but for a run resumed and ended again between
        two polls, which an override reports by its next full read.

        Raises:
            StoreError: the store cannot be read.
        """
        return list(self.iter_ended_runs(selection, since)), None


class StudyWatcher(abc.ABC):
    """Capability: per-study progress (trial counts per state, best value, budget)."""

    @abc.abstractmethod
    def study_progress(self, selection: Selection) -> list[StudyProgress]:
        """One entry per selected study, ordered by name.

        Raises:
            StoreError: the storage cannot be read.
        """


class StoreClock(abc.ABC):
    """Capability: the store's own clock and the newest time its records carry (``doctor``
    shows how far they are from this machine's clock)."""

    @abc.abstractmethod
    def clock(self) -> ClockReading:
        """The server's clock now, and the newest record time.

        Raises:
            StoreError: the store cannot be read.
        """


class ContainerLister(abc.ABC):
    """Capability: the experiments (MLflow) or studies (Optuna) a store holds, so that a name
    given with ``-e``/``-s`` that names none of them is an error, not an empty result."""

    @abc.abstractmethod
    def containers(self) -> dict[str, str]:
        """Every active experiment, or every study: id -> name.

        Raises:
            StoreError: the store cannot be read.
        """


class RhythmReader(abc.ABC):
    """Capability: a store whose :meth:`Backend.iter_active` leaves out the runs' rhythms (their
    metric history costs more to read than the rest of a scan) and reads them on demand, for
    the runs whose verdict they can change (:data:`mltidy.judge.RHYTHM_MATTERS`)."""

    @abc.abstractmethod
    def with_rhythms(self, runs: Sequence[Record]) -> list[Record]:
        """These RUNNING runs, each with its rhythm, in the same order.

        Raises:
            StoreError: the store cannot be read.
        """


class MakesWritable(abc.ABC):
    """Capability: turn a backend opened read-only into a writable one, in place.

    The session opens every store read-only and calls this when a command applies a change, so
    that a store is opened once per command. A backend without it is closed and opened again.
    """

    @abc.abstractmethod
    def make_writable(self) -> None:
        """From now on, allow writes.

        Raises:
            StoreError: the store cannot be opened for writing (read-only file, permissions).
        """


class WriterTimes(Protocol):
    """How one storage's naive datetimes are read: the Optuna family's ``StorageTimes``."""

    @property
    def known(self) -> bool:
        """Whether naive rows are read with certainty (UTC, or a known writer's zone)."""

    def set_zone(self, zone: tzinfo, source: str) -> None:
        """Read (and write) naive local rows in ``zone``."""

    def describe(self) -> str:
        """How the storage's times are read, in words."""


class NaiveTimes(abc.ABC):
    """Capability: a storage that keeps naive datetimes (Optuna), whose writer's zone mltidy
    may be told or may infer.

    Optuna 4.x wrote naive local time of the writing process and no storage records which zone
    that was; a backend reads such rows in :meth:`set_writer_zone`'s zone once given one, else in
    this machine's zone and marks its records (``Record.assumed_utc_offset``). Writes (a trial's
    ``datetime_complete``) use the same zone, so a store keeps one convention.
    """

    @property
    @abc.abstractmethod
    def writer_times(self) -> WriterTimes:
        """How this storage's naive datetimes are read (and written)."""

    def writer_zone_known(self) -> bool:
        """Whether every naive row is read with certainty (naive UTC, or a zone given)."""
        return self.writer_times.known

    def set_writer_zone(self, zone: tzinfo, source: str) -> None:
        """Read and write naive local rows in ``zone``; ``source`` says where it came from."""
        self.writer_times.set_zone(zone, source)

    @abc.abstractmethod
    def linked_starts(self, limit: int) -> list[tuple[str, datetime]]:
        """Up to ``limit`` trials (newest first) that name their MLflow run: (run id, the
        trial's naive ``datetime_start`` as stored). Rows that are not naive local are left out.

        Raises:
            StoreError: the storage cannot be read.
        """

    def describe_times(self) -> str:
        """How the storage's times are read, in words (doctor)."""
        return self.writer_times.describe()
