"""``mltidy demo`` end to end through the installed entry point."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

EXE = Path(sys.executable).parent / "mltidy"


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    done = subprocess.run(
        [str(EXE), "demo", "--path", str(tmp_path / "sandbox")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "COLUMNS": "400"},  # no table wrapping in the middle of a phrase
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "Traceback" not in out + done.stderr
    assert out.count("killed with SIG") >= 3
    assert "no longer exists on" in out and "is running on" in out
    assert "closed 6 records (0 failed" in out
    assert "deleted" in out
    assert "dashboard/studies/" in out and "/#/experiments/" in out
    after = subprocess.run(
        [str(EXE), "scan", "-f", "jsonl"],
        cwd=tmp_path / "sandbox",
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert after.stdout == ""  # nothing left RUNNING
    # The links the demo wrote name its stores by identity: link in the sandbox, or from
    # another folder with plain paths to the same files, plans nothing new.
    for cwd, stores in (
        (tmp_path / "sandbox", []),
        (tmp_path, ["--mlflow", "sandbox/mlflow.db", "--optuna", "sandbox/optuna.db"]),
    ):
        again = subprocess.run(
            [str(EXE), "link", "--dry-run", "-f", "json", *stores],
            cwd=cwd,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert again.returncode == 0, again.stderr
        pairs = json.loads(again.stdout)["pairs"]
        assert pairs and {p["status"] for p in pairs} == {"unchanged"}, pairs


def test_demo_refuses_a_folder_that_is_not_its_own(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("do not delete")
    done = subprocess.run(
        [str(EXE), "demo", "--path", str(precious)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "refusing to overwrite" in done.stderr
    assert (precious / "thesis.tex").read_text() == "do not delete"
