"""Everything mltidy does with an Optuna storage through optuna's ``BaseStorage`` API.

Both storage-API backends hold one :class:`StorageOps`: ``journal.py`` (``JournalStorage``) and
``library.py`` (``RDBStorage`` at versions the fast path does not know). They differ in how they
check and open the storage, and in what the API does not offer, which they pass in: where a
trial's activity comes from (RDB heartbeats; a journal has none), how a trial id finds its study,
and how the storage's naive start times are read.

Closing relies on optuna's own check: right before the write the trial is read fresh (a journal
is replayed), and optuna refuses to change a finished trial (RDB storages lock the row where the
database can). ``datetime_complete`` is then the time of closing, which the API sets; the true
end is kept in ``mltidy.end_time``. Notes live in study system attributes and can always be
written; optuna refuses user attributes on finished trials, so finished trials get the note but
no ``mlflow_run_url``.

Size: one class, :class:`StorageOps`, and the base of the two backends that use it: every operation
over optuna's storage API, so the journal and library paths cannot drift apart.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, TypeVar

from mltidy import dashboard_notes, names
from mltidy.backends.interface import (
    Backend,
    Closer,
    ContainerLister,
    StudyReporter,
    StudyWatcher,
    TrialLinker,
    TrialRetrier,
)
from mltidy.backends.optuna.time import journal_to_utc
from mltidy.backends.optuna.trials import parse_budget, record_attrs, trial_record, trial_ref
from mltidy.errors import StoreError
from mltidy.model import (
    CloseRequest,
    CloseResult,
    CloseStatus,
    Record,
    Selection,
    StoreId,
    StudyHealth,
    StudyProgress,
    TrialRef,
)

if TYPE_CHECKING:
    from optuna.storages import BaseStorage
    from optuna.study._frozen import FrozenStudy
    from optuna.trial import FrozenTrial

T = TypeVar("T")


@contextmanager
def quiet_optuna() -> Iterator[None]:
    """Open optuna storages without optuna's ``ExperimentalWarning`` (``JournalRedisBackend``,
    heartbeat arguments): it speaks to optuna's users, not to mltidy's, and would leak on
    stderr. Only these warnings, and only around the call."""
    from optuna.exceptions import ExperimentalWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        yield


#: Newest activity per trial id, aware UTC (trials without any are left out).
Activity = Callable[[Sequence[int]], dict[int, datetime]]


def no_activity(trial_ids: Sequence[int]) -> dict[int, datetime]:
    """For storages that keep no activity of their own (journals)."""
    return {}


class StorageOps:
    """The trial and study operations over one opened optuna storage.

    Args:
        translate: the backend's translation of optuna's (and its storage's) exceptions.
        started_at: how a trial's naive ``datetime_start`` becomes aware UTC in records.
        activity: where a trial's newest activity comes from.
        study_of: the study id of a trial id, where the storage has a faster way than asking
            every study.
        assumed: the UTC offset assumed to read a naive ``datetime_start``, when the writer's
            zone is unknown (``None`` when the reading is certain).
    """

    def __init__(
        self,
        storage: BaseStorage,
        uri: StoreId,
        translate: Callable[[BaseException], StoreError],
        *,
        started_at: Callable[[datetime | None], datetime | None] = journal_to_utc,
        activity: Activity = no_activity,
        study_of: Callable[[int], int | None] | None = None,
        assumed: Callable[[datetime | None], timedelta | None] | None = None,
    ) -> None:
        self.storage = storage
        self.uri = uri
        self.translate = translate
        self._started_at = started_at
        self._activity = activity
        self._study_of = study_of or self._study_by_number
        self._assumed = assumed or (lambda value: None)

    def _studies(self, selection: Selection, *, by_name: bool = False) -> list[FrozenStudy]:
        studies = self.storage.get_all_studies()
        if by_name:
            studies = sorted(studies, key=lambda s: s.study_name)
        return [s for s in studies if selection.wants_study(s.study_name)]

    def containers(self) -> dict[str, str]:
        """Every study: id -> name."""
        try:
            return {str(s._study_id): s.study_name for s in self.storage.get_all_studies()}
        except Exception as exc:
            raise self.translate(exc) from exc

    def _study_by_number(self, trial_id: int) -> int | None:
        trial = self.storage.get_trial(trial_id)
        lookup = self.storage.get_trial_id_from_study_id_trial_number
        for study in self.storage.get_all_studies():
            try:
                if lookup(study._study_id, trial.number) == trial_id:
                    return int(study._study_id)
            except KeyError:
                continue
        return None

    def record(
        self, trial: FrozenTrial, study: tuple[str, int], activity: dict[int, datetime]
    ) -> Record:
        """``trial`` of ``study`` (name, id) as a record."""
        return trial_record(
            self.uri,
            (trial._trial_id, trial.number, trial.state.name),
            study,
            started_at=self._started_at(trial.datetime_start),
            last_activity_at=activity.get(trial._trial_id),
            tags=record_attrs(trial.user_attrs, trial.system_attrs),
            assumed_utc_offset=self._assumed(trial.datetime_start),
        )

    def iter_active(self, selection: Selection) -> Iterator[Record]:
        from optuna.trial import TrialState

        try:
            for study in self._studies(selection):
                trials = [
                    t
                    for t in self.storage.get_all_trials(
                        study._study_id, deepcopy=False, states=(TrialState.RUNNING,)
                    )
                    # Never trust the filter alone.
                    if t.state == TrialState.RUNNING
                ]
                activity = self._activity([t._trial_id for t in trials])
                for trial in trials:
                    yield self.record(trial, (study.study_name, study._study_id), activity)
        except StoreError:
            raise
        except Exception as exc:
            raise self.translate(exc) from exc

    def read(self, record_id: str) -> Record | None:
        if not record_id.isdigit():
            return None
        trial_id = int(record_id)
        try:
            try:
                trial = self.storage.get_trial(trial_id)
            except KeyError:
                return None
            study_id = self._study_of(trial_id)
            if study_id is None:
                return None
            name = self.storage.get_study_name_from_id(study_id)
            return self.record(trial, (name, study_id), self._activity([trial_id]))
        except StoreError:
            raise
        except Exception as exc:
            raise self.translate(exc) from exc

    def close_record(self, request: CloseRequest) -> CloseResult:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        if not request.record_id.isdigit():
            return CloseResult(CloseStatus.MISSING)
        trial_id = int(request.record_id)
        try:
            try:
                trial = self.storage.get_trial(trial_id)
            except KeyError:
                return CloseResult(CloseStatus.MISSING)
            if trial.state != TrialState.RUNNING:
                return CloseResult(CloseStatus.NOT_RUNNING, trial.state.name)
            try:
                attributes = {**request.attributes, names.END_TIME: request.end_time.isoformat()}
                for key, value in attributes.items():
                    self.storage.set_trial_system_attr(trial_id, key, value)
                self.storage.set_trial_state_values(trial_id, TrialState[request.new_state])
            except UpdateFinishedTrialError:
                state = self.storage.get_trial(trial_id).state.name
                return CloseResult(CloseStatus.NOT_RUNNING, state)
        except Exception as exc:
            raise self.translate(exc) from exc
        return CloseResult(CloseStatus.CLOSED)

    def enqueue_retry(self, trial_id: str, max_retry: int | None) -> int | None:
        from mltidy.backends.optuna.retry import enqueue_retry

        try:
            study_id = self._study_of(int(trial_id))
            if study_id is None:
                raise StoreError(f"{self.uri}: trial {trial_id} does not exist")
            return enqueue_retry(self.storage, study_id, int(trial_id), max_retry)
        except StoreError:
            raise
        except Exception as exc:
            raise self.translate(exc) from exc

    def study_health(self, selection: Selection) -> list[StudyHealth]:
        return self._per_study(selection, lambda study, trials: _health(study, trials, self._times))

    def _times(self, trial: FrozenTrial) -> tuple[datetime | None, datetime | None]:
        """A trial's start and true end, aware UTC. The end is ``mltidy.end_time`` when mltidy
        closed it: these storages set ``datetime_complete`` to the time of closing."""
        end = _aware(trial.system_attrs.get(names.END_TIME)) or self._started_at(
            trial.datetime_complete
        )
        return self._started_at(trial.datetime_start), end

    def study_progress(self, selection: Selection) -> list[StudyProgress]:
        return self._per_study(selection, _progress)

    def _per_study(
        self, selection: Selection, summary: Callable[[FrozenStudy, list[FrozenTrial]], T]
    ) -> list[T]:
        """``summary`` of every selected study (by name) and all its trials."""
        try:
            return [
                summary(study, self.storage.get_all_trials(study._study_id, deepcopy=False))
                for study in self._studies(selection, by_name=True)
            ]
        except Exception as exc:
            raise self.translate(exc) from exc

    def iter_link_trials(self, selection: Selection) -> Iterator[TrialRef]:
        refs: list[TrialRef] = []
        try:
            for study in self._studies(selection):
                study_attrs = self.storage.get_study_system_attrs(study._study_id)
                for trial in self.storage.get_all_trials(study._study_id, deepcopy=False):
                    _, note, _ = dashboard_notes.read_note(study_attrs, trial._trial_id)
                    refs.append(
                        trial_ref(
                            self.uri,
                            (trial._trial_id, trial.number, trial.state.name),
                            (study.study_name, study._study_id),
                            started_at=self._started_at(trial.datetime_start),
                            attrs=(trial.user_attrs, trial.system_attrs),
                            note=note,
                        )
                    )
        except Exception as exc:
            raise self.translate(exc) from exc
        return iter(refs)

    def write_trial_link(self, trial: TrialRef, run_url: str | None, note: str | None) -> str:
        remark = ""
        try:
            if run_url is not None:
                if trial.state == "RUNNING":
                    self.storage.set_trial_user_attr(
                        int(trial.trial_id), names.MLFLOW_RUN_URL, run_url
                    )
                else:
                    remark = "journal storages refuse attributes on finished trials: note only"
            if note is not None:
                study_id = int(trial.study_id)
                current = self.storage.get_study_system_attrs(study_id)
                version, _, chunks = dashboard_notes.read_note(current, trial.trial_id)
                values = dashboard_notes.note_attrs(trial.trial_id, version + 1, note, chunks)
                for key, value in values.items():
                    self.storage.set_study_system_attr(study_id, key, value)
        except Exception as exc:
            raise self.translate(exc) from exc
        return remark


def _health(
    study: FrozenStudy,
    trials: list[FrozenTrial],
    times: Callable[[FrozenTrial], tuple[datetime | None, datetime | None]],
) -> StudyHealth:
    from optuna.trial import TrialState

    failed = [t for t in trials if t.state == TrialState.FAIL]
    seconds = 0.0
    for trial in failed:
        start, end = times(trial)
        if start is not None and end is not None:
            seconds += max((end - start).total_seconds(), 0.0)
    return StudyHealth(
        study=study.study_name,
        trials=len(trials),
        running=sum(1 for t in trials if t.state == TrialState.RUNNING),
        failed=len(failed),
        closed_by_mltidy=sum(1 for t in trials if names.CLOSED_AT in t.system_attrs),
        failed_seconds=seconds,
    )


def _aware(text: object) -> datetime | None:
    """A time mltidy wrote (ISO 8601 with offset) as aware UTC; ``None`` when absent or not."""
    if not isinstance(text, str):
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    return value.astimezone(timezone.utc) if value.tzinfo else None


def _progress(study: FrozenStudy, trials: list[FrozenTrial]) -> StudyProgress:
    from optuna.trial import TrialState

    directions = tuple(d.name for d in study.directions)
    counts = {state: 0 for state in TrialState}
    for t in trials:
        counts[t.state] += 1
    starts = [s for t in trials if (s := journal_to_utc(t.datetime_start))]
    ends = [e for t in trials if (e := journal_to_utc(t.datetime_complete))]
    best = _best(trials, directions)
    budget = study.user_attrs.get(names.BUDGET)
    return StudyProgress(
        study=study.study_name,
        study_id=str(study._study_id),
        directions=directions,
        trials=len(trials),
        running=counts[TrialState.RUNNING],
        waiting=counts[TrialState.WAITING],
        complete=counts[TrialState.COMPLETE],
        pruned=counts[TrialState.PRUNED],
        failed=counts[TrialState.FAIL],
        first_started_at=min(starts, default=None),
        last_started_at=max(starts, default=None),
        last_completed_at=max(ends, default=None),
        best_value=float(best.value) if best and best.value is not None else None,
        best_trial_number=best.number if best else None,
        budget=parse_budget(None if budget is None else str(budget)),
    )


def _best(trials: list[FrozenTrial], directions: tuple[str, ...]) -> FrozenTrial | None:
    """The best completed trial of a single-objective study (multi-objective: none)."""
    from optuna.trial import TrialState

    if len(directions) != 1:
        return None
    done = [t for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    sign = -1.0 if directions[0] == "MAXIMIZE" else 1.0
    return min(done, key=lambda t: (sign * (t.value or 0.0), t.number), default=None)


class StorageOpsBackend(
    Backend,
    Closer,
    TrialRetrier,
    StudyReporter,
    StudyWatcher,
    TrialLinker,
    ContainerLister,
):
    """The capabilities of an Optuna storage read and written through optuna's own storage
    classes (journal files; RDB storages on the library path): each is the same call on the
    backend's :class:`StorageOps`, ``_ops``, made by the subclass's constructor."""

    _ops: StorageOps

    def containers(self) -> dict[str, str]:
        return self._ops.containers()

    def iter_active(self, selection: Selection) -> Iterator[Record]:
        return self._ops.iter_active(selection)

    def read(self, record_id: str) -> Record | None:
        return self._ops.read(record_id)

    def close_record(self, request: CloseRequest) -> CloseResult:
        return self._ops.close_record(request)

    def enqueue_retry(self, trial_id: str, max_retry: int | None) -> int | None:
        return self._ops.enqueue_retry(trial_id, max_retry)

    def study_health(self, selection: Selection) -> list[StudyHealth]:
        return self._ops.study_health(selection)

    def study_progress(self, selection: Selection) -> list[StudyProgress]:
        return self._ops.study_progress(selection)

    def iter_link_trials(self, selection: Selection) -> Iterator[TrialRef]:
        return self._ops.iter_link_trials(selection)

    def write_trial_link(self, trial: TrialRef, run_url: str | None, note: str | None) -> str:
        return self._ops.write_trial_link(trial, run_url, note)


__all__ = ["Activity", "StorageOps", "StorageOpsBackend", "no_activity"]
