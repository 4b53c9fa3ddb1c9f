"""``mltidy watch`` on real stores written by real jobs killed with real signals, notifying a
real HTTP receiver: each event arrives once, across polls and restarts; a receiver that was
down gets the event exactly once when it is back."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
from typer.testing import CliRunner

from labs import Lab, ready
from mltidy.cli.app import app
from mltidy.demo.jobs import optuna_storage
from receivers import HttpReceiver, SmtpReceiver

SECRET = "s3cr3t-hook-7c1d"
MLTIDY = str(Path(sys.executable).with_name("mltidy"))


def watch_args(lab: Lab, *extra: str) -> list[str]:
    """``watch --once`` over a lab's stores with its own state, JSON out."""
    return [
        "watch",
        "--once",
        "--mlflow",
        lab.mlflow,
        "--optuna",
        lab.optuna,
        "--state",
        str(lab.state),
        "-f",
        "json",
        *extra,
    ]


def invoke(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, list(args))
    try:
        payload = json.loads(result.stdout)
    except ValueError:
        payload = {"stdout": result.stdout}
    return result.exit_code, payload, result.stderr


def kinds(payload: dict[str, Any]) -> list[str]:
    return sorted(e["kind"] for e in payload["events"])


def test_each_event_is_reported_once_as_it_happens(
    lab: Lab, http_receiver: HttpReceiver, smtp_receiver: SmtpReceiver
) -> None:
    watch = watch_args(
        lab, "--notify", http_receiver.url(), "--notify", smtp_receiver.url(), "--idle-after", "1s"
    )

    # The first poll only establishes where things stand.
    code, first, err = invoke(*watch)
    assert code == 0, err
    assert first["events"] == [] and first["deliveries"] == []

    finisher, killed, live = lab.start(2), lab.start(3000), lab.start(3000, "--quiet")
    try:
        ready(finisher, killed, live)
        killed.kill(signal.SIGKILL)
        assert finisher.wait() == 0

        code, second, err = invoke(*watch)
        assert code == 0, err
        assert kinds(second) == ["dead", "dead", "run-finished"]
        (message,) = http_receiver.wait_for(1)
        assert message.body["title"] == "mltidy: 1 run dead, 1 trial dead, 1 run finished"
        text = message.body["message"]
        assert f"run trial-{finisher.trial_number} ({str(finisher.run_id)[:8]})" in text
        assert f"is dead: process {killed.pid} (" in text
        assert f"  Optuna trial: tuning #{killed.trial_number}" in text
        assert text.count("is dead") == 1  # the trial is folded into its run
        (mail,) = smtp_receiver.wait_for(1)  # the same message, by e-mail
        assert mail["Subject"] == message.body["title"]
        body = mail.get_body(preferencelist=("plain",))
        assert body is not None
        assert f"is dead: process {killed.pid} (" in body.get_content()

        code, third, _ = invoke(*watch)
        assert (code, third["events"], len(http_receiver.requests)) == (0, [], 1)

        os.kill(live.pid, signal.SIGINT)  # Optuna and MLflow end its trial and run themselves
        live.process.wait(timeout=120)
        time.sleep(1.2)
        code, fourth, err = invoke(*watch)
        assert code == 0, err
        assert kinds(fourth) == ["experiment-idle", "run-failed", "study-stopped"]
        stopped = next(e for e in fourth["events"] if e["kind"] == "study-stopped")
        assert stopped["headline"] == (
            "study tuning stopped: its 1 running trial is dead, so no worker is left"
        )
        assert stopped["facts"]["trials"] == "1 complete, 0 pruned, 1 failed, 0 waiting"
        assert len(http_receiver.wait_for(2)) == 2

        # --close closes the dead run and trial: no new dead event, no "run killed" echo of it,
        # and with nothing RUNNING left, the study has finished.
        code, fifth, err = invoke(*watch, "--close")
        assert code == 0, err
        assert {c["id"] for c in fifth["closed"]} >= {str(killed.run_id)}
        assert {c["status"] for c in fifth["closed"]} == {"closed"}
        code, sixth, err = invoke(*watch)
        assert code == 0, err
        assert kinds(sixth) == ["study-finished"]
        (finished,) = sixth["events"]
        assert finished["facts"]["trials"] == "1 complete, 0 pruned, 2 failed"
        assert finished["facts"]["why"].startswith("no trial started or ended since ")
        assert finished["headline"].startswith("study tuning finished: 3 trials, best value ")
        assert finished["links"]["best trial"].endswith(f"numbers={finisher.trial_number}")
        code, last, _ = invoke(*watch)
        assert (code, last["events"]) == (0, [])
        assert len(http_receiver.wait_for(3)) == 3
        assert len(smtp_receiver.wait_for(3)) == 3
    finally:
        for job in (finisher, killed, live):
            job.kill(signal.SIGKILL)


