"""Start demo training jobs as real processes, wait until they train, and kill them for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class JobError(RuntimeError):
    """A demo job did not start training in time, or died on its own."""


@dataclass
class Job:
    """One running ``mltidy.demo.worker`` process."""

    process: subprocess.Popen[str]
    log_path: Path
    run_id: str | None = None
    trial_number: int | None = None
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        """The job's process id."""
        return self.process.pid

    def wait_ready(self, timeout: float = 120.0) -> None:
        """Block until the job has logged its first metric.

        Raises:
            JobError: it exited or took longer than ``timeout``.
        """
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                if self.process.poll() is not None:
                    raise JobError(f"job {self.pid} exited early:\n{self._log_tail()}")
                time.sleep(0.05)
                continue
            self.lines.append(line)
            if line.startswith("ready "):
                _, run_id, number = line.split()
                self.run_id = None if run_id == "-" else run_id
                self.trial_number = int(number)
                return
        self.kill(signal.SIGKILL)
        raise JobError(f"job {self.pid} did not start training within {timeout:.0f} s")

    def kill(self, sig: int, timeout: float = 120.0) -> None:
        """Send a real signal and reap the process; SIGKILL it if it outlives ``timeout``
        (a loaded machine can take long to run a job's clean-up after Ctrl-C)."""
        if self.process.poll() is None:
            os.kill(self.process.pid, sig)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def wait(self, timeout: float = 120.0) -> int:
        """Wait for the job to end on its own."""
        return self.process.wait(timeout=timeout)

    def _log_tail(self) -> str:
        try:
            return "\n".join(self.log_path.read_text().splitlines()[-15:])
        except OSError:
            return ""


def optuna_storage(url: str, heartbeat_interval: int | None = None) -> Any:
    """An Optuna storage for a URL or a journal file path (optuna is imported here)."""
    import optuna
    from optuna.storages import JournalStorage, RDBStorage
    from optuna.storages.journal import JournalFileBackend

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if "://" not in url:
        return JournalStorage(JournalFileBackend(url))
    if heartbeat_interval:
        return RDBStorage(url, heartbeat_interval=heartbeat_interval)
    return url


def create_stores(mlflow_uri: str, optuna_url: str, name: str, artifact_dir: Path) -> None:
    """Create the MLflow experiment and the Optuna study ``name`` before jobs start.

    Jobs started in parallel would otherwise race to create tables, experiment and study.
    """
    import logging

    import mlflow
    import optuna

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    if client.get_experiment_by_name(name) is None:
        client.create_experiment(name, artifact_location=artifact_dir.resolve().as_uri())
    optuna.create_study(
        study_name=name,
        storage=optuna_storage(optuna_url),
        direction="minimize",
        load_if_exists=True,
    )


def start_job(
    *,
    mlflow_uri: str | None,
    optuna_url: str,
    study: str,
    cwd: Path,
    epochs: int = 5,
    epoch_seconds: float = 0.2,
    experiment: str | None = None,
    env: dict[str, str] | None = None,
    heartbeat: int | None = None,
    extra: list[str] | None = None,
) -> Job:
    """Start one training job in the background (it trains one Optuna trial).

    ``extra`` adds worker options (see ``python -m mltidy.demo.worker --help``).
    """
    command = [
        sys.executable,
        "-m",
        "mltidy.demo.worker",
        "--optuna",
        optuna_url,
        "--study",
        study,
        "--epochs",
        str(epochs),
        "--epoch-seconds",
        str(epoch_seconds),
    ]
    if mlflow_uri:
        command += ["--mlflow", mlflow_uri]
    if experiment:
        command += ["--experiment", experiment]
    command += extra or []
    if heartbeat:
        command += ["--heartbeat", str(heartbeat)]
    log_dir = cwd / ".jobs"
    log_dir.mkdir(exist_ok=True)
    log_path = log_dir / f"job-{time.monotonic_ns()}.log"
    child_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    child_env.pop("MLFLOW_TRACKING_URI", None)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            command,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
            env=child_env,
        )
    return Job(process, log_path)
