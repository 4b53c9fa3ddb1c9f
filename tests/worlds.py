"""Stores filled by real jobs killed with real signals, built once per test session.

Each world is one MLflow store and one Optuna storage written by the same jobs (MLflow runs
inside Optuna trials), the way tutorials write them. Starting Python jobs is the slow part.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from crossed_world import CrossedWorld, make_crossed_world
from killed_jobs import KilledJobs, make_killed_jobs


@pytest.fixture(scope="session")
def sqlite_world(tmp_path_factory: pytest.TempPathFactory) -> KilledJobs:
    root = tmp_path_factory.mktemp("sqlite-world")
    return make_killed_jobs(
        f"sqlite:///{root / 'mlflow.db'}", f"sqlite:///{root / 'optuna.db'}", root / "work"
    )


@pytest.fixture(scope="session")
def file_world(tmp_path_factory: pytest.TempPathFactory) -> KilledJobs:
    root = tmp_path_factory.mktemp("file-world")
    # MLflow 3 refuses the file store unless asked; this test process writes one too.
    env = {"MLFLOW_ALLOW_FILE_STORE": "true"}
    os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return make_killed_jobs(
        f"file:{root / 'mlruns'}", str(root / "optuna.log"), root / "work", env=env
    )


@pytest.fixture(scope="session")
def postgres_world(postgres_server: object, tmp_path_factory: pytest.TempPathFactory) -> KilledJobs:
    root = tmp_path_factory.mktemp("pg-world")
    create = postgres_server.create_database  # type: ignore[attr-defined]
    return make_killed_jobs(create("mlflow_world"), create("optuna_world"), root / "work")


@pytest.fixture(scope="session")
def server_world(mlflow_server: object, tmp_path_factory: pytest.TempPathFactory) -> KilledJobs:
    root = tmp_path_factory.mktemp("server-world")
    url = mlflow_server.url  # type: ignore[attr-defined]
    return make_killed_jobs(url, f"sqlite:///{root / 'optuna.db'}", root / "work")


@pytest.fixture(scope="session")
def mysql_world(mysql_server: object, tmp_path_factory: pytest.TempPathFactory) -> KilledJobs:
    root = tmp_path_factory.mktemp("mysql-world")
    create = mysql_server.create_database  # type: ignore[attr-defined]
    return make_killed_jobs(create("mlflow_world"), create("optuna_world"), root / "work")


@pytest.fixture(scope="session")
def crossed_world(tmp_path_factory: pytest.TempPathFactory, _lab_template: Path) -> CrossedWorld:
    """Several experiments and studies, crossed, linked by every convention (crossed_world.py)."""
    return make_crossed_world(tmp_path_factory.mktemp("crossed-world"), _lab_template)
