"""Optuna journal storages: journal files (``JournalFileBackend``) and redis journals.

The journal is replayed by optuna itself, so every log format optuna understands is read right.
A journal has no heartbeat table: trials carry no activity time unless mltidy's heartbeat ran.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mltidy.backends.identity import store_id
from mltidy.backends.interface import Backend, Closer, StudyReporter, StudyWatcher, TrialRetrier
from mltidy.backends.optuna_journal_links import OptunaJournalLinks
from mltidy.backends.optuna_time import journal_to_utc
from mltidy.errors import NotAStore, StoreError, StoreNotFound, StoreUnreachable
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
)
from mltidy.redact import redact

if TYPE_CHECKING:
    from optuna.storages import BaseStorage, JournalStorage
    from optuna.trial import FrozenTrial

LINK_KEYS = ("mlflow_run_id",)


def journal_path(uri: str) -> Path:
    """The file behind a journal URI (``journal:///path``, ``file:///path`` or a plain path)."""
    for prefix in ("journal://", "journal:", "file://", "file:"):
        if uri.startswith(prefix):
            return Path(uri[len(prefix) :])
    return Path(uri)


def looks_like_journal(path: Path) -> bool:
    """Whether a file starts with an Optuna journal operation (a JSON object with ``op_code``)."""
    try:
        with path.open("rb") as handle:
            first = handle.readline(1 << 16)
    except OSError:
        return False
    try:
        entry = json.loads(first)
    except ValueError:
        return False
    return isinstance(entry, dict) and "op_code" in entry


class OptunaJournalBackend(
    Backend, Closer, TrialRetrier, StudyReporter, StudyWatcher, OptunaJournalLinks
):
    """An Optuna journal file or redis journal, replayed through optuna's ``JournalStorage``."""

    kind = StoreKind.OPTUNA
    close_guarantee = (
        "optuna's own check: the journal is replayed right before the write and optuna refuses "
        "to change a finished trial; datetime_complete is the time of closing (the journal API "
        "sets it), the true end is kept in mltidy.end_time"
    )

    def __init__(self, uri: str, *, writable: bool = False) -> None:
        self.uri = store_id(self.kind, uri)
        self.is_redis = uri.startswith(("redis://", "rediss://", "unix://"))
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
            self.path: Path | None = path
        else:
            self.path = None
        self._uri = uri
        # Typed as the base class: optuna_sql_library.py reuses these methods for RDBStorage.
        self._storage: BaseStorage = self._open()

    def _open(self) -> JournalStorage:
        try:
            import optuna
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            optuna.logging.set_verbosity(optuna.logging.WARNING)
            if self.path is not None:
                return JournalStorage(JournalFileBackend(str(self.path)))
            from optuna.storages.journal import JournalRedisBackend

            return JournalStorage(JournalRedisBackend(self._uri))
        except ImportError as exc:
            raise StoreError(
                f"{self.uri}: redis journals need the redis package", hint="pip install redis"
            ) from exc
        except Exception as exc:
            raise self._translate(exc) from exc

    def _translate(self, exc: BaseException) -> StoreError:
        text = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        lowered = text.lower()
        if "connect" in lowered or "refused" in lowered:
            return StoreUnreachable(f"{self.uri}: cannot connect ({text})")
        if isinstance(exc, (ValueError, KeyError, TypeError)):
            return NotAStore(f"{self.uri} is not a readable Optuna journal ({text})")
        return StoreError(f"{self.uri}: {text}")

    def describe(self) -> str:
        return "Optuna redis journal" if self.is_redis else "Optuna journal file"

    def iter_active(self, selection: Selection) -> Iterator[Record]:
        from optuna.trial import TrialState

        try:
            studies = [
                s for s in self._storage.get_all_studies() if selection.wants_study(s.study_name)
            ]
            for study in studies:
                trials = self._storage.get_all_trials(
                    study._study_id, deepcopy=False, states=(TrialState.RUNNING,)
                )
                for trial in trials:
                    if trial.state == TrialState.RUNNING:
                        yield self._record(trial, study.study_name, study._study_id)
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
        except Exception as exc:
            raise self._translate(exc) from exc
        return self._record(trial, name, study_id)

    def _study_of(self, trial_id: int) -> int | None:
        trial = self._storage.get_trial(trial_id)
        lookup = self._storage.get_trial_id_from_study_id_trial_number
        for study in self._storage.get_all_studies():
            try:
                if lookup(study._study_id, trial.number) == trial_id:
                    return int(study._study_id)
            except KeyError:
                continue
        return None

    def close_record(self, request: CloseRequest) -> CloseResult:
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState

        if not request.record_id.isdigit():
            return CloseResult(CloseStatus.MISSING)
        trial_id = int(request.record_id)
        try:
            try:
                trial = self._storage.get_trial(trial_id)
            except KeyError:
                return CloseResult(CloseStatus.MISSING)
            if trial.state != TrialState.RUNNING:
                return CloseResult(CloseStatus.NOT_RUNNING, trial.state.name)
            try:
                attributes = {**request.attributes, "mltidy.end_time": request.end_time.isoformat()}
                for key, value in attributes.items():
                    self._storage.set_trial_system_attr(trial_id, key, value)
                self._storage.set_trial_state_values(trial_id, TrialState[request.new_state])
            except UpdateFinishedTrialError:
                state = self._storage.get_trial(trial_id).state.name
                return CloseResult(CloseStatus.NOT_RUNNING, state)
        except Exception as exc:
            raise self._translate(exc) from exc
        return CloseResult(CloseStatus.CLOSED)

    def enqueue_retry(self, trial_id: str, max_retry: int | None) -> int | None:
        from mltidy.backends.optuna_retry import enqueue_retry

        try:
            study_id = self._study_of(int(trial_id))
            if study_id is None:
                raise StoreError(f"{self.uri}: trial {trial_id} does not exist")
            return enqueue_retry(self._storage, study_id, int(trial_id), max_retry)
        except StoreError:
            raise
        except Exception as exc:
            raise self._translate(exc) from exc

    def study_health(self, selection: Selection) -> list[StudyHealth]:
        from optuna.trial import TrialState

        found: list[StudyHealth] = []
        try:
            for study in sorted(self._storage.get_all_studies(), key=lambda s: s.study_name):
                if not selection.wants_study(study.study_name):
                    continue
                trials = self._storage.get_all_trials(study._study_id, deepcopy=False)
                failed = [t for t in trials if t.state == TrialState.FAIL]
                seconds = sum(
                    max((t.datetime_complete - t.datetime_start).total_seconds(), 0.0)
                    for t in failed
                    if t.datetime_complete and t.datetime_start
                )
                found.append(
                    StudyHealth(
                        study=study.study_name,
                        trials=len(trials),
                        running=sum(1 for t in trials if t.state == TrialState.RUNNING),
                        failed=len(failed),
                        closed_by_mltidy=sum(
                            1 for t in trials if "mltidy.closed_at" in t.system_attrs
                        ),
                        failed_seconds=seconds,
                    )
                )
        except Exception as exc:
            raise self._translate(exc) from exc
        return found

    def study_progress(self, selection: Selection) -> list[StudyProgress]:
        from optuna.trial import TrialState

        from mltidy.backends.optuna_sql import BUDGET_KEY, parse_budget

        found: list[StudyProgress] = []
        try:
            for study in sorted(self._storage.get_all_studies(), key=lambda s: s.study_name):
                if not selection.wants_study(study.study_name):
                    continue
                trials = self._storage.get_all_trials(study._study_id, deepcopy=False)
                directions = tuple(d.name for d in study.directions)
                counts = {state: 0 for state in TrialState}
                for t in trials:
                    counts[t.state] += 1
                starts = [s for t in trials if (s := journal_to_utc(t.datetime_start))]
                ends = [e for t in trials if (e := journal_to_utc(t.datetime_complete))]
                best: FrozenTrial | None = None
                if len(directions) == 1:
                    done = [
                        t for t in trials if t.state == TrialState.COMPLETE and t.value is not None
                    ]
                    sign = -1.0 if directions[0] == "MAXIMIZE" else 1.0
                    best = min(
                        done, key=lambda t: (sign * (t.value or 0.0), t.number), default=None
                    )
                budget = study.user_attrs.get(BUDGET_KEY)
                found.append(
                    StudyProgress(
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
                )
        except Exception as exc:
            raise self._translate(exc) from exc
        return found

    def _record(self, trial: FrozenTrial, study_name: str, study_id: int) -> Record:
        attrs: dict[str, Any] = {}
        for source in (trial.user_attrs, trial.system_attrs):
            for key, value in source.items():
                if key in LINK_KEYS or key.startswith("mltidy."):
                    attrs[key] = value if isinstance(value, str) else json.dumps(value)
        return Record(
            kind=RecordKind.OPTUNA_TRIAL,
            store=self.uri,
            id=str(trial._trial_id),
            name=f"trial {trial.number}",
            container=study_name,
            container_id=str(study_id),
            state=trial.state.name,
            started_at=journal_to_utc(trial.datetime_start),
            last_activity_at=None,
            trial_number=trial.number,
            tags=attrs,
        )


__all__ = ["OptunaJournalBackend", "journal_path", "looks_like_journal"]
