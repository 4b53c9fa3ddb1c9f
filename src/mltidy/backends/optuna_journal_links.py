"""Linking for Optuna journal storages, through optuna's ``JournalStorage``.

A mix-in of :class:`~mltidy.backends.optuna_journal.OptunaJournalBackend`. Notes live in study
system attributes and can always be written; optuna refuses user attributes on finished trials,
and a journal has no other way in, so finished trials get the note but no ``mlflow_run_url``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mltidy import dashboard_notes
from mltidy.backends.interface import TrialLinker
from mltidy.backends.optuna_time import journal_to_utc
from mltidy.errors import StoreError
from mltidy.model import Selection, StoreId, TrialRef

if TYPE_CHECKING:
    from optuna.storages import BaseStorage


class OptunaJournalLinks(TrialLinker):
    """Trial-side linking through optuna's journal storage."""

    uri: StoreId
    _storage: BaseStorage

    def _translate(self, exc: BaseException) -> StoreError:
        raise NotImplementedError  # provided by the backend

    def iter_link_trials(self, selection: Selection) -> Iterator[TrialRef]:
        try:
            studies = [
                s for s in self._storage.get_all_studies() if selection.wants_study(s.study_name)
            ]
            refs: list[TrialRef] = []
            for study in studies:
                study_attrs = self._storage.get_study_system_attrs(study._study_id)
                for trial in self._storage.get_all_trials(study._study_id, deepcopy=False):
                    _, note, _ = dashboard_notes.read_note(study_attrs, trial._trial_id)
                    refs.append(
                        TrialRef(
                            store=self.uri,
                            study=study.study_name,
                            study_id=str(study._study_id),
                            trial_id=str(trial._trial_id),
                            number=trial.number,
                            state=trial.state.name,
                            started_at=journal_to_utc(trial.datetime_start),
                            run_id_user_attr=_str(trial.user_attrs.get("mlflow_run_id")),
                            run_id_system_attr=_str(trial.system_attrs.get("mlflow_run_id")),
                            run_url=_str(trial.user_attrs.get("mlflow_run_url")),
                            note=note,
                        )
                    )
        except Exception as exc:
            raise self._translate(exc) from exc
        return iter(refs)

    def write_trial_link(self, trial: TrialRef, run_url: str | None, note: str | None) -> str:
        remark = ""
        try:
            if run_url is not None:
                if trial.state == "RUNNING":
                    self._storage.set_trial_user_attr(
                        int(trial.trial_id), "mlflow_run_url", run_url
                    )
                else:
                    remark = "journal storages refuse attributes on finished trials: note only"
            if note is not None:
                study_id = int(trial.study_id)
                current = self._storage.get_study_system_attrs(study_id)
                version, _, chunks = dashboard_notes.read_note(current, trial.trial_id)
                values = dashboard_notes.note_attrs(trial.trial_id, version + 1, note, chunks)
                for key, value in values.items():
                    self._storage.set_study_system_attr(study_id, key, value)
        except Exception as exc:
            raise self._translate(exc) from exc
        return remark


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None
