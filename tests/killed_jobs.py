"""Dangling state made the honest way: real training processes killed with real signals."""

from __future__ import annotations

import signal
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from mltidy.demo.jobs import Job, create_stores, start_job

#: Metrics each job logs (one per epoch of 0.2 s) before it is killed.
READY_AFTER = 4


@dataclass(frozen=True)
class KilledJobs:
    """One MLflow store and one Optuna storage after three jobs: SIGKILL, SIGTERM, finished."""

    mlflow_uri: str
    optuna_url: str
    name: str
    sigkilled: Job
    sigtermed: Job
    finished: Job
    other_name: str
    other: Job

    @property
    def killed(self) -> tuple[Job, Job]:
        """The two jobs that died mid-training."""
        return (self.sigkilled, self.sigtermed)


def make_killed_jobs(
    mlflow_uri: str,
    optuna_url: str,
    workdir: Path,
    *,
    name: str = "tuning",
    env: dict[str, str] | None = None,
    heartbeat: int | None = None,
) -> KilledJobs:
    """Run four tutorial-style jobs against the two stores and kill two of them.

    Three jobs train study/experiment ``name``: one is SIGKILLed, one SIGTERMed, one finishes.
    A fourth job trains ``name-other`` and is SIGKILLed (for selection tests).
    """
    workdir.mkdir(parents=True, exist_ok=True)
    other_name = f"{name}-other"
    for study in (name, other_name):
        create_stores(mlflow_uri, optuna_url, study, workdir / "artifacts")

    def start(study: str, epochs: int) -> Job:
        return start_job(
            mlflow_uri=mlflow_uri,
            optuna_url=optuna_url,
            study=study,
            cwd=workdir,
            epochs=epochs,
            epoch_seconds=0.2,
            env=env,
            heartbeat=heartbeat,
            # A few metrics before the kill, so that the killed runs have a rhythm to read.
            extra=["--ready-after", str(READY_AFTER)],
        )

    jobs = [start(name, 1000), start(name, 1000), start(name, 2), start(other_name, 1000)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda job: job.wait_ready(), jobs))
    sigkilled, sigtermed, finished, other = jobs
    sigkilled.kill(signal.SIGKILL)
    sigtermed.kill(signal.SIGTERM)
    other.kill(signal.SIGKILL)
    assert finished.wait() == 0
    return KilledJobs(
        mlflow_uri, optuna_url, name, sigkilled, sigtermed, finished, other_name, other
    )
