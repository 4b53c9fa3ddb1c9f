"""The Markdown ``mltidy link`` writes, rendered by the real UIs: no injected element or link.

A real job trains a trial whose study and run names carry HTML, Markdown links and images,
autolinks, Rich markup, terminal controls and mltidy's own note markers; it is killed, and
``mltidy link`` (the installed entry point) writes the trial's optuna-dashboard note and the
run's MLflow description. Then headless Chromium (Debian's package) renders

* the trial page of a real optuna-dashboard, and
* the run page of the real MLflow UI (``mlflow server`` serves it),

and the rendered DOM must hold the names as text, the one link mltidy built, and nothing the
names tried to inject: no ``<img>`` or ``<script>`` of theirs, no ``onerror`` attribute, no link
to ``javascript:`` or to the attacker's host.
"""

from __future__ import annotations

import json
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

from hostile.inputs import MARKDOWN, MARKERS, OSC52, RICH, RUN_NAME
from linking.test_link_browser import CHROMIUM_FLAGS, _chromium
from mltidy.demo.jobs import create_stores, start_job
from servers import MlflowServer, free_port

EXE = Path(sys.executable).parent / "mltidy"
STUDY = f"study {MARKDOWN} {RICH} {OSC52} {MARKERS}"
ATTACKER = "evil.example"


class _Dom(HTMLParser):
    """Every element with its attributes, and the text."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def _render(page: str, profile: Path) -> _Dom:
    chromium = _chromium()
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--dump-dom", page],
        capture_output=True,
        text=True,
        timeout=180,
        check=True,
    ).stdout
    parsed = _Dom()
    parsed.feed(dom)
    return parsed


def _assert_nothing_injected(dom: _Dom, built: str) -> None:
    hrefs = [a.get("href", "") for tag, a in dom.elements if tag == "a"]
    assert built in hrefs, hrefs
    assert not [h for h in hrefs if h.lower().startswith("javascript:") or ATTACKER in h]
    assert not [a for _, a in dom.elements if any(k.startswith("on") for k in a)]
    sources = [a.get("src", "") for tag, a in dom.elements if tag in ("img", "script", "iframe")]
    assert not [s for s in sources if ATTACKER in s or s == "x"], sources
    text = "".join(dom.text)
    assert "<img src=x onerror=alert(1)>" in text  # shown as text, not made an element
    markers = {"[//]: # (mltidy:link)", "[//]: # (/mltidy:link)"}
    assert not [t for t in dom.text if t.strip() in markers]  # mltidy's own render as nothing


def _link(mlflow: str, optuna_url: str, cwd: Path, *extra: str) -> dict[str, object]:
    done = subprocess.run(
        [str(EXE), "link", "-f", "json", "--mlflow", mlflow, "--optuna", optuna_url, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _killed_job(mlflow: str, optuna_url: str, cwd: Path) -> str:
    job = start_job(
        mlflow_uri=mlflow,
        optuna_url=optuna_url,
        study=STUDY,
        cwd=cwd,
        epochs=1000,
        extra=["--run-name", RUN_NAME],
    )
    job.wait_ready()
    job.kill(signal.SIGKILL)
    assert job.run_id
    return job.run_id


@pytest.fixture
def dashboard(tmp_path: Path) -> Iterator[tuple[str, str, str]]:
    """A linked storage with hostile names, and optuna-dashboard serving it: (trial page, the
    run URL mltidy wrote, the storage URL)."""
    mlflow = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_stores(mlflow, storage, STUDY, tmp_path / "artifacts")
    _killed_job(mlflow, storage, tmp_path)
    (pair,) = _link(mlflow, storage, tmp_path)["pairs"]  # type: ignore[misc]
    again = _link(mlflow, storage, tmp_path)
    assert [p["status"] for p in again["pairs"]] == ["unchanged"]  # type: ignore[attr-defined]
    port = free_port()
    exe = Path(sys.executable).parent / "optuna-dashboard"
    with (tmp_path / "dashboard.log").open("w") as log:
        server = subprocess.Popen(
            [str(exe), storage, "--host", "127.0.0.1", "--port", str(port)],
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
        study_id = optuna.load_study(study_name=STUDY, storage=storage)._study_id
        yield (
            f"{base}/dashboard/studies/{study_id}/trials?numbers=0",
            pair["mlflow_run_url"],
            storage,
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_the_dashboard_note_injects_nothing(
    dashboard: tuple[str, str, str], tmp_path: Path
) -> None:
    page, run_url, _ = dashboard
    dom = _render(page, tmp_path / "profile")
    _assert_nothing_injected(dom, run_url)
    assert "[/oops]" in "".join(dom.text)  # Rich markup is text too


def test_the_mlflow_description_injects_nothing(
    mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_stores(mlflow_server.url, storage, STUDY, tmp_path / "artifacts")
    run_id = _killed_job(mlflow_server.url, storage, tmp_path)
    linked = _link(mlflow_server.url, storage, tmp_path)
    (pair,) = [p for p in linked["pairs"] if p["run_id"] == run_id]  # type: ignore[attr-defined]
    again = _link(mlflow_server.url, storage, tmp_path)
    mine = [p for p in again["pairs"] if p["run_id"] == run_id]  # type: ignore[attr-defined]
    assert [p["status"] for p in mine] == ["unchanged"]
    dom = _render(pair["mlflow_run_url"], tmp_path / "profile")
    _assert_nothing_injected(dom, pair["dashboard_url"])
