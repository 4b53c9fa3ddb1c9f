"""Stores of every backend, each filled by real jobs killed with real signals.

Each "world" is one MLflow store and one Optuna storage written by the same jobs (MLflow runs
inside Optuna trials). Worlds are built once per session: starting Python jobs is the slow part.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import pytest

from killed_jobs import KilledJobs
from mltidy.model import StoreKind


@dataclass(frozen=True)
class StoreCase:
    """One backend under contract test: the store's URI for mltidy and the jobs that wrote it.

    ``read_path`` is what ``MLTIDY_READ_PATH`` is set to while the test runs: SQL stores are
    tested on the fast path and on the library path, each forced.
    """

    backend: str
    kind: StoreKind
    uri: str
    jobs: KilledJobs
    has_activity: bool
    missing_uri: str | None
    read_path: str = "auto"


BACKENDS = [
    pytest.param("mlflow-sqlite", id="mlflow-sqlite"),
    pytest.param("mlflow-sqlite-library", id="mlflow-sqlite-library"),
    pytest.param("mlflow-file", id="mlflow-file"),
    pytest.param("mlflow-postgres", id="mlflow-postgres", marks=pytest.mark.postgres),
    pytest.param(
        "mlflow-postgres-library", id="mlflow-postgres-library", marks=pytest.mark.postgres
    ),
    pytest.param("mlflow-server", id="mlflow-server", marks=pytest.mark.mlflow_server),
    pytest.param(
        "mlflow-server-library", id="mlflow-server-library", marks=pytest.mark.mlflow_server
    ),
    pytest.param("optuna-sqlite", id="optuna-sqlite"),
    pytest.param("optuna-sqlite-library", id="optuna-sqlite-library"),
    pytest.param("optuna-journal", id="optuna-journal"),
    pytest.param("optuna-postgres", id="optuna-postgres", marks=pytest.mark.postgres),
    pytest.param("mlflow-mysql", id="mlflow-mysql", marks=pytest.mark.mysql),
    pytest.param("optuna-mysql", id="optuna-mysql", marks=pytest.mark.mysql),
    pytest.param(
        "optuna-postgres-library", id="optuna-postgres-library", marks=pytest.mark.postgres
    ),
]


@pytest.fixture(params=BACKENDS)
def case(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> StoreCase:
    found = _case(request, tmp_path)
    monkeypatch.setenv("MLTIDY_READ_PATH", found.read_path)
    return found


def _case(request: pytest.FixtureRequest, tmp_path: Path) -> StoreCase:
    backend: str = request.param
    if backend.endswith("-library"):
        return dataclasses.replace(
            _case_of(request, backend.removesuffix("-library"), tmp_path),
            backend=backend,
            read_path="library",
        )
    found = _case_of(request, backend, tmp_path)
    if backend.endswith(("-sqlite", "-postgres")):
        return dataclasses.replace(found, read_path="fast")
    return found


def _case_of(request: pytest.FixtureRequest, backend: str, tmp_path: Path) -> StoreCase:
    missing = tmp_path / "missing"
    if backend == "mlflow-sqlite":
        world = request.getfixturevalue("sqlite_world")
        return StoreCase(
            backend, StoreKind.MLFLOW, world.mlflow_uri, world, True, f"sqlite:///{missing}.db"
        )
    if backend == "mlflow-file":
        world = request.getfixturevalue("file_world")
        missing_uri = f"file:{missing}"
        return StoreCase(backend, StoreKind.MLFLOW, world.mlflow_uri, world, True, missing_uri)
    if backend == "mlflow-postgres":
        world = request.getfixturevalue("postgres_world")
        return StoreCase(backend, StoreKind.MLFLOW, world.mlflow_uri, world, True, None)
    if backend == "mlflow-server":
        world = request.getfixturevalue("server_world")
        return StoreCase(backend, StoreKind.MLFLOW, world.mlflow_uri, world, True, None)
    if backend == "optuna-sqlite":
        world = request.getfixturevalue("sqlite_world")
        return StoreCase(
            backend, StoreKind.OPTUNA, world.optuna_url, world, False, f"sqlite:///{missing}.db"
        )
    if backend == "optuna-journal":
        world = request.getfixturevalue("file_world")
        return StoreCase(backend, StoreKind.OPTUNA, world.optuna_url, world, False, str(missing))
    if backend == "mlflow-mysql":
        world = request.getfixturevalue("mysql_world")
        return StoreCase(backend, StoreKind.MLFLOW, world.mlflow_uri, world, True, None)
    if backend == "optuna-mysql":
        world = request.getfixturevalue("mysql_world")
        return StoreCase(backend, StoreKind.OPTUNA, world.optuna_url, world, False, None)
    if backend == "optuna-postgres":
        world = request.getfixturevalue("postgres_world")
        return StoreCase(backend, StoreKind.OPTUNA, world.optuna_url, world, False, None)
    raise AssertionError(backend)
