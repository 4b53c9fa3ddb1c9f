"""Provenance: what a run or trial records about the process behind it, when it starts.

* MLflow: nothing to do. Installing mltidy registers a run context provider
  (:mod:`mltidy.provenance.mlflow_plugin`) that tags every ``mlflow.start_run`` run.
* Optuna: one line, :func:`track` on the objective or :func:`record` on a trial
  (:mod:`mltidy.provenance.optuna`).
* Heartbeat: opt-in, ``MLTIDY_HEARTBEAT=SECONDS`` or :func:`start_heartbeat`.

This package imports neither mlflow nor optuna at import time.
"""

from mltidy.names import PREFIX
from mltidy.provenance.facts import process_facts
from mltidy.provenance.heartbeat import start_heartbeat
from mltidy.provenance.optuna import record, track

__all__ = ["PREFIX", "process_facts", "record", "start_heartbeat", "track"]
