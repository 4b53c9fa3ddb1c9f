"""Shared pytest fixtures: real PostgreSQL and MLflow servers.

* ``postgres_server`` (session) -- a :class:`servers.PostgresServer`.
* ``postgres_url`` (function)  -- URL of a fresh, empty database, dropped after the test.
* ``mlflow_server`` (session)   -- a :class:`servers.MlflowServer` (``.url``, ``.backend_uri``).

Tests that use these fixtures are marked ``postgres`` / ``mlflow_server`` automatically, and
tests carrying one of those markers get the corresponding server started, so
``pytest -m "not postgres and not mlflow_server"`` runs the fast, server-free subset.

A real SLURM (``slurm_cluster``, ``slurm``, ...) comes from ``slurm_fixtures.py``, same policy.

If the server software is missing the tests are skipped -- unless ``MLTIDY_REQUIRE_SERVERS=1``
(set by ``.ci/run``), in which case they fail, so CI can never go green by skipping.
"""

from __future__ import annotations

import os
import re
import uuid
from typing import TYPE_CHECKING

import pytest

from mysql_server import MysqlServer
from servers import (
    REQUIRE_SERVERS_ENV,
    MlflowServer,
    PostgresServer,
    ServerUnavailable,
    servers_required,
)

if TYPE_CHECKING:
    from collections.abc import Iterator

pytest_plugins = ["worlds", "receivers", "labs", "slurm_fixtures", "side_venvs"]

_FIXTURE_MARKERS = {
    "postgres_server": "postgres",
    "postgres_url": "postgres",
    "mlflow_server": "mlflow_server",
    "mysql_server": "mysql",
    "mysql_url": "mysql",
}


def _start(server: PostgresServer | MlflowServer | MysqlServer) -> None:
    """Start *server*; skip (or, with MLTIDY_REQUIRE_SERVERS=1, fail) if it is not installed."""
    try:
        server.start()
    except ServerUnavailable as exc:
        reason = str(exc)
    else:
        return
    if servers_required():
        pytest.fail(f"{reason}\n({REQUIRE_SERVERS_ENV}=1: refusing to skip)", pytrace=False)
    pytest.skip(f"{reason} (set {REQUIRE_SERVERS_ENV}=1 to make this an error)")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture, marker in _FIXTURE_MARKERS.items():
            if fixture in getattr(item, "fixturenames", ()) and not item.get_closest_marker(marker):
                item.add_marker(marker)


@pytest.fixture(scope="session", autouse=True)
def _private_state_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """mltidy's state (watch files, the installation secret) in a folder of the test session, not
    in the home directory of whoever runs the tests; subprocesses inherit it."""
    previous = os.environ.get("MLTIDY_STATE_DIR")
    os.environ["MLTIDY_STATE_DIR"] = str(tmp_path_factory.mktemp("mltidy-state"))
    yield
    if previous is None:
        os.environ.pop("MLTIDY_STATE_DIR", None)
    else:
        os.environ["MLTIDY_STATE_DIR"] = previous


@pytest.fixture(autouse=True)
def _servers_for_markers(request: pytest.FixtureRequest) -> None:
    """Start the server a marked test asks for even if it does not request the fixture."""
    if request.node.get_closest_marker("postgres"):
        request.getfixturevalue("postgres_server")
    if request.node.get_closest_marker("mlflow_server"):
        request.getfixturevalue("mlflow_server")
    if request.node.get_closest_marker("mysql"):
        request.getfixturevalue("mysql_server")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    _start(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL of a brand-new database for this test (dropped afterwards)."""
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t_{slug}_{uuid.uuid4().hex[:8]}"
    url = postgres_server.create_database(name)
    try:
        yield url
    finally:
        postgres_server.drop_database(name)


@pytest.fixture(scope="session")
def mlflow_server() -> Iterator[MlflowServer]:
    server = MlflowServer()
    _start(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def mysql_server() -> Iterator[MysqlServer]:
    """A real MariaDB server (Debian's mariadb-server-core) on 127.0.0.1."""
    server = MysqlServer()
    _start(server)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def mysql_url(mysql_server: MysqlServer, request: pytest.FixtureRequest) -> Iterator[str]:
    """SQLAlchemy URL of a brand-new MySQL database for this test (dropped afterwards)."""
    slug = re.sub(r"[^a-z0-9]+", "_", request.node.name.lower()).strip("_")[:40]
    name = f"t_{slug}_{uuid.uuid4().hex[:8]}"
    url = mysql_server.create_database(name)
    try:
        yield url
    finally:
        mysql_server.drop_database(name)
