"""Fresh MLflow + Optuna sqlite stores for tests that start their own jobs.

Creating an MLflow sqlite store runs MLflow's migrations, which takes seconds; the stores are
created once per session and each test gets its own copy (the files are copied, the experiment
and study already exist).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from mltidy.demo.jobs import Job, create_stores, start_job

NAME = "tuning"


class Lab:
    """An MLflow and an Optuna sqlite store with one experiment/study, and jobs against them."""

    def __init__(self, root: Path, name: str = NAME) -> None:
        self.root = root
        self.name = name
        self.mlflow = f"sqlite:///{root / 'mlflow.db'}"
        self.optuna = f"sqlite:///{root / 'optuna.db'}"
        self.state = root / "watch.db"

    def start(self, epochs: int, *extra: str) -> Job:
        """A demo training job (one trial with an MLflow run inside) against these stores."""
        return start_job(
            mlflow_uri=self.mlflow,
            optuna_url=self.optuna,
            study=self.name,
            cwd=self.root,
            epochs=epochs,
            epoch_seconds=0.2,
            extra=list(extra),
        )

    def worker(self, epochs: int, *extra: str) -> list[str]:
        """The command line of such a job, to run under ``mltidy run``."""
        return [
            "-m",
            "mltidy.demo.worker",
            "--mlflow",
            self.mlflow,
            "--optuna",
            self.optuna,
            "--study",
            self.name,
            "--epochs",
            str(epochs),
            "--epoch-seconds",
            "0.2",
            *extra,
        ]


def ready(*jobs: Job) -> None:
    """Wait until every job trains."""
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda job: job.wait_ready(), jobs))


@pytest.fixture(scope="session")
def _lab_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("lab-template")
    create_stores(
        f"sqlite:///{root / 'mlflow.db'}", f"sqlite:///{root / 'optuna.db'}", NAME, root / "art"
    )
    return root


@pytest.fixture
def make_lab(_lab_template: Path, tmp_path: Path) -> Callable[[], Lab]:
    """A factory of fresh labs (copies of the session's template stores)."""
    made = 0

    def make() -> Lab:
        nonlocal made
        made += 1
        root = tmp_path / f"lab{made}"
        root.mkdir()
        for name in ("mlflow.db", "optuna.db"):
            shutil.copyfile(_lab_template / name, root / name)
        return Lab(root)

    return make


@pytest.fixture
def lab(make_lab: Callable[[], Lab]) -> Lab:
    """One fresh lab."""
    return make_lab()