def test_a_receiver_that_was_down_gets_the_event_exactly_once(lab: Lab) -> None:
    receiver = HttpReceiver().start()
    url = receiver.url(path=f"/hooks/{SECRET}")
    receiver.stop()
    job = lab.start(3000)
    try:
        job.wait_ready()
        job.kill(signal.SIGKILL)
        watch = watch_args(lab, "--notify", url)

        code, down, err = invoke(*watch)
        assert code == 4, err
        assert kinds(down) == ["dead", "dead", "study-stopped"]
        assert down["deliveries"][0]["ok"] is False
        assert "mltidy: error: could not notify json://***: " in err
        assert "retried on the next poll" in err

        receiver.start()  # back, on the same port
        try:
            code, up, err = invoke(*watch)
            assert code == 0, err
            assert up["events"] == []  # nothing new happened ...
            assert up["deliveries"] == [
                {"target": "json://***", "ok": True, "events": 3, "error": None}
            ]
            (message,) = receiver.wait_for(1)  # ... but the queued event went out
            assert f"is dead: process {job.pid} (" in message.body["message"]

            # A restart through the installed entry point sends nothing again.
            done = subprocess.run(
                [MLTIDY, *watch], capture_output=True, text=True, timeout=120, check=False
            )
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["deliveries"] == []
            time.sleep(0.3)
            assert len(receiver.requests) == 1
        finally:
            receiver.stop()
        for output in (json.dumps(down), json.dumps(up), err, done.stdout, done.stderr):
            assert SECRET not in output
        assert SECRET.encode() not in lab.state.read_bytes()
    finally:
        job.kill(signal.SIGKILL)


def _study(url: str, name: str, trials: int, budget: int | None = None) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=optuna_storage(url), load_if_exists=True)
    if budget is not None:
        study.set_user_attr("mltidy.budget", budget)
    study.optimize(lambda t: (t.suggest_float("x", -1, 1) - 0.5) ** 2, n_trials=trials)


