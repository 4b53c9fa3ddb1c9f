"""Links a person can click: the MLflow UI page of a run, the optuna-dashboard page of a trial."""

from __future__ import annotations

from mltidy.model import Record, RecordKind

DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"
DEFAULT_DASHBOARD = "http://127.0.0.1:8080"


def mlflow_run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def dashboard_trial_url(dashboard_base: str, study_id: str, trial_number: int) -> str:
    """The optuna-dashboard page of a trial."""
    return (
        f"{dashboard_base.rstrip('/')}/dashboard/studies/{study_id}/trials?numbers={trial_number}"
    )


def mlflow_ui_for(tracking_uri: str | None, configured: str | None = None) -> str:
    """The MLflow UI base: configured, else the tracking server itself, else the default."""
    if configured:
        return configured
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return tracking_uri
    return DEFAULT_MLFLOW_UI


def record_url(record: Record, tracking_uri: str | None) -> str | None:
    """The page of a record when its store is served over http(s), else ``None``."""
    if record.kind is RecordKind.MLFLOW_RUN and tracking_uri and tracking_uri.startswith("http"):
        return mlflow_run_url(tracking_uri, record.container_id, record.id)
    return None


def mlflow_experiment_url(ui_base: str, experiment_id: str) -> str:
    """The MLflow UI page of an experiment."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}"


def dashboard_study_url(dashboard_base: str, study_id: str) -> str:
    """The optuna-dashboard page of a study."""
    return f"{dashboard_base.rstrip('/')}/dashboard/studies/{study_id}"
