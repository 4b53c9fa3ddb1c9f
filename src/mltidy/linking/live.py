"""Live linking: link a trial and its MLflow run while the study runs (``track(link=True)``).

Runs inside the objective's wrapper, after the objective returned and before optuna finishes
the trial, so the trial still accepts attributes. The run is the trial's ``mlflow_run_id``, or
the run this thread started last when mltidy's plugin tagged it with this trial. Failures are
logged at debug level and never reach the objective.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from mltidy import dashboard_notes, names
from mltidy.backends.identity import store_id
from mltidy.linking.link import link_values
from mltidy.linking.urls import DEFAULT_DASHBOARD, LinkBases
from mltidy.model import RunRef, StoreId, StoreKind, TrialRef
from mltidy.provenance.mlflow_plugin import storage_name

_log = logging.getLogger(__name__)


def bases_from_env(mlflow_ui: str | None = None, dashboard_url: str | None = None) -> LinkBases:
    """Link bases from arguments, else ``MLTIDY_MLFLOW_UI`` / ``MLTIDY_DASHBOARD_URL``."""
    return LinkBases(
        mlflow_ui=mlflow_ui or os.environ.get("MLTIDY_MLFLOW_UI"),
        dashboard=dashboard_url or os.environ.get("MLTIDY_DASHBOARD_URL") or DEFAULT_DASHBOARD,
    )


def _run_of(trial: Any) -> Any | None:
    import mlflow

    system_attrs = trial.storage.get_trial_system_attrs(trial._trial_id)
    run_id = trial.user_attrs.get(names.MLFLOW_RUN_ID) or system_attrs.get(names.MLFLOW_RUN_ID)
    client = mlflow.MlflowClient()
    if isinstance(run_id, str) and run_id:
        return client.get_run(run_id)
    last = mlflow.last_active_run()
    if last is not None and last.data.tags.get(names.RUN_TRIAL_ID) == str(trial._trial_id):
        return last
    return None


def link_live(trial: Any, bases: LinkBases) -> bool:
    """Link a running ``optuna.Trial`` and its run both ways. Returns whether it linked."""
    try:
        import mlflow

        run = _run_of(trial)
        if run is None:
            return False
        storage, study_id = trial.storage, trial.study._study_id
        study_attrs = storage.get_study_system_attrs(study_id)
        version, note, chunks = dashboard_notes.read_note(study_attrs, trial._trial_id)
        experiment = mlflow.MlflowClient().get_experiment(run.info.experiment_id)
        trial_ref = TrialRef(
            store=storage_name(storage) or StoreId(""),
            study=trial.study.study_name,
            study_id=str(study_id),
            trial_id=str(trial._trial_id),
            number=trial.number,
            state="RUNNING",
            started_at=None,
            run_id_user_attr=None,
            run_id_system_attr=None,
            run_url=None,
            note=note,
        )
        run_ref = RunRef(
            store=store_id(StoreKind.MLFLOW, mlflow.get_tracking_uri()),
            run_id=run.info.run_id,
            name=run.info.run_name or run.info.run_id,
            experiment_id=str(run.info.experiment_id),
            experiment=experiment.name,
            tags=dict(run.data.tags),
        )
        run_url, _, new_note, run_tags = link_values(trial_ref, run_ref, bases)
        trial.set_user_attr(names.MLFLOW_RUN_URL, run_url)
        for key, value in dashboard_notes.note_attrs(
            trial._trial_id, version + 1, new_note, chunks
        ).items():
            storage.set_study_system_attr(study_id, key, value)
        from mlflow.entities import RunTag

        mlflow.MlflowClient().log_batch(
            run.info.run_id, tags=[RunTag(k, v) for k, v in run_tags.items()]
        )
        return True
    except Exception:
        _log.debug("mltidy could not link the trial to its run", exc_info=True)
        return False
