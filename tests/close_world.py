"""A world for the tests that change things: fresh stores with one job of each kind.

* ``killed``: trained (params, metrics), then SIGKILL.
* ``empty``: killed with SIGKILL before it logged anything (a job that died loading data).
* ``finished``: ran to the end.
* ``live``: still training, quietly (its run and trial must never be touched).

Plus a snapshot of everything in both stores, to prove what changed and what did not.
"""

from __future__ import annotations

import os
import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mltidy.demo.jobs import Job, create_stores, optuna_storage, start_job


@dataclass
class CloseWorld:
    """Fresh stores and the four jobs that wrote them."""

    name: str
    mlflow_uri: str
    optuna_url: str
    killed: Job
    empty: Job
    finished: Job
    live: Job

    def args(self) -> list[str]:
        """CLI options that select exactly this world."""
        return [
            "--mlflow",
            self.mlflow_uri,
            "--optuna",
            self.optuna_url,
            "-e",
            self.name,
            "-s",
            self.name,
        ]

    def stop(self) -> None:
        """End the live job (and any straggler)."""
        for job in (self.killed, self.empty, self.finished, self.live):
            job.kill(signal.SIGKILL)


def make_close_world(mlflow_uri: str, optuna_url: str, workdir: Path, name: str) -> CloseWorld:
    """Start the four jobs and bring them to their states."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = {"MLFLOW_ALLOW_FILE_STORE": "true"}
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    create_stores(mlflow_uri, optuna_url, name, workdir / "artifacts")

    def start(epochs: int, *extra: str) -> Job:
        return start_job(
            mlflow_uri=mlflow_uri,
            optuna_url=optuna_url,
            study=name,
            cwd=workdir,
            epochs=epochs,
            epoch_seconds=0.2,
            env=env,
            extra=list(extra),
        )

    jobs = [start(3000), start(3000, "--empty"), start(2), start(3000, "--quiet")]
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda job: job.wait_ready(), jobs))
    killed, empty, finished, live = jobs
    killed.kill(signal.SIGKILL)
    empty.kill(signal.SIGKILL)
    assert finished.wait() == 0
    return CloseWorld(name, mlflow_uri, optuna_url, killed, empty, finished, live)


def mlflow_snapshot(uri: str, experiment: str) -> dict[str, dict[str, Any]]:
    """Every run of an experiment: status, times, lifecycle, tags, metric timestamps."""
    import mlflow
    from mlflow.entities import ViewType

    client = mlflow.MlflowClient(tracking_uri=uri)
    found = client.get_experiment_by_name(experiment)
    assert found is not None
    runs = client.search_runs([found.experiment_id], run_view_type=ViewType.ALL, max_results=1000)
    return {
        run.info.run_id: {
            "status": run.info.status,
            "start_time": run.info.start_time,
            "end_time": run.info.end_time,
            "lifecycle": run.info.lifecycle_stage,
            "tags": dict(run.data.tags),
            "last_metric": max((m.timestamp for m in run.data._metric_objs), default=None),
            "params": dict(run.data.params),
        }
        for run in runs
    }


def optuna_snapshot(url: str, study: str) -> dict[int, dict[str, Any]]:
    """Every trial of a study, by number: state, times, attributes, params."""
    import optuna

    storage = optuna_storage(url)
    if isinstance(storage, str):
        storage = optuna.storages.RDBStorage(storage, skip_table_creation=True)
    loaded = optuna.load_study(study_name=study, storage=storage)
    return {
        t.number: {
            "state": t.state.name,
            "start": t.datetime_start,
            "complete": t.datetime_complete,
            "system_attrs": dict(t.system_attrs),
            "user_attrs": dict(t.user_attrs),
            "params": dict(t.params),
        }
        for t in loaded.get_trials(deepcopy=False)
    }
