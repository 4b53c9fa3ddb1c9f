"""Every tag, attribute and environment name mltidy reads or writes, in one place.

MLflow runs carry these as tags, Optuna trials as system (or user) attributes. A name that other
tools write (MLflow's own tags, optuna-integration's, Optuna's retry callback's) is listed here
too, with where it comes from, so that no module spells one twice.
"""

from __future__ import annotations

#: Every name mltidy owns starts with this.
PREFIX = "mltidy."

# -- provenance: written when a run or trial starts (provenance/facts.py) ---------------------
HOST = PREFIX + "host"
BOOT_ID = PREFIX + "boot_id"
PID = PREFIX + "pid"
PID_START = PREFIX + "pid_start"
#: The pid namespace of the job (``/proc/self/ns/pid`` inode): a pid means nothing elsewhere.
PID_NS = PREFIX + "pid_ns"
#: The job's container or cgroup identity, where it has one.
CGROUP = PREFIX + "cgroup"
USER = PREFIX + "user"
CMD = PREFIX + "cmd"
SLURM_JOB_ID = PREFIX + "slurm_job_id"
SLURM_STEP_ID = PREFIX + "slurm_step_id"
SLURM_ARRAY_JOB_ID = PREFIX + "slurm_array_job_id"
SLURM_ARRAY_TASK_ID = PREFIX + "slurm_array_task_id"
SLURM_CLUSTER = PREFIX + "slurm_cluster"
#: ``SLURM_RESTART_COUNT`` when the job started (``0`` before any requeue): names the
#: incarnation of a requeued job the record belongs to (evidence/slurm.py).
SLURM_RESTART_COUNT = PREFIX + "slurm_restart_count"
K8S_POD = PREFIX + "k8s_pod"
VERSION = PREFIX + "version"
#: mltidy's opt-in heartbeat (provenance/heartbeat.py): the newest beat and its interval.
HEARTBEAT_AT = PREFIX + "heartbeat_at"
HEARTBEAT_INTERVAL = PREFIX + "heartbeat_interval"
#: The ``mltidy run`` supervision the job runs under (its ``MLTIDY_SUPERVISION`` id).
SUPERVISION = PREFIX + "supervision"

# -- the Optuna trial an MLflow run was started in (the MLflow plugin's tags) -----------------
RUN_STUDY = PREFIX + "optuna.study"
RUN_TRIAL_NUMBER = PREFIX + "optuna.trial_number"
RUN_TRIAL_ID = PREFIX + "optuna.trial_id"
RUN_STORAGE = PREFIX + "optuna.storage"
RUN_TRIAL_PREFIX = PREFIX + "optuna."

# -- the audit trail of a change (close, declutter) ------------------------------------------
CLOSED_AT = PREFIX + "closed_at"
CLOSED_REASON = PREFIX + "closed_reason"
CLOSED_BY = PREFIX + "closed_by"
CLOSED_FORCED = PREFIX + "closed_forced"
PREVIOUS_STATE = PREFIX + "previous_state"
END_TIME_SOURCE = PREFIX + "end_time_source"
#: The true end of a trial whose storage sets ``datetime_complete`` to the time of writing.
END_TIME = PREFIX + "end_time"
DELETED_AT = PREFIX + "deleted_at"

# -- study settings read by watch --------------------------------------------------------------
BUDGET = PREFIX + "budget"

# -- links between trials and runs ------------------------------------------------------------
#: Trial attribute naming the trial's MLflow run (user attribute in the tutorials, system
#: attribute from optuna-integration's ``track_in_mlflow``).
MLFLOW_RUN_ID = "mlflow_run_id"
#: Trial user attribute mltidy writes: the run's page in the MLflow UI.
MLFLOW_RUN_URL = "mlflow_run_url"
#: Run tags mltidy writes when it links a run to its trial.
LINK_STUDY = "optuna.study_name"
LINK_TRIAL_NUMBER = "optuna.trial_number"
LINK_STORAGE = "optuna.storage"
LINK_DASHBOARD = "optuna.dashboard_url"
#: Run tags optuna-integration's ``MLflowCallback`` writes (experiment named after the study).
CALLBACK_NUMBER = "number"
CALLBACK_DATETIME_START = "datetime_start"

# -- MLflow's own tags ------------------------------------------------------------------------
MLFLOW_USER = "mlflow.user"
MLFLOW_RUN_NAME = "mlflow.runName"
MLFLOW_PARENT_RUN_ID = "mlflow.parentRunId"
#: A run's description in the MLflow UI (Markdown).
MLFLOW_NOTE = "mlflow.note.content"

# -- Optuna's own attributes ------------------------------------------------------------------
#: ``RetryHeartbeatStaleTrialCallback``'s system attributes on a retried trial.
FAILED_TRIAL = "failed_trial"
RETRY_HISTORY = "retry_history"
#: optuna-dashboard keeps a trial's note in study system attributes with these keys.
DASHBOARD_PREFIX = "dashboard:"


