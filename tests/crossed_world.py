"""A store holding several experiments and studies, crossed, each pair linked by a different
convention; every job killed with SIGKILL (one trains no MLflow run at all).

===  ==========  =======  ================================================================
job  experiment  study    how the run and the trial are linked
===  ==========  =======  ================================================================
j1   exp-a       s1       both: the trial's ``mlflow_run_id`` and the plugin's run tags
j2   exp-b       s1       only the trial's ``mlflow_run_id`` (plugin trial detection off)
j3   exp-a       s2       only the plugin's run tags (the job set ``mlflow_run_id`` late)
j4   exp-c       s3       both
j5   s4          s4       only MLflowCallback's convention: an experiment named after the study
j6   (none)      s5       no MLflow run
===  ==========  =======  ================================================================
"""

from __future__ import annotations

import shutil
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mltidy.demo.jobs import Job, start_job

NO_DETECT = {"MLTIDY_OPTUNA_DETECT": "0"}


@dataclass(frozen=True)
class CrossedWorld:
    """The stores and the jobs that wrote them."""

    mlflow_uri: str
    optuna_url: str
    jobs: dict[str, Job]

    def run_id(self, job: str) -> str:
        """The run id of a job."""
        run_id = self.jobs[job].run_id
        assert run_id is not None
        return run_id

    def trial_number(self, job: str) -> int:
        """The trial number of a job."""
        number = self.jobs[job].trial_number
        assert number is not None
        return number


#: job -> (experiment or None, study, extra worker options, extra environment)
LAYOUT: dict[str, tuple[str | None, str, list[str], dict[str, str]]] = {
    "j1": ("exp-a", "s1", [], {}),
    "j2": ("exp-b", "s1", [], NO_DETECT),
    "j3": ("exp-a", "s2", ["--link", "late"], {}),
    "j4": ("exp-c", "s3", [], {}),
    "j5": ("s4", "s4", ["--link", "late"], NO_DETECT),
    "j6": (None, "s5", [], {}),
}


def make_crossed_world(root: Path, template: Path | None = None) -> CrossedWorld:
    """Create the stores (from copies of ``template``'s ``mlflow.db`` and ``optuna.db``, whose
    migrations are done, when given), start the six jobs, and SIGKILL them once they train."""
    root.mkdir(parents=True, exist_ok=True)
    if template is not None:
        for name in ("mlflow.db", "optuna.db"):
            shutil.copyfile(template / name, root / name)
    mlflow_uri = f"sqlite:///{root / 'mlflow.db'}"
    optuna_url = f"sqlite:///{root / 'optuna.db'}"
    _create(mlflow_uri, optuna_url, root / "artifacts")

    def start(experiment: str | None, study: str, extra: list[str], env: dict[str, str]) -> Job:
        return start_job(
            mlflow_uri=mlflow_uri if experiment else None,
            optuna_url=optuna_url,
            study=study,
            experiment=experiment,
            cwd=root,
            epochs=3000,
            epoch_seconds=0.2,
            extra=extra,
            env=env or None,
        )

    jobs = {name: start(*spec) for name, spec in LAYOUT.items()}
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda job: job.wait_ready(), jobs.values()))
    for job in jobs.values():
        job.kill(signal.SIGKILL)
    return CrossedWorld(mlflow_uri, optuna_url, jobs)


def _create(mlflow_uri: str, optuna_url: str, artifacts: Path) -> None:
    """The experiments and studies of the layout, and no others (jobs start in parallel)."""
    import logging

    import mlflow
    import optuna

    logging.getLogger("alembic").setLevel(logging.WARNING)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    for experiment in sorted({e for e, _, _, _ in LAYOUT.values() if e}):
        client.create_experiment(experiment, artifact_location=artifacts.resolve().as_uri())
    for study in sorted({s for _, s, _, _ in LAYOUT.values()}):
        optuna.create_study(study_name=study, storage=optuna_url)
