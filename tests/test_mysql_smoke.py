"""Smoke tests for the real MariaDB server in ``mysql_server.py``.

The fixtures live in conftest.py: a missing server is a skip, unless
``MLTIDY_REQUIRE_SERVERS=1`` (CI), where it is a failure.
"""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

import pytest
import sqlalchemy as sa

import mysql_server as mysql_server_module
from mysql_server import MysqlServer
from servers import ServerUnavailable

if TYPE_CHECKING:
    from pathlib import Path


def test_mysql_select_1(mysql_url: str) -> None:
    assert mysql_url.startswith("mysql+pymysql://mltidy:")
    engine = sa.create_engine(mysql_url)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1
            user = conn.execute(sa.text("SELECT CURRENT_USER()")).scalar_one()
            dbname = conn.execute(sa.text("SELECT DATABASE()")).scalar_one()
            charset = conn.execute(sa.text("SELECT @@character_set_database")).scalar_one()
            tables = conn.execute(
                sa.text("SELECT count(*) FROM information_schema.tables WHERE table_schema = :db"),
                {"db": dbname},
            ).scalar_one()
    finally:
        engine.dispose()
    assert user.startswith("mltidy@")
    assert mysql_url.endswith("/" + dbname)
    assert charset == "utf8mb4"
    assert tables == 0


def test_mysql_wrong_password_is_refused(mysql_server: MysqlServer) -> None:
    engine = sa.create_engine(mysql_server.wrong_password_url())
    try:
        with pytest.raises(sa.exc.OperationalError, match="Access denied"):
            engine.connect().close()
    finally:
        engine.dispose()


def test_mysql_mlflow_client_creates_schema_experiment_and_run(
    mysql_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlflow

    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root is ./mlruns
    client = mlflow.MlflowClient(tracking_uri=mysql_url)
    experiment_id = client.create_experiment(
        "smoke-mysql", artifact_location=(tmp_path / "artifacts").as_uri()
    )
    run = client.create_run(experiment_id)
    client.log_metric(run.info.run_id, "loss", 0.5)
    client.set_tag(run.info.run_id, "note", "héllo ✓")  # needs a real utf8mb4 database
    fetched = client.get_run(run.info.run_id)
    assert fetched.info.status == "RUNNING"
    assert fetched.data.metrics == {"loss": 0.5}
    assert fetched.data.tags["note"] == "héllo ✓"

    engine = sa.create_engine(mysql_url)
    try:
        with engine.connect() as conn:
            status = conn.execute(
                sa.text("SELECT status FROM runs WHERE run_uuid = :id"), {"id": run.info.run_id}
            ).scalar_one()
            revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()
    assert status == "RUNNING"
    assert revision


def test_mysql_optuna_study_and_trial(mysql_url: str) -> None:
    import optuna

    study = optuna.create_study(study_name="smoke-mysql", storage=mysql_url)
    trial = study.ask()
    x = trial.suggest_float("x", -1.0, 1.0)
    study.tell(trial, x * x)
    loaded = optuna.load_study(study_name="smoke-mysql", storage=mysql_url)
    assert len(loaded.trials) == 1
    assert loaded.trials[0].state == optuna.trial.TrialState.COMPLETE
    assert loaded.best_value == pytest.approx(x * x)


def test_mysql_drop_database_kills_open_transactions(mysql_server: MysqlServer) -> None:
    name = f"t_drop_{uuid.uuid4().hex[:8]}"
    engine = sa.create_engine(mysql_server.create_database(name))
    try:
        conn = engine.connect()
        conn.execute(sa.text("CREATE TABLE t (id int)"))
        conn.execute(sa.text("INSERT INTO t VALUES (1)"))  # open transaction: metadata lock
        mysql_server.drop_database(name)
        with pytest.raises(sa.exc.DBAPIError):
            conn.execute(sa.text("SELECT 1"))
        conn.invalidate()
        conn.close()
    finally:
        engine.dispose()
    check = sa.create_engine(mysql_server.url())
    try:
        with check.connect() as c:
            assert c.execute(sa.text("SHOW DATABASES LIKE :n"), {"n": name}).all() == []
    finally:
        check.dispose()


def test_mysql_stop_is_clean_and_idempotent(mysql_server: MysqlServer) -> None:
    # A dedicated server: the session one must stay up.
    server = MysqlServer()
    server.start()
    try:
        assert server.startup_seconds is not None
        proc = server.process
        tmpdir = server.tmpdir
        assert proc is not None
        assert tmpdir is not None
        assert server.port != mysql_server.port
    finally:
        server.stop()
    assert proc.poll() is not None
    assert not tmpdir.exists()
    server.stop()  # idempotent
    with pytest.raises(RuntimeError, match="not running"):
        server.url()


def test_mysql_missing_binaries_raise_server_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mysql_server_module, "find_mysql_binaries", lambda: None)
    server = MysqlServer()
    with pytest.raises(ServerUnavailable, match="mariadb-server-core"):
        server.start()
    assert server.tmpdir is None
