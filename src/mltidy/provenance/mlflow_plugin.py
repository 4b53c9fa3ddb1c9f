"""MLflow run context provider: tags every ``mlflow.start_run`` run with its provenance.

Registered through MLflow's ``mlflow.run_context_provider`` entry point, so installing mltidy
in the training environment is enough. It adds:

* ``mltidy.host``, ``mltidy.boot_id``, ``mltidy.pid``, ``mltidy.pid_start``, ``mltidy.user``,
  ``mltidy.cmd``, ``mltidy.slurm_job_id``, ``mltidy.k8s_pod``, ``mltidy.version``;
* when ``start_run`` is called inside an Optuna objective: ``mltidy.optuna.study``,
  ``mltidy.optuna.trial_number``, ``mltidy.optuna.trial_id`` and ``mltidy.optuna.storage``,
  found by looking for an ``optuna.trial.Trial`` in the calling frames (best effort; it reads
  only attributes optuna already holds in memory and never writes to the Optuna storage).

Switches: ``MLTIDY_PROVENANCE=0`` turns the provider off, ``MLTIDY_OPTUNA_DETECT=0`` turns off
the trial detection, ``MLTIDY_HEARTBEAT=SECONDS`` starts the heartbeat. Any failure inside is
swallowed and logged at debug level: provenance must never break a user's run.
"""

from __future__ import annotations

import logging
import os
import sys
from types import FrameType
from typing import Any

from mlflow.tracking.context.abstract_context import RunContextProvider

from mltidy import names
from mltidy.backends.identity import store_id
from mltidy.model import StoreId, StoreKind
from mltidy.provenance.facts import process_facts
from mltidy.provenance.heartbeat import ensure_process_heartbeat

_log = logging.getLogger(__name__)
OFF = frozenset({"0", "false", "no", "off"})
MAX_FRAMES = 64


def _enabled(variable: str) -> bool:
    return os.environ.get(variable, "1").strip().lower() not in OFF


class MltidyRunContextProvider(RunContextProvider):
    """Adds ``mltidy.*`` provenance tags to runs created with ``mlflow.start_run``."""

    def in_context(self) -> bool:
        return _enabled("MLTIDY_PROVENANCE")

    def tags(self) -> dict[str, str]:
        try:
            tags = process_facts()
            if _enabled("MLTIDY_OPTUNA_DETECT"):
                tags.update(optuna_trial_tags(sys._getframe(1)))
            ensure_process_heartbeat()
            return tags
        except Exception:
            _log.debug("mltidy provenance failed; the run goes on without it", exc_info=True)
            return {}


def find_optuna_trial(frame: FrameType | None) -> Any | None:
    """The ``optuna.trial.Trial`` in a local variable of a calling frame, if any.

    optuna is never imported here: if the job has not imported it, there is no trial.
    """
    optuna = sys.modules.get("optuna")
    trial_type = getattr(getattr(optuna, "trial", None), "Trial", None)
    if trial_type is None:
        return None
    depth = 0
    while frame is not None and depth < MAX_FRAMES:
        for value in frame.f_locals.values():
            if isinstance(value, trial_type):
                return value
        frame = frame.f_back
        depth += 1
    return None


def optuna_trial_tags(frame: FrameType | None) -> dict[str, str]:
    """Tags naming the trial a run was started in, or ``{}``."""
    trial = find_optuna_trial(frame)
    if trial is None:
        return {}
    tags = {
        names.RUN_STUDY: str(trial.study.study_name),
        names.RUN_TRIAL_NUMBER: str(trial.number),
        names.RUN_TRIAL_ID: str(trial._trial_id),
    }
    name = storage_name(getattr(trial.study, "_storage", None))
    if name:
        tags[names.RUN_STORAGE] = name
    return tags


def storage_name(storage: Any) -> StoreId | None:
    """The identity of an Optuna storage (absolute, secret-free): from its URL, or its journal
    file's path."""
    for candidate in (storage, getattr(storage, "_backend", None)):
        url = getattr(candidate, "url", None)
        if isinstance(url, str):
            return store_id(StoreKind.OPTUNA, url)
        backend = getattr(candidate, "_backend", None)
        path = getattr(backend, "_file_path", None)
        if isinstance(path, str):
            return store_id(StoreKind.OPTUNA, path)
    return None
