"""``mltidy doctor``: versions, stores and provenance, checked."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

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
