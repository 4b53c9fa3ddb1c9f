"""Provenance for Optuna trials, opt-in with one line (Optuna has no plugin hook).

With ``study.optimize``::

    @mltidy.provenance.track            # or @track(heartbeat=60, link=True)
    def objective(trial): ...

With ask/tell::

    trial = study.ask()
    mltidy.provenance.record(trial)

Both write the same ``mltidy.*`` facts as the MLflow plugin into the trial's system attributes.
``track(link=True)`` also links each trial and the MLflow run it started, both ways, while the
study runs (see :mod:`mltidy.linking.live`).
Failures never reach the objective; they are logged at debug level.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, TypeVar, overload

from mltidy.provenance.facts import process_facts
from mltidy.provenance.heartbeat import start_heartbeat

_log = logging.getLogger(__name__)
R = TypeVar("R")


def record(trial: Any) -> None:
    """Record this process's provenance on a running Optuna trial (system attributes)."""
    try:
        storage, trial_id = trial.storage, trial._trial_id
        for key, value in process_facts().items():
            storage.set_trial_system_attr(trial_id, key, value)
    except Exception:
        _log.debug("mltidy could not record provenance on the trial", exc_info=True)


@overload
def track(
    objective: Callable[[Any], R],
    *,
    heartbeat: float | None = None,
    link: bool = False,
    mlflow_ui: str | None = None,
    dashboard_url: str | None = None,
) -> Callable[[Any], R]: ...


@overload
def track(
    objective: None = None,
    *,
    heartbeat: float | None = None,
    link: bool = False,
    mlflow_ui: str | None = None,
    dashboard_url: str | None = None,
) -> Callable[[Callable[[Any], R]], Callable[[Any], R]]: ...


def track(
    objective: Callable[[Any], R] | None = None,
    *,
    heartbeat: float | None = None,
    link: bool = False,
    mlflow_ui: str | None = None,
    dashboard_url: str | None = None,
) -> Callable[[Any], R] | Callable[[Callable[[Any], R]], Callable[[Any], R]]:
    """Decorate an objective so each trial records its provenance; with ``heartbeat`` it also
    beats, with ``link`` it links the trial and its MLflow run both ways when the objective
    returns (bases from the arguments or ``MLTIDY_MLFLOW_UI`` / ``MLTIDY_DASHBOARD_URL``)."""

    def decorate(func: Callable[[Any], R]) -> Callable[[Any], R]:
        @functools.wraps(func)
        def wrapper(trial: Any) -> R:
            record(trial)
            beat = start_heartbeat(heartbeat, trial=trial) if heartbeat else None
            try:
                return func(trial)
            finally:
                if beat is not None:
                    beat.stop()
                if link:
                    from mltidy.linking.live import bases_from_env, link_live

                    link_live(trial, bases_from_env(mlflow_ui, dashboard_url))

        return wrapper

    return decorate(objective) if objective is not None else decorate