def dashboard_note_version(trial_id: int | str) -> str:
    """optuna-dashboard's key for the version of a trial's note."""
    return f"{DASHBOARD_PREFIX}{trial_id}:note_ver"


def dashboard_note_chunk(trial_id: int | str) -> str:
    """optuna-dashboard's key prefix for the chunks of a trial's note (append the index)."""
    return f"{DASHBOARD_PREFIX}{trial_id}:note_str:"


# -- environment variables --------------------------------------------------------------------
SUPERVISION_ENV = "MLTIDY_SUPERVISION"
#: MLflow reads extra run-context tags from this variable (JSON) in every install.
MLFLOW_RUN_CONTEXT_ENV = "MLFLOW_RUN_CONTEXT"
#: Forces a SQL store's read path: ``auto`` (by schema version), ``fast`` or ``library``.
READ_PATH_ENV = "MLTIDY_READ_PATH"
#: MLflow settings the client backends default (``os.environ.setdefault``): MLflow 3 reads a
#: file store only when allowed; a dead server should fail fast; no "View run" lines on stdout.
MLFLOW_ALLOW_FILE_STORE_ENV = "MLFLOW_ALLOW_FILE_STORE"
MLFLOW_HTTP_MAX_RETRIES_ENV = "MLFLOW_HTTP_REQUEST_MAX_RETRIES"
MLFLOW_HTTP_TIMEOUT_ENV = "MLFLOW_HTTP_REQUEST_TIMEOUT"
MLFLOW_SUPPRESS_URL_ENV = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
#: MLflow's telemetry switch: mltidy's own use of MLflow (reads included) writes and sends nothing.
MLFLOW_DISABLE_TELEMETRY_ENV = "MLFLOW_DISABLE_TELEMETRY"
#: MLflow's client settings for tracking servers, honoured by the REST reader as MLflow does.
MLFLOW_TRACKING_USERNAME_ENV = "MLFLOW_TRACKING_USERNAME"
MLFLOW_TRACKING_PASSWORD_ENV = "MLFLOW_TRACKING_PASSWORD"
MLFLOW_TRACKING_TOKEN_ENV = "MLFLOW_TRACKING_TOKEN"
MLFLOW_TRACKING_INSECURE_TLS_ENV = "MLFLOW_TRACKING_INSECURE_TLS"
MLFLOW_TRACKING_SERVER_CERT_PATH_ENV = "MLFLOW_TRACKING_SERVER_CERT_PATH"
MLFLOW_TRACKING_CLIENT_CERT_PATH_ENV = "MLFLOW_TRACKING_CLIENT_CERT_PATH"
#: MLflow 3's workspace of a multi-workspace server (sent as the ``X-MLFLOW-WORKSPACE`` header).
MLFLOW_WORKSPACE_ENV = "MLFLOW_WORKSPACE"
#: Auth that only MLflow's own client can do (plugins, AWS SigV4): such servers are read
#: through ``MlflowClient``.
MLFLOW_TRACKING_AUTH_ENV = "MLFLOW_TRACKING_AUTH"
MLFLOW_TRACKING_AWS_SIGV4_ENV = "MLFLOW_TRACKING_AWS_SIGV4"
#: SLURM's clients read their configuration from this file (default ``/etc/slurm/slurm.conf``).
SLURM_CONF_ENV = "SLURM_CONF"
#: How SLURM's clients print times; mltidy sets ``standard`` (ISO 8601) for the ones it runs.
SLURM_TIME_FORMAT_ENV = "SLURM_TIME_FORMAT"

# -- what backends read ------------------------------------------------------------------------
#: Run tags every backend passes to the judge and the linker with each record.
RUN_TAG_KEYS = (MLFLOW_USER, MLFLOW_RUN_NAME, MLFLOW_PARENT_RUN_ID)
#: Run tag prefixes every backend passes with each record (mltidy's, and link tags).
RUN_TAG_PREFIXES = (PREFIX, "optuna.")
#: Run tags the linker reads on candidate runs.
LINK_RUN_TAG_KEYS = (
    CALLBACK_NUMBER,
    CALLBACK_DATETIME_START,
    MLFLOW_NOTE,
    MLFLOW_RUN_NAME,
    # for --user / --host on link (scope.py)
    HOST,
    USER,
    MLFLOW_USER,
)
LINK_RUN_TAG_PREFIXES = (RUN_TRIAL_PREFIX, "optuna.")
#: Run tags that name the study a run belongs to (plugin and link conventions).
STUDY_TAGS = (RUN_STUDY, LINK_STUDY)
#: Trial attribute keys every backend passes with each trial (besides ``mltidy.*``).
TRIAL_LINK_KEYS = (MLFLOW_RUN_ID,)