def test_first_poll_baseline_since_and_budget(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _study(url, "done-before", 2)
    time.sleep(1.1)
    base = ["watch", "--once", "--optuna", url, "-f", "json"]

    # Finished before the first poll: recorded as known, not reported ...
    code, first, _ = invoke(*base, "--state", str(tmp_path / "a.db"), "--idle-after", "1s")
    assert (code, first["events"], first["known"]) == (0, [], 1)
    # ... unless --since reaches back to it.
    code, since, _ = invoke(
        *base, "--state", str(tmp_path / "b.db"), "--idle-after", "1s", "--since", "1h"
    )
    assert kinds(since) == ["study-finished"]
    assert "no trial started or ended since" in since["events"][0]["facts"]["why"]

    # A trial budget finishes a study at once, without waiting for --idle-after.
    _study(url, "budgeted", 2, budget=3)
    code, before, _ = invoke(*base, "--state", str(tmp_path / "c.db"), "-s", "budgeted")
    assert (code, before["events"]) == (0, [])
    _study(url, "budgeted", 1)
    code, after, _ = invoke(*base, "--state", str(tmp_path / "c.db"), "-s", "budgeted")
    (event,) = after["events"]
    assert event["kind"] == "study-finished"
    assert event["facts"]["why"] == "its trial budget (mltidy.budget) of 3 is reached"
    assert event["headline"].startswith("study budgeted finished: 3 trials, best value ")
    # --budget applies to studies without their own.
    state = str(tmp_path / "d.db")
    code, flag, _ = invoke(*base, "--state", state, "--budget", "2", "--since", "1h")
    assert [e["facts"]["why"] for e in flag["events"]] == [
        "its trial budget (mltidy.budget) of 3 is reached",  # study "budgeted"
        "its trial budget (--budget) of 2 is reached",  # study "done-before"
    ]


def test_a_failing_store_is_reported_once_after_two_polls(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    missing = f"sqlite:///{tmp_path / 'gone.db'}"
    watch = [
        "watch",
        "--once",
        "--optuna",
        missing,
        "--state",
        str(tmp_path / "s.db"),
        "--notify",
        http_receiver.url(),
        "-f",
        "json",
    ]
    code, first, err = invoke(*watch)
    assert (code, first["events"]) == (3, [])
    assert err.startswith("mltidy: error: cannot read optuna store: ")
    code, second, _ = invoke(*watch)
    assert code == 3
    assert kinds(second) == ["store-failing"]
    assert "does not exist" in second["events"][0]["headline"]
    code, third, _ = invoke(*watch)
    assert (code, third["events"], len(http_receiver.wait_for(1))) == (3, [], 1)
    assert not (tmp_path / "gone.db").exists()


def test_the_daemon_polls_until_sigterm(tmp_path: Path, http_receiver: HttpReceiver) -> None:
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    _study(url, "quick", 1)
    env = {**os.environ, "MLTIDY_NOTIFY": http_receiver.url()}
    daemon = subprocess.Popen(
        [
            MLTIDY,
            "watch",
            "--optuna",
            url,
            "--interval",
            "1s",
            "--idle-after",
            "1s",
            "--since",
            "1h",
            "--state",
            str(tmp_path / "s.db"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        (message,) = http_receiver.wait_for(1, timeout=60)
        assert message.body["title"].startswith("mltidy: study quick finished: 1 trial")
        time.sleep(1.5)  # another poll or two: nothing new is sent
        daemon.send_signal(signal.SIGTERM)
        out, err = daemon.communicate(timeout=30)
    finally:
        daemon.kill()
    assert daemon.returncode == 0, err
    assert "study-finished   study quick finished" in out
    assert "mltidy: SIGTERM: stopping after this poll" in err
    assert "notifying json://***" in err
    assert len(http_receiver.requests) == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "soon"], "'soon' is not a duration"),
        (["--notify", f"nope://{SECRET}"], "notification URL nope://*** (--notify) is not one"),
        (["--mlflow", "foo://x"], "mltidy cannot read MLflow stores with the foo:// scheme"),
        (["--state", "/proc/mltidy/watch.db"], "cannot use /proc/mltidy/watch.db as the watch"),
        (["--skip", "everything"], "Invalid value for '--skip'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, args: list[str], message: str) -> None:
    url = f"sqlite:///{tmp_path / 'o.db'}"
    base = ["watch", "--once", "--optuna", url, "--state", str(tmp_path / "s.db")]
    result = CliRunner().invoke(app, [*base, *args])
    assert result.exit_code == 2, result.output
    assert message in result.stderr
    assert "Traceback" not in result.output and SECRET not in result.output


def test_no_stores_is_a_usage_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("OPTUNA_STORAGE", raising=False)
    result = CliRunner().invoke(app, ["watch", "--once"])
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "mltidy: error: no stores to watch"
