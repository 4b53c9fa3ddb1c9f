"""Store URIs as people write them: a server URL without a driver is read with a driver that is
installed (or the error names the one to install), and a plain path to an SQLite file is the
database it is (real PostgreSQL and MariaDB servers, real stores)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from killed_jobs import KilledJobs, make_killed_jobs
from mltidy.backends.identity import sqlite_file
from mltidy.backends.sql import driver_hint, with_installed_driver
from mltidy.cli.app import app
from mltidy.errors import StoreError


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("url", "installed", "expected"),
    [
        # SQLAlchemy 2.1 reads postgresql:// with psycopg (3): with only psycopg2, use that
        ("postgresql://u:p@h/db", {"psycopg2"}, "postgresql+psycopg2://u:p@h/db"),
        ("postgres://u@h/db", {"psycopg2"}, "postgresql+psycopg2://u@h/db"),
        ("mysql://u@h/db", {"pymysql"}, "mysql+pymysql://u@h/db"),
        ("mariadb://u@h/db", {"pymysql"}, "mariadb+pymysql://u@h/db"),
        # the default is installed, or the URL names a driver: as given
        ("postgresql://u@h/db", {"psycopg", "psycopg2"}, "postgresql://u@h/db"),
        ("mysql://u@h/db", {"MySQLdb", "pymysql"}, "mysql://u@h/db"),
        ("postgresql+psycopg://u@h/db", set(), "postgresql+psycopg://u@h/db"),
        ("sqlite:///x.db", set(), "sqlite:///x.db"),
    ],
)
def test_a_url_without_a_driver_gets_an_installed_one(
    url: str, installed: set[str], expected: str
) -> None:
    assert with_installed_driver(url, lambda module: module in installed) == expected


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("postgresql://u@h/db", "pip install psycopg2-binary (or psycopg[binary])"),
        ("mysql://u@h/db", "pip install pymysql (or mysqlclient)"),
    ],
)
def test_without_any_driver_the_hint_names_one_for_that_database(url: str, hint: str) -> None:
    with pytest.raises(StoreError) as caught:
        with_installed_driver(url, lambda module: False)
    assert caught.value.hint == hint
    assert "pymysql" not in driver_hint("postgresql")  # the measured defect: a MySQL driver
    assert driver_hint("postgresql", "psycopg").startswith("pip install psycopg[binary], or drop")


def test_a_named_driver_that_is_missing_names_its_package(tmp_path: Path) -> None:
    code, _, err = invoke("scan", "--mlflow", "postgresql+pg8000://u@127.0.0.1:9/db")
    assert code == 3
    assert "pip install pg8000, or drop +pg8000 from the URL" in err


@pytest.mark.postgres
def test_postgresql_without_a_driver_is_read(postgres_server: object, tmp_path: Path) -> None:
    create = postgres_server.create_database  # type: ignore[attr-defined]
    jobs = make_killed_jobs(create("drv_mlflow"), create("drv_optuna"), tmp_path)
    _scan_without_driver(jobs, "postgresql+psycopg2://", "postgresql://")


@pytest.mark.mysql
def test_mysql_without_a_driver_is_read(mysql_server: object, tmp_path: Path) -> None:
    create = mysql_server.create_database  # type: ignore[attr-defined]
    jobs = make_killed_jobs(create("drv_mlflow"), create("drv_optuna"), tmp_path)
    _scan_without_driver(jobs, "mysql+pymysql://", "mysql://")


def _scan_without_driver(jobs: KilledJobs, named: str, plain: str) -> None:
    mlflow_url = jobs.mlflow_uri.replace(named, plain)
    optuna_url = jobs.optuna_url.replace(named, plain)
    code, out, err = invoke("scan", "-f", "json", "--mlflow", mlflow_url, "--optuna", optuna_url)
    assert code == 0, err
    payload = json.loads(out)
    assert all(s["ok"] for s in payload["stores"])
    assert {r["id"] for r in payload["records"]} >= {str(j.run_id) for j in jobs.killed}


def test_a_plain_path_to_an_sqlite_store_is_recognised_by_content(
    sqlite_world: KilledJobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # names that say nothing: the content says what they are
    for uri, name in ((sqlite_world.mlflow_uri, "runs.bin"), (sqlite_world.optuna_url, "hpo")):
        source = sqlite_file(uri)
        assert source is not None
        shutil.copy(source, tmp_path / name)
    monkeypatch.chdir(tmp_path)
    code, out, err = invoke("scan", "-f", "json", "--mlflow", "runs.bin", "--optuna", "hpo")
    assert code == 0, err
    payload = json.loads(out)
    assert [s["uri"] for s in payload["stores"]] == [
        f"sqlite:///{tmp_path / 'runs.bin'}",
        f"sqlite:///{tmp_path / 'hpo'}",
    ]
    assert len(payload["records"]) == 6
    # the wrong kind is still told apart, with a hint
    code, _, err = invoke("scan", "--optuna", str(tmp_path / "runs.bin"))
    assert code == 3
    assert "looks like an MLflow tracking store: pass it with --mlflow" in err
