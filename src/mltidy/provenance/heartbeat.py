"""An opt-in heartbeat: a daemon thread that stamps the running run or trial every N seconds.

Cross-host liveness: a process on another machine cannot be looked up, but a fresh
``mltidy.heartbeat_at`` (ISO 8601, UTC) proves it alive, and a silent one says when it stopped.

* MLflow, no code change: ``MLTIDY_HEARTBEAT=60`` in the job's environment (with mltidy
  installed). The thread stamps every run on the job's MLflow run stack (``mlflow.start_run``).
* Optuna: ``@mltidy.provenance.track(heartbeat=60)``, or :func:`start_heartbeat` with a trial.

Each beat is one tag or system-attribute write. Failures are logged at debug level and never
reach the job.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from mltidy import names

ENV = "MLTIDY_HEARTBEAT"
MIN_INTERVAL = 1.0
_log = logging.getLogger(__name__)


def now_iso() -> str:
    """The heartbeat's timestamp format."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


class Heartbeat:
    """A running heartbeat thread. :meth:`stop` ends it; it also ends when its target does."""

    def __init__(self, beat: Callable[[], bool], interval: float, name: str) -> None:
        self.interval = max(MIN_INTERVAL, interval)
        self._beat = beat
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                if not self._beat():
                    return
            except Exception:  # never let the heartbeat hurt the job
                _log.debug("mltidy heartbeat failed", exc_info=True)
            self._stopped.wait(self.interval)

    def stop(self) -> None:
        """Stop beating (returns at once; the thread ends at its next wake-up)."""
        self._stopped.set()


def start_heartbeat(
    interval: float = 60.0, *, trial: Any | None = None, run_id: str | None = None
) -> Heartbeat:
    """Start beating for an Optuna ``trial``, an MLflow ``run_id``, or the job's active runs.

    With neither argument, every run on this process's MLflow run stack is stamped (what
    ``MLTIDY_HEARTBEAT`` does).
    """
    interval = max(MIN_INTERVAL, interval)
    if trial is not None:
        return Heartbeat(_trial_beat(trial, interval), interval, "mltidy-heartbeat-trial")
    return Heartbeat(_mlflow_beat(run_id, interval), interval, "mltidy-heartbeat-mlflow")


def _trial_beat(trial: Any, interval: float) -> Callable[[], bool]:
    storage, trial_id = trial.storage, trial._trial_id
    told: list[bool] = []

    def beat() -> bool:
        try:
            if not told:
                # The judge reads the interval: a record whose beats stop is stale after a
                # few of them, whatever --stale-after says.
                storage.set_trial_system_attr(trial_id, names.HEARTBEAT_INTERVAL, str(interval))
                told.append(True)
            storage.set_trial_system_attr(trial_id, names.HEARTBEAT_AT, now_iso())
        except RuntimeError:  # optuna refuses to update a finished trial: the trial is over
            return False
        return True

    return beat


def _active_run_ids() -> set[str]:
    """Run ids on every thread's MLflow fluent run stack."""
    from mlflow.tracking import fluent

    stack = fluent._active_run_stack
    ids: set[str] = set()
    for runs in stack.get_all_thread_values().values():
        ids.update(run.info.run_id for run in runs)
    return ids


def _mlflow_beat(run_id: str | None, interval: float) -> Callable[[], bool]:
    from mlflow.entities import RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient()

    def beat() -> bool:
        ids = {run_id} if run_id else _active_run_ids()
        tags = [
            RunTag(names.HEARTBEAT_AT, now_iso()),
            RunTag(names.HEARTBEAT_INTERVAL, str(interval)),
        ]
        for each in ids:
            client.log_batch(each, tags=tags)
        return True

    return beat


_process_heartbeat: tuple[int, Heartbeat] | None = None
_lock = threading.Lock()


def ensure_process_heartbeat() -> Heartbeat | None:
    """Start the job-wide MLflow heartbeat once per process when ``MLTIDY_HEARTBEAT`` is set."""
    global _process_heartbeat
    text = os.environ.get(ENV, "").strip()
    if not text:
        return None
    with _lock:
        if _process_heartbeat is not None and _process_heartbeat[0] == os.getpid():
            return _process_heartbeat[1]
        try:
            interval = float(text)
        except ValueError:
            _log.debug("%s=%r is not a number of seconds", ENV, text)
            return None
        beat = start_heartbeat(interval)
        _process_heartbeat = (os.getpid(), beat)
        return beat
