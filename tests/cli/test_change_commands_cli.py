"""Bad input to the commands that change things: one clear line, a distinct exit code, and
nothing created or changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mltidy.cli.app import app


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["close", "--trial", "no-number"], 2, "is not a trial reference"),
        (["close", "--trial", "s:x"], 2, "is not a trial reference"),
        (["close", "--force"], 2, "--force applies only"),
        (["close", "--as", "exploded"], 2, "exploded"),
        (["close", "--max-retry", "-1"], 2, "greater than or equal to 0"),
        (["close", "--mlflow", "ftp://x"], 2, "ftp://"),
        (["close", "--yes", "--mlflow", "sqlite:///{d}/gone.db"], 3, "does not exist"),
        (["declutter", "--older-than", "soon"], 2, "not a duration"),
        (["declutter", "--yes", "--optuna", "{d}/gone.log"], 3, "does not exist"),
        (["link", "--mlflow", "sqlite:///{d}/gone.db"], 3, "does not exist"),
        (["link", "--optuna", "mongodb://x"], 2, "mongodb://"),
        (["doctor", "--optuna", "sqlite:///{d}/gone.db"], 3, "does not exist"),
    ],
)
def test_bad_input(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], code: int, message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, [a.replace("{d}", str(tmp_path)) for a in args])
    assert result.exit_code == code, (result.stdout, result.stderr)
    assert message in result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert list(tmp_path.iterdir()) == []
