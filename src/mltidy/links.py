"""Links a person can click: the MLflow UI page of a run, the optuna-dashboard page of a trial."""

from __future__ import annotations

from mltidy.model import Record, RecordKind


def mlflow_run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run."""
    return f"{ui_base.rstrip('/')}/#/experiments/{experiment_id}/runs/{run_id}"


def record_url(record: Record, tracking_uri: str | None) -> str | None:
    """The page of a record when its store is served over http(s), else ``None``."""
    if record.kind is RecordKind.MLFLOW_RUN and tracking_uri and tracking_uri.startswith("http"):
        return mlflow_run_url(tracking_uri, record.container_id, record.id)
    return None
