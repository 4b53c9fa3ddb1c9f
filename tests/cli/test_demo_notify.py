"""``mltidy demo --notify URL`` shows the messages it would send, and sends them."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from mltidy.cli.app import app
from receivers import HttpReceiver

SECRET = "demo-t0ken-4242"


@pytest.mark.slow
def test_demo_sends_the_supervised_job_and_the_watch_messages(
    tmp_path: Path, http_receiver: HttpReceiver
) -> None:
    url = http_receiver.url(path=f"/hook/{SECRET}")
    result = CliRunner().invoke(
        app, ["demo", "--path", str(tmp_path / "box"), "--notify", url], env={"COLUMNS": "120"}
    )
    assert result.exit_code == 0, result.output
    job, watch = http_receiver.wait_for(2)
    assert job.body["title"].startswith(
        "mltidy: job python -m mltidy.demo.worker was killed by SIGKILL"
    )
    assert "  closed: run trial-" in job.body["message"]
    assert watch.body["title"].startswith("mltidy: ")
    assert "runs killed" in watch.body["title"] and "1 study finished" in watch.body["title"]
    assert "study demo-tuning finished: 6 trials, best value " in watch.body["message"]
    assert result.stdout.count("message for json://***:") == 2
    assert result.stdout.count("json://***: sent") == 2
    assert SECRET not in result.output
