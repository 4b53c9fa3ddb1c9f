"""In a real browser: optuna-dashboard renders mltidy's note as a link to the MLflow run.

Starts a real optuna-dashboard on 127.0.0.1 over a linked storage and loads the trial page in
headless Chromium (Debian's package). Skipped with a reason when Chromium is missing, except
under ``MLTIDY_REQUIRE_SERVERS=1`` (CI), where that is a failure.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import optuna
import pytest
from typer.testing import CliRunner

from mltidy.cli.app import app
from mltidy.demo.jobs import create_stores, start_job
from servers import free_port, servers_required

DOCS = Path(__file__).resolve().parents[2] / "docs"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1280,760",
    "--virtual-time-budget=20000",
]


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        if servers_required():
            pytest.fail("chromium is not installed (MLTIDY_REQUIRE_SERVERS=1)", pytrace=False)
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return found


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """A linked storage, and optuna-dashboard serving it on 127.0.0.1."""
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    optuna_url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_stores(mlflow_uri, optuna_url, "browser", tmp_path / "artifacts")
    job = start_job(
        mlflow_uri=mlflow_uri, optuna_url=optuna_url, study="browser", cwd=tmp_path, epochs=2
    )
    job.wait_ready()
    job.wait()
    result = CliRunner().invoke(
        app, ["link", "-f", "json", "--mlflow", mlflow_uri, "--optuna", optuna_url]
    )
    assert result.exit_code == 0, result.stderr
    (pair,) = json.loads(result.stdout)["pairs"]
    with _serve_dashboard(optuna_url, tmp_path) as base:
        study_id = optuna.load_study(study_name="browser", storage=optuna_url)._study_id
        page = f"{base}/dashboard/studies/{study_id}/trials?numbers=0"
        assert pair["dashboard_url"].endswith(f"/dashboard/studies/{study_id}/trials?numbers=0")
        yield page, pair["mlflow_run_url"]


@contextlib.contextmanager
def _serve_dashboard(optuna_url: str, tmp_path: Path) -> Iterator[str]:
    """optuna-dashboard serving ``optuna_url`` on 127.0.0.1; yields its base URL."""
    port = free_port()
    exe = Path(sys.executable).parent / "optuna-dashboard"
    log = (tmp_path / "dashboard.log").open("w")
    server = subprocess.Popen(
        [str(exe), optuna_url, "--host", "127.0.0.1", "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{base}/dashboard", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    raise
                time.sleep(0.3)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.hrefs += [v for k, v in attrs if k == "href" and v]


def test_the_dashboard_note_links_to_the_mlflow_run(
    dashboard: tuple[str, str], tmp_path: Path
) -> None:
    chromium = _chromium()
    page, run_url = dashboard
    profile = ["--user-data-dir=" + str(tmp_path / "profile")]
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, *profile, "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    parser = _Links()
    parser.feed(dom)
    assert run_url in parser.hrefs
    assert "mltidy:link" not in dom  # the section markers render as nothing
    shot = tmp_path / "dashboard-note.png"
    subprocess.run(
        [chromium, *CHROMIUM_FLAGS, *profile, f"--screenshot={shot}", page],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000
    target = DOCS / "img" / "dashboard-note.png"
    if not target.exists():  # the screenshot kept in docs/ (refresh by deleting it)
        target.parent.mkdir(exist_ok=True)
        shutil.copy(shot, target)


def test_a_closed_trial_says_why_in_the_dashboard_and_its_run_in_mlflow(tmp_path: Path) -> None:
    """A job SIGKILLed mid-training, closed by ``mltidy close --yes``: optuna-dashboard shows
    the reason in the trial's note, the MLflow run carries it in its description (whole) and
    in ``mltidy.closed_reason``."""
    import mlflow

    chromium = _chromium()
    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    optuna_url = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_stores(mlflow_uri, optuna_url, "closed", tmp_path / "artifacts")
    job = start_job(
        mlflow_uri=mlflow_uri, optuna_url=optuna_url, study="closed", cwd=tmp_path, epochs=1000
    )
    job.wait_ready()
    job.kill(signal.SIGKILL)
    result = CliRunner().invoke(
        app, ["close", "--mlflow", mlflow_uri, "--optuna", optuna_url, "--yes", "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    changes = json.loads(result.stdout)["changes"]
    assert {c["kind"] for c in changes} == {"mlflow_run", "optuna_trial"}
    assert all(c["status"] == "closed" and not c["detail"] for c in changes), changes
    gone = f"process {job.pid}"
    run = mlflow.MlflowClient(tracking_uri=mlflow_uri).get_run(str(job.run_id))
    description = run.data.tags["mlflow.note.content"]
    assert description.startswith("[//]: # (mltidy:close)")
    assert "**Closed by mltidy** as KILLED" in description and gone in description
    assert gone in run.data.tags["mltidy.closed_reason"]
    study_id = optuna.load_study(study_name="closed", storage=optuna_url)._study_id
    with _serve_dashboard(optuna_url, tmp_path) as base:
        page = f"{base}/dashboard/studies/{study_id}/trials?numbers={job.trial_number}"
        profile = ["--user-data-dir=" + str(tmp_path / "profile")]
        dom = subprocess.run(
            [chromium, *CHROMIUM_FLAGS, *profile, "--dump-dom", page],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
        shot = tmp_path / "dashboard-closed.png"
        subprocess.run(
            [chromium, *CHROMIUM_FLAGS, *profile, f"--screenshot={shot}", page],
            capture_output=True,
            timeout=120,
            check=True,
        )
    text = " ".join(dom.split())
    assert "Closed by mltidy" in text and "as FAIL" in text
    assert f"{gone} (python" in text and "no longer exists" in text
    assert "mltidy:close" not in text  # the section markers render as nothing
    target = DOCS / "img" / "dashboard-closed-note.png"
    if not target.exists():  # the screenshot kept in docs/ (refresh by deleting it)
        shutil.copy(shot, target)
