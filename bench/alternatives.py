"""What a user would run instead of ``mltidy scan``: each is a whole program, run as a subprocess.

``python bench/alternatives.py WHAT URL`` prints the RUNNING records as JSON on stdout, like
``mltidy scan --format json`` does, so each program pays for producing the same answer.

* ``mlflow-client``: the MlflowClient loop from MLflow's docs. ``search_experiments`` (paged),
  then ``search_runs`` over all of them with ``attributes.status = 'RUNNING'`` (paged, 1,000 a
  page); the last activity is the newest timestamp of the run's latest metrics, as MLflow's
  ``Run`` object carries them.
* ``optuna-api``: Optuna's public API. Every study by name, ``load_study``, then
  ``get_trials(deepcopy=False, states=(TrialState.RUNNING,))``. The storage object is built
  once and shared (a user passing the URL string to every ``load_study`` would be slower).
* ``mlflow-close``: the MlflowClient loop that ends RUNNING runs: the runs found as in
  ``mlflow-client``, then ``set_terminated(run_id, "KILLED")`` for each (no compare-and-set, no
  audit tags, the end time "now": less than mltidy does).
* ``optuna-close``: Optuna's public API: every study, ``load_study``, then
  ``study.tell(trial.number, state=TrialState.FAIL)`` for each RUNNING trial (no audit
  attributes).
* ``mlflow-sql`` / ``optuna-sql``: one hand-written SQL query through the bare DBAPI driver
  (``sqlite3`` or ``psycopg2``): the floor for any tool that has to start Python and ask the
  database. It reads no tags and judges nothing.
"""

from __future__ import annotations

import json
import sys
from typing import Any

MLFLOW_SQL = """
SELECT r.run_uuid, r.name, r.status, r.start_time, e.name,
       (SELECT max(m.timestamp) FROM latest_metrics m WHERE m.run_uuid = r.run_uuid) AS last_metric
FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
WHERE r.status = 'RUNNING' AND r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active'
"""

OPTUNA_SQL = """
SELECT t.trial_id, t.number, t.state, t.datetime_start, s.study_name, h.heartbeat
FROM trials t JOIN studies s ON s.study_id = t.study_id
LEFT JOIN trial_heartbeats h ON h.trial_id = t.trial_id
WHERE t.state = 'RUNNING'
"""


def mlflow_client(url: str) -> list[dict[str, Any]]:
    from mlflow import MlflowClient
    from mlflow.entities import ViewType

    client = MlflowClient(tracking_uri=url)
    experiments = []
    token = None
    while True:
        page = client.search_experiments(
            view_type=ViewType.ACTIVE_ONLY, max_results=1000, page_token=token
        )
        experiments += page
        token = page.token
        if not token:
            break
    names = {e.experiment_id: e.name for e in experiments}
    found = []
    token = None
    while True:
        runs = client.search_runs(
            experiment_ids=list(names),
            filter_string="attributes.status = 'RUNNING'",
            run_view_type=ViewType.ACTIVE_ONLY,
            max_results=1000,
            page_token=token,
        )
        for run in runs:
            stamps = [m.timestamp for m in run.data._metric_objs]
            found.append(
                {
                    "id": run.info.run_id,
                    "name": run.info.run_name,
                    "container": names[run.info.experiment_id],
                    "state": run.info.status,
                    "started_at": run.info.start_time,
                    "last_activity_at": max(stamps) if stamps else None,
                }
            )
        token = runs.token
        if not token:
            return found


def mlflow_close(url: str) -> list[dict[str, Any]]:
    from mlflow import MlflowClient

    found = mlflow_client(url)
    client = MlflowClient(tracking_uri=url)
    for run in found:
        client.set_terminated(run["id"], "KILLED")
    return found


def optuna_close(url: str) -> list[dict[str, Any]]:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    found = []
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(trial.number, state=TrialState.FAIL)
            found.append({"id": trial._trial_id, "container": name})
    return found


def optuna_api(url: str) -> list[dict[str, Any]]:
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    found = []
    for name in optuna.get_all_study_names(storage):
        study = optuna.load_study(study_name=name, storage=storage)
        for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            found.append(
                {
                    "id": trial._trial_id,
                    "container": name,
                    "trial_number": trial.number,
                    "state": trial.state.name,
                    "started_at": str(trial.datetime_start),
                }
            )
    return found


def raw_sql(url: str, query: str) -> list[dict[str, Any]]:
    if url.startswith("sqlite:///"):
        import sqlite3

        conn: Any = sqlite3.connect(f"file:{url.removeprefix('sqlite:///')}?mode=ro", uri=True)
    else:
        import psycopg2

        conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        cursor = conn.cursor()
        cursor.execute(query)
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, map(str, row), strict=True)) for row in cursor.fetchall()]
    finally:
        conn.close()


def main(argv: list[str]) -> int:
    what, url = argv
    if what == "mlflow-client":
        records = mlflow_client(url)
    elif what == "optuna-api":
        records = optuna_api(url)
    elif what == "mlflow-close":
        records = mlflow_close(url)
    elif what == "optuna-close":
        records = optuna_close(url)
    elif what == "mlflow-sql":
        records = raw_sql(url, MLFLOW_SQL)
    elif what == "optuna-sql":
        records = raw_sql(url, OPTUNA_SQL)
    else:
        raise SystemExit(f"unknown alternative {what}")
    json.dump({"records": records}, sys.stdout, default=str)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
