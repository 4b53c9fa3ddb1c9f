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
