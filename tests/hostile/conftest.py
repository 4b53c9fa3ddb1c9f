"""Stores written by real jobs with hostile names, built once per test session.

``names_template``: an MLflow sqlite store and an Optuna sqlite storage written by two training
jobs, both killed with SIGKILL: one named with every attack of :mod:`hostile.inputs` (run name,
experiment and study name, a provenance command), one that logged nothing (for ``declutter``).
``files_template``: the same attacks in an ``mlruns`` file store and an Optuna journal file.
Each test works on its own copy (:func:`sandbox`).
"""

from __future__ import annotations

import os
import shutil
import signal
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from hostile.inputs import BIDI, COMMAND, EXPERIMENT, RUN_NAME
from hostile.sandbox import Sandbox, Template
from mltidy.demo.jobs import Job, create_stores, start_job


def _killed(mlflow: str, optuna: str, cwd: Path, env: dict[str, str] | None = None) -> list[Job]:
    jobs = [
        start_job(
            mlflow_uri=mlflow,
            optuna_url=optuna,
            study=EXPERIMENT,
            cwd=cwd,
            epochs=1000,
            env=env,
            extra=["--run-name", RUN_NAME, "--tag", f"mltidy.cmd={COMMAND}"],
        ),
        start_job(
            mlflow_uri=mlflow,
            optuna_url=optuna,
            study=EXPERIMENT,
            cwd=cwd,
            epochs=1000,
            env=env,
            extra=["--empty", "--run-name", f"empty {BIDI}"],
        ),
    ]
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda job: job.wait_ready(), jobs))
    for job in jobs:
        job.kill(signal.SIGKILL)
    return jobs


@pytest.fixture(scope="session")
def names_template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    root = tmp_path_factory.mktemp("hostile-names")
    mlflow, optuna = "sqlite:///mlflow.db", "sqlite:///optuna.db"
    create_stores(
        f"sqlite:///{root / 'mlflow.db'}",
        f"sqlite:///{root / 'optuna.db'}",
        EXPERIMENT,
        root / "art",
    )
    named, empty = _killed(mlflow, optuna, root)
    shutil.rmtree(root / ".jobs", ignore_errors=True)
    assert named.run_id and empty.run_id
    return Template(root, named.run_id, empty.run_id, mlflow, optuna)


@pytest.fixture(scope="session")
def files_template(tmp_path_factory: pytest.TempPathFactory) -> Template:
    root = tmp_path_factory.mktemp("hostile-files")
    env = {"MLFLOW_ALLOW_FILE_STORE": "true"}
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    mlflow, optuna = "file:mlruns", "optuna.log"
    create_stores(f"file:{root / 'mlruns'}", str(root / "optuna.log"), EXPERIMENT, root / "art")
    named, empty = _killed(mlflow, optuna, root, env)
    shutil.rmtree(root / ".jobs", ignore_errors=True)
    assert named.run_id and empty.run_id
    return Template(root, named.run_id, empty.run_id, mlflow, optuna)


@pytest.fixture
def make_sandbox(tmp_path: Path) -> Iterator[object]:
    """``make(template or None)`` -> a :class:`Sandbox`."""

    def make(template: Template | None) -> Sandbox:
        root = tmp_path / "world"
        if template is not None:
            shutil.copytree(template.root, root, symlinks=True)
        else:
            root.mkdir()
        home, state = tmp_path / "home", tmp_path / "state"
        home.mkdir()
        state.mkdir(mode=0o700)
        return Sandbox(tmp_path, root, home, state, template)

    yield make
