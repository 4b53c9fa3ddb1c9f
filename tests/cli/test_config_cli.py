"""A config file with a misspelt key or a bad value is a usage error that names the file, the
key and what would be right, in every command (the installed entry point, and JSON mode)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

MLTIDY = str(Path(sys.executable).with_name("mltidy"))


def run(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")
    }
    return subprocess.run(
        [MLTIDY, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False, env=env
    )


@pytest.mark.parametrize("command", ["scan", "close", "declutter", "link", "watch"])
def test_a_misspelt_key_names_the_file_and_the_close_matches(tmp_path: Path, command: str) -> None:
    (tmp_path / "mltidy.toml").write_text('mlflw = "sqlite:///mlflow.db"\n')
    done = run(tmp_path, command, *(["--once"] if command == "watch" else []))
    assert done.returncode == 2, done.stderr
    assert f"mltidy: error: {tmp_path / 'mltidy.toml'}: unknown key 'mlflw'" in done.stderr
    assert "hint: did you mean mlflow or mlflow_ui?" in done.stderr
    assert "no stores found" not in done.stderr


def test_a_bad_value_names_the_file_the_key_and_the_expected_form(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text('[tool.mltidy]\nstale_after = "2 minutes"\n')
    done = run(tmp_path, "scan", "-f", "json")
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "usage"
    assert error["message"] == (
        f"[tool.mltidy] in {tmp_path / 'pyproject.toml'}: stale_after = '2 minutes' is not a "
        "duration such as 90s, 30m, 2h or 7d"
    )
