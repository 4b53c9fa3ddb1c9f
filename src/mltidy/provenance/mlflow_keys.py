"""Tag keys the MLflow plugin writes to name the Optuna trial a run was started in."""

from mltidy.provenance.facts import PREFIX

STUDY = PREFIX + "optuna.study"
TRIAL_NUMBER = PREFIX + "optuna.trial_number"
TRIAL_ID = PREFIX + "optuna.trial_id"
STORAGE = PREFIX + "optuna.storage"
