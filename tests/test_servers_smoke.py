"""Smoke tests for the real-server fixtures in ``servers.py`` / ``conftest.py``."""

from __future__ import annotations

import os
import uuid

import psutil
import pytest
import sqlalchemy as sa

from servers import MlflowServer, PostgresServer, process_group_members


@pytest.mark.postgres
def test_postgres_accepts_connection(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            assert conn.execute(sa.text("SELECT current_user")).scalar_one() == "mltidy"
            dbname = conn.execute(sa.text("SELECT current_database()")).scalar_one()
    finally:
        engine.dispose()
    assert postgres_url.endswith("/" + dbname)
    assert postgres_url.startswith("postgresql+psycopg2://mltidy:")


@pytest.mark.postgres
def test_postgres_databases_are_fresh_per_test(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            tables = conn.execute(
                sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")
            ).scalar_one()
            assert tables == 0
            conn.execute(sa.text("CREATE TABLE leftover (id int)"))
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_wrong_password_is_refused(postgres_server: PostgresServer) -> None:
    engine = sa.create_engine(postgres_server.wrong_password_url("postgres"))
    try:
        with pytest.raises(sa.exc.OperationalError, match="password authentication failed"):
            engine.connect().close()
    finally:
        engine.dispose()


@pytest.mark.mlflow_server
def test_mlflow_client_can_create_experiment_and_run(mlflow_server: MlflowServer) -> None:
    from mlflow.tracking import MlflowClient

    assert mlflow_server.url.startswith("http://127.0.0.1:")
    assert mlflow_server.backend_uri.startswith("sqlite:///")

    client = MlflowClient(tracking_uri=mlflow_server.url)
    experiment_id = client.create_experiment(f"smoke-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "loss", 0.5)
    fetched = client.get_run(run.info.run_id)
    assert fetched.info.experiment_id == experiment_id
    assert fetched.info.status == "RUNNING"
    assert fetched.data.metrics == {"loss": 0.5}

    # The run really lives in the server's backend store.
    engine = sa.create_engine(mlflow_server.backend_uri)
    try:
        with engine.connect() as conn:
            status = conn.execute(
                sa.text("SELECT status FROM runs WHERE run_uuid = :id"), {"id": run.info.run_id}
            ).scalar_one()
    finally:
        engine.dispose()
    assert status == "RUNNING"


@pytest.mark.mlflow_server
def test_mlflow_server_stop_leaves_no_process_behind() -> None:
    # A dedicated server (the session one must stay up), with MLflow's job execution ON so the
    # job runner and its huey consumers -- the processes that outlive a naive terminate() --
    # are part of what gets cleaned up.
    server = MlflowServer(enable_jobs=True)
    server.start()
    try:
        pgid = server.pgid
        leader = psutil.Process(pgid)
        assert leader.children(recursive=True), "mlflow server should have child processes"
        tracked = [leader, *leader.children(recursive=True)]
        assert len(process_group_members(pgid)) >= 2
        tmpdir = server.tmpdir
    finally:
        server.stop()

    assert process_group_members(pgid) == []
    assert [p.pid for p in tracked if _alive(p)] == []
    assert [p.pid for p in psutil.process_iter() if _alive(p) and _pgid(p) == pgid] == []
    assert tmpdir is not None
    assert not tmpdir.exists()


def _alive(proc: psutil.Process) -> bool:
    try:
        return bool(proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def _pgid(proc: psutil.Process) -> int | None:
    try:
        return os.getpgid(proc.pid)
    except ProcessLookupError:
        return None
