"""``mltidy doctor``: versions, stores and provenance, checked."""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from killed_jobs import KilledJobs
from mltidy.cli.app import app


def test_doctor_reports_plugin_and_stores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optuna

    monkeypatch.chdir(tmp_path)
    optuna.create_study(storage=f"sqlite:///{tmp_path / 'optuna.db'}")
    result = CliRunner().invoke(app, ["doctor", "-f", "json"])
    assert result.exit_code == 0, result.stderr
    checks = {c["topic"]: c for c in json.loads(result.stdout)["checks"]}
    assert checks["MLflow plugin"]["finding"] == "registered"
    assert checks["optuna store"]["ok"]
    assert "Optuna RDB storage (sqlite)" in checks["optuna store"]["finding"]

    monkeypatch.setenv("MLTIDY_PROVENANCE", "0")
    result = CliRunner().invoke(app, ["doctor", "-f", "json"])
    checks = {c["topic"]: c for c in json.loads(result.stdout)["checks"]}
    assert not checks["MLflow plugin"]["ok"]


def test_doctor_exits_3_on_a_bad_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["doctor", "--mlflow", f"sqlite:///{tmp_path}/nope.db"])
    assert result.exit_code == 3
    assert "does not exist" in result.stdout
    assert not (tmp_path / "nope.db").exists()


def test_doctor_counts_what_running_records_carry(sqlite_world: object, tmp_path: Path) -> None:
    """Per store: RUNNING records with provenance (a trial's from its MLflow run), with a
    heartbeat, or with neither; and how a naive-time Optuna storage's times are read."""
    import optuna

    world = sqlite_world
    bare = f"sqlite:///{tmp_path / 'bare.db'}"
    optuna.create_study(study_name="bare", storage=bare).ask()  # a trial killed before tell
    stores = ["--mlflow", world.mlflow_uri, "--optuna", world.optuna_url, "--optuna", bare]  # type: ignore[attr-defined]
    result = CliRunner().invoke(app, ["doctor", "-f", "json", *stores])
    assert result.exit_code == 0, result.output
    running = [c for c in json.loads(result.stdout)["checks"] if c["topic"] == "RUNNING records"]
    findings = [c["finding"].split(": ", 1)[1] for c in running]
    # Three killed jobs: their runs and trials all carry the plugin's provenance.
    assert findings[:2] == ["3 RUNNING: 3 with provenance, 0 with a heartbeat, 0 with neither"] * 2
    assert findings[2].startswith(
        "1 RUNNING: 0 with provenance, 0 with a heartbeat, 1 with neither"
    )
    assert "mltidy run" in findings[2] and not running[2]["ok"]


def _clock(uri: str) -> dict[str, object]:
    result = CliRunner().invoke(app, ["doctor", "-f", "json", "--mlflow", uri])
    assert result.exit_code == 0, result.stderr
    (check,) = [c for c in json.loads(result.stdout)["checks"] if c["topic"] == "store clock"]
    return dict(check)


@pytest.mark.parametrize("world", ["sqlite_world", "postgres_world", "mysql_world", "server_world"])
def test_doctor_compares_each_store_clock_with_this_host(
    world: str, request: pytest.FixtureRequest
) -> None:
    jobs = request.getfixturevalue(world)
    check = _clock(jobs.mlflow_uri)
    assert check["ok"], check
    finding = str(check["finding"])
    assert "server clock within" in finding, finding  # the database's (or server's) own clock
    assert "newest record time" in finding


def test_doctor_names_a_record_dated_in_the_future(
    sqlite_world: KilledJobs, tmp_path: Path
) -> None:
    db = tmp_path / "mlflow.db"
    shutil.copyfile(sqlite_world.mlflow_uri.removeprefix("sqlite:///"), db)
    ahead = int((time.time() + 400 * 86400) * 1000)
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE runs SET start_time = ? WHERE status = 'RUNNING'", (ahead,))
    check = _clock(f"sqlite:///{db}")
    assert not check["ok"]
    assert "ahead of this host" in str(check["finding"])
