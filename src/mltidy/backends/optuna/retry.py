"""Retries of failed trials through optuna's own storage API.

The WAITING copy carries Optuna's ``failed_trial`` and ``retry_history`` system attributes, the
way ``optuna.storages.RetryHeartbeatStaleTrialCallback`` writes them, so Optuna's helpers
(``RetryHeartbeatStaleTrialCallback.retried_trial_number``/``retry_history``) recognise it.
Two deliberate differences from the callback: the copy does not inherit mltidy's ``mltidy.*``
system attributes nor the ``mlflow_run_id``/``mlflow_run_url`` links of the dead trial, which
belong to the dead process and its run, not to the retry.
"""

from __future__ import annotations

from typing import Any

from mltidy import names

DROPPED_USER_ATTRS = frozenset({names.MLFLOW_RUN_ID, names.MLFLOW_RUN_URL})


def enqueue_retry(storage: Any, study_id: int, trial_id: int, max_retry: int | None) -> int | None:
    """Add a WAITING copy of a finished trial to its study; ``None`` past ``max_retry``."""
    from optuna.trial import TrialState, create_trial

    trial = storage.get_trial(trial_id)
    system_attrs: dict[str, Any] = {
        names.FAILED_TRIAL: trial.number,
        names.RETRY_HISTORY: [],
        **{k: v for k, v in trial.system_attrs.items() if not k.startswith(names.PREFIX)},
    }
    system_attrs[names.RETRY_HISTORY] = [*system_attrs[names.RETRY_HISTORY], trial.number]
    if max_retry is not None and max_retry < len(system_attrs[names.RETRY_HISTORY]):
        return None
    template = create_trial(
        state=TrialState.WAITING,
        params=trial.params,
        distributions=trial.distributions,
        user_attrs={k: v for k, v in trial.user_attrs.items() if k not in DROPPED_USER_ATTRS},
        system_attrs=system_attrs,
    )
    new_id = storage.create_new_trial(study_id, template_trial=template)
    return int(storage.get_trial(new_id).number)
