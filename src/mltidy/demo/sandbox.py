"""Build the demo sandbox: an MLflow sqlite store and an Optuna sqlite storage filled by real
training jobs, some of them killed with real signals."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mltidy.demo.jobs import Job, create_stores, start_job
from mltidy.errors import UsageError

if TYPE_CHECKING:
    from mltidy.supervision.process import Supervision

MARKER = ".mltidy-demo"
STUDY = "demo-tuning"


@dataclass(frozen=True)
class Sandbox:
    """Where the demo's stores live."""

    path: Path

    @property
    def mlflow_uri(self) -> str:
        """The MLflow tracking store (sqlite)."""
        return f"sqlite:///{self.path / 'mlflow.db'}"

    @property
    def optuna_url(self) -> str:
        """The Optuna storage (sqlite)."""
        return f"sqlite:///{self.path / 'optuna.db'}"


@dataclass(frozen=True)
class JobOutcome:
    """What the demo did to one job."""

    label: str
    pid: int
    run_id: str | None
    trial_number: int | None
    how: str


def prepare(path: Path) -> Sandbox:
    """Create the sandbox folder, or reset an earlier demo's; never touch anything else.

    Raises:
        UsageError: ``path`` exists and is not an earlier mltidy demo sandbox.
    """
    if path.exists():
        if not (path / MARKER).is_file():
            raise UsageError(
                f"{path} exists and is not an mltidy demo sandbox; refusing to overwrite it",
                hint="pass another folder: mltidy demo --path NEW_FOLDER",
            )
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by mltidy demo; safe to delete\n")
    sandbox = Sandbox(path.resolve())
    create_stores(sandbox.mlflow_uri, sandbox.optuna_url, STUDY, sandbox.path / "artifacts")
    return sandbox


def run_jobs(sandbox: Sandbox, say: Callable[[str], None]) -> tuple[list[JobOutcome], Job]:
    """Start five tutorial-style training jobs: kill three, let one finish, leave one training.

    Returns what happened to each, and the job still training (the caller stops it).
    """
    plans: list[tuple[str, signal.Signals | None, int, list[str]]] = [
        ("OOM-killed job", signal.SIGKILL, 600, []),
        ("preempted job", signal.SIGTERM, 600, []),
        ("job killed while loading data", signal.SIGKILL, 600, ["--empty"]),
        ("finished job", None, 3, []),
        ("live job", None, 600, []),
    ]
    jobs = [
        start_job(
            mlflow_uri=sandbox.mlflow_uri,
            optuna_url=sandbox.optuna_url,
            study=STUDY,
            cwd=sandbox.path,
            epochs=epochs,
            epoch_seconds=0.3,
            extra=extra,
        )
        for _, _, epochs, extra in plans
    ]
    say(f"started {len(jobs)} training jobs (pids {', '.join(str(j.pid) for j in jobs)})")
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda job: job.wait_ready(), jobs))
    outcomes: list[JobOutcome] = []
    for (label, sig, epochs, _), job in zip(plans, jobs, strict=True):
        if sig is not None:
            job.kill(sig)
            how = f"killed with {sig.name}"
        elif epochs < 10:
            job.wait()
            how = "finished normally"
        else:
            how = "still training"
        say(f"{label}: pid {job.pid}, run {job.run_id}, trial {job.trial_number}: {how}")
        outcomes.append(JobOutcome(label, job.pid, job.run_id, job.trial_number, how))
    return outcomes, jobs[-1]


def stop_job(job: Job) -> None:
    """Stop a job the polite way (Ctrl-C): Optuna and MLflow close their trial and run."""
    job.kill(signal.SIGINT)


def supervised_job(sandbox: Sandbox) -> Supervision:
    """``mltidy run -- python -m mltidy.demo.worker``, killed with SIGKILL once it trains.

    The job runs under the supervisor (in this process); a helper thread waits for its first
    metric and kills it from outside, as the OOM killer would.
    """
    from mltidy.supervision.process import supervise

    command = [
        sys.executable,
        "-m",
        "mltidy.demo.worker",
        "--mlflow",
        sandbox.mlflow_uri,
        "--optuna",
        sandbox.optuna_url,
        "--study",
        STUDY,
        "--epochs",
        "600",
        "--epoch-seconds",
        "0.3",
    ]

    def kill_when_ready(child: subprocess.Popen[str]) -> None:
        def wait_and_kill() -> None:
            assert child.stdout is not None
            for line in child.stdout:
                if line.startswith("ready "):
                    os.kill(child.pid, signal.SIGKILL)
                    return

        threading.Thread(target=wait_and_kill, daemon=True).start()

    logs = sandbox.path / ".jobs"
    logs.mkdir(exist_ok=True)
    with (logs / "supervised-job.log").open("w") as log:
        return supervise(
            command,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            on_start=kill_when_ready,
            stdout=subprocess.PIPE,
            stderr=log.fileno(),
        )
