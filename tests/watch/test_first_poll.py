"""What ``watch`` sees on its first poll is known, and never sent later: not by ``--once`` from
cron, not by the daemon. What ends after it (even while watch is down) is sent. The state is
the stores', wherever watch starts (real jobs, real stores)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from labs import Lab, ready
from mltidy.cli.app import app
from receivers import HttpReceiver

MLTIDY = str(Path(sys.executable).with_name("mltidy"))


def poll(*args: str) -> dict[str, Any]:
    result = CliRunner().invoke(app, ["watch", "--once", "-f", "json", *args])
    assert result.exit_code == 0, result.stderr
    payload: dict[str, Any] = json.loads(result.stdout)
    return payload


def kinds(payload: dict[str, Any]) -> list[str]:
    return sorted(e["kind"] for e in payload["events"])


def finish_a_job(lab: Lab) -> None:
    job = lab.start(2)
    ready(job)
    assert job.wait() == 0


def test_runs_that_ended_before_the_first_poll_are_never_sent(lab: Lab) -> None:
    finish_a_job(lab)  # ends just before watch starts: the measured defect
    stores = ["--mlflow", lab.mlflow, "--optuna", lab.optuna, "--state", str(lab.state)]
    first = poll(*stores)
    assert first["events"] == [] and first["known"] >= 1
    second = poll(*stores)
    assert "run-finished" not in kinds(second)  # it was sent here before
    assert poll(*stores)["events"] == []
    # while watch is "down" (between two cron runs), a run ends: it is sent
    finish_a_job(lab)
    third = poll(*stores)
    assert kinds(third) == ["run-finished"]
    assert poll(*stores)["events"] == []


def test_the_daemon_never_sends_what_its_first_poll_saw(
    lab: Lab, http_receiver: HttpReceiver
) -> None:
    finish_a_job(lab)
    env = {**os.environ, "MLTIDY_NOTIFY": http_receiver.url()}
    daemon = subprocess.Popen(
        [
            MLTIDY,
            "watch",
            "--mlflow",
            lab.mlflow,
            "--optuna",
            lab.optuna,
            "--interval",
            "1s",
            "--state",
            str(lab.state),
            "-f",
            "jsonl",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    polls = PollCounter(lab.state)
    try:
        deadline = time.monotonic() + 120
        while polls() < 3 and time.monotonic() < deadline:
            time.sleep(0.5)
        assert polls() >= 3
        assert http_receiver.requests == []
        finish_a_job(lab)  # ends while the daemon runs: sent
        (message,) = http_receiver.wait_for(1, timeout=120)
        assert "finished" in message.body["title"]
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=60)
    finally:
        daemon.kill()
    assert daemon.returncode == 0, err
    events = [json.loads(line)["event"] for line in out.splitlines() if '"event"' in line]
    assert [e["kind"] for e in events] == ["run-finished"]
    assert len(http_receiver.requests) == 1


class PollCounter:
    """How many successful polls a state file has seen (its last_ok_at changes each time)."""

    def __init__(self, state: Path) -> None:
        self.state = state
        self.seen: set[float] = set()

    def __call__(self) -> int:
        if self.state.exists():
            try:
                with sqlite3.connect(f"file:{self.state}?mode=ro", uri=True) as conn:
                    rows = conn.execute("SELECT last_ok_at FROM stores").fetchall()
                self.seen.update(r[0] for r in rows if r[0] is not None)
            except sqlite3.Error:
                pass  # the daemon is writing it: look again
        return len(self.seen)


@pytest.fixture
def state_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "state"
    monkeypatch.setenv("MLTIDY_STATE_DIR", str(folder))
    for variable in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE"):
        monkeypatch.delenv(variable, raising=False)
    return folder


def test_the_state_is_the_stores_wherever_watch_starts(
    lab: Lab, state_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    finish_a_job(lab)
    # found by discovery in the stores' folder ...
    monkeypatch.chdir(lab.root)
    first = poll()
    assert first["events"] == [] and first["known"] >= 1
    # ... in the folder above (found one level below), and named by relative paths from a
    # subfolder: the same stores, the same state, no new baseline and nothing sent
    monkeypatch.chdir(lab.root.parent)
    above = poll()
    assert above["events"] == [] and above["known"] == 0
    sub = lab.root / "sub"
    sub.mkdir()
    monkeypatch.chdir(sub)
    again = poll("--mlflow", "sqlite:///../mlflow.db", "--optuna", "sqlite:///../optuna.db")
    assert again["events"] == [] and again["known"] == 0
    assert len(list(state_dir.glob("watch-*.db"))) == 1
    # the stores moved elsewhere are other stores: a state of their own
    moved = lab.root.parent / "moved"
    moved.mkdir()
    for name in ("mlflow.db", "optuna.db"):
        shutil.copyfile(lab.root / name, moved / name)
    monkeypatch.chdir(moved)
    assert poll()["events"] == []
    assert len(list(state_dir.glob("watch-*.db"))) == 2
