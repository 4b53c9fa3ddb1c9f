"""pytest fixtures for a real SLURM (``slurm_cluster.py``), loaded from ``conftest.py``.

* ``slurm_cluster`` (session) -- a :class:`slurm_cluster.SlurmCluster` without accounting or
  cgroups: what most sites look like from a login node with ``squeue`` only.
* ``slurm`` (function) -- the same cluster, with ``SLURM_CONF`` exported for the test.
* ``slurm_oom_cluster`` (session) -- a second cluster that confines job memory with cgroups;
  skipped with the reason when this machine cannot (even with ``MLTIDY_REQUIRE_SERVERS=1``:
  that is a property of the machine, not a missing package).
* ``slurm_accounting_cluster`` (session) -- a third cluster with ``slurmdbd`` over the session's
  MariaDB server, so ``sacct`` answers.

Tests using them are marked ``slurm`` automatically, and a test marked ``slurm`` gets the
session cluster started. Missing SLURM programs skip the tests, unless
``MLTIDY_REQUIRE_SERVERS=1`` (CI), which makes them fail.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest

from servers import REQUIRE_SERVERS_ENV, ServerUnavailable, servers_required
from slurm_cluster import SlurmCluster, memory_cgroup_problem

if TYPE_CHECKING:
    from collections.abc import Iterator

    from mysql_server import MysqlServer

_FIXTURES = ("slurm_cluster", "slurm", "slurm_oom_cluster", "slurm_accounting_cluster")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        if any(name in fixtures for name in _FIXTURES) and not item.get_closest_marker("slurm"):
            item.add_marker("slurm")


@pytest.fixture(autouse=True)
def _slurm_for_marker(request: pytest.FixtureRequest) -> None:
    if request.node.get_closest_marker("slurm"):
        request.getfixturevalue("slurm_cluster")


def _start(cluster: SlurmCluster) -> None:
    """Start *cluster*; skip (or, with MLTIDY_REQUIRE_SERVERS=1, fail) if SLURM is missing."""
    try:
        cluster.start()
    except ServerUnavailable as exc:
        reason = str(exc)
    else:
        return
    if servers_required():
        pytest.fail(f"{reason}\n({REQUIRE_SERVERS_ENV}=1: refusing to skip)", pytrace=False)
    pytest.skip(f"{reason} (set {REQUIRE_SERVERS_ENV}=1 to make this an error)")


@pytest.fixture(scope="session")
def slurm_cluster() -> Iterator[SlurmCluster]:
    """A real single-node SLURM (no accounting, no cgroups) for the whole session."""
    cluster = SlurmCluster(name="mltidy")
    _start(cluster)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def slurm(slurm_cluster: SlurmCluster, monkeypatch: pytest.MonkeyPatch) -> SlurmCluster:
    """The session's SLURM, with ``SLURM_CONF`` exported for this test's clients."""
    monkeypatch.setenv("SLURM_CONF", str(slurm_cluster.conf))
    return slurm_cluster


@pytest.fixture(scope="session")
def slurm_oom_cluster(slurm_cluster: SlurmCluster) -> Iterator[SlurmCluster]:
    """A SLURM whose jobs are confined to their ``--mem`` by cgroups (OUT_OF_MEMORY works)."""
    problem = memory_cgroup_problem()
    if problem is not None:
        pytest.skip(f"SLURM cannot confine job memory on this machine: {problem}")
    cluster = SlurmCluster(name="mltidyoom", cgroups=True, cpus=2)
    _start(cluster)
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def slurm_accounting_cluster(
    slurm_cluster: SlurmCluster, mysql_server: MysqlServer
) -> Iterator[SlurmCluster]:
    """A SLURM with slurmdbd over MariaDB: ``sacct`` answers for jobs the controller forgot.

    ``MinJobAge`` is short, so a test can watch a job leave the controller and stay in
    accounting.
    """
    cluster = SlurmCluster(name="mltidyacct", accounting=mysql_server, min_job_age=2, cpus=4)
    _start(cluster)
    try:
        yield cluster
    finally:
        cluster.stop()
