"""Links a person can click: the MLflow UI page of a run, the optuna-dashboard page of a trial."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from mltidy.model import Record, RecordKind
from mltidy.text import url_part

DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"
DEFAULT_DASHBOARD = "http://127.0.0.1:8080"


def mlflow_run_url(ui_base: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of a run (ids come from the store: percent-encoded, so a hostile id
    cannot leave its path segment)."""
    return f"{ui_base.rstrip('/')}/#/experiments/{url_part(experiment_id)}/runs/{url_part(run_id)}"


def mlflow_experiment_url(ui_base: str, experiment_id: str) -> str:
    """The MLflow UI page of an experiment."""
    return f"{ui_base.rstrip('/')}/#/experiments/{url_part(experiment_id)}"


def dashboard_trial_url(dashboard_base: str, study_id: str, trial_number: int) -> str:
    """The optuna-dashboard page of a trial."""
    return (
        f"{dashboard_base.rstrip('/')}/dashboard/studies/{url_part(study_id)}/trials"
        f"?numbers={url_part(trial_number)}"
    )


def dashboard_study_url(dashboard_base: str, study_id: str) -> str:
    """The optuna-dashboard page of a study."""
    return f"{dashboard_base.rstrip('/')}/dashboard/studies/{url_part(study_id)}"


def without_credentials(url: str) -> str:
    """A URL without ``user:password@``: links are shown to people and written into stores."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def mlflow_ui_for(tracking_uri: str | None, configured: str | None = None) -> str:
    """The MLflow UI base: configured, else the tracking server itself, else the default."""
    if configured:
        return without_credentials(configured)
    if tracking_uri and tracking_uri.startswith(("http://", "https://")):
        return without_credentials(tracking_uri)
    return DEFAULT_MLFLOW_UI


@dataclass(frozen=True)
class LinkBases:
    """Where people open runs and trials (``--mlflow-ui``, ``--dashboard-url``, config).

    ``mlflow_ui`` ``None`` means: a tracking server is its own UI, any other store the default.
    """

    mlflow_ui: str | None = None
    dashboard: str = DEFAULT_DASHBOARD

    def ui(self, store: str) -> str:
        """The MLflow UI base for runs of ``store`` (a store identity)."""
        return mlflow_ui_for(store, self.mlflow_ui)

    def run(self, record: Record) -> str:
        """The MLflow UI page of a run."""
        return mlflow_run_url(self.ui(record.store), record.container_id, record.id)

    def experiment(self, store: str, experiment_id: str) -> str:
        """The MLflow UI page of an experiment."""
        return mlflow_experiment_url(self.ui(store), experiment_id)

    def trial(self, study_id: str, trial_number: int) -> str:
        """The optuna-dashboard page of a trial."""
        return dashboard_trial_url(self.dashboard, study_id, trial_number)

    def study(self, study_id: str) -> str:
        """The optuna-dashboard page of a study."""
        return dashboard_study_url(self.dashboard, study_id)

    def record(self, record: Record) -> str:
        """The page of a record: the MLflow UI for runs, optuna-dashboard for trials."""
        if record.kind is RecordKind.MLFLOW_RUN:
            return self.run(record)
        return self.trial(record.container_id, record.trial_number or 0)


__all__ = [
    "DEFAULT_DASHBOARD",
    "DEFAULT_MLFLOW_UI",
    "LinkBases",
    "dashboard_study_url",
    "dashboard_trial_url",
    "mlflow_experiment_url",
    "mlflow_run_url",
    "mlflow_ui_for",
    "without_credentials",
]
