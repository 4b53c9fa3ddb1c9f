"""Many dead records at once, for the tests of closing in bulk.

The stores are made by MLflow and Optuna themselves; the records are then added as rows by hand
(thousands of real killed jobs would take minutes): RUNNING runs and trials whose provenance
names this host with a boot id it does not have, so the judge says "dead: host rebooted". The
tests that use them kill the *closer* for real; the real killed jobs are elsewhere
(``close_world.py``, ``killed_jobs.py``).
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from mltidy import names

TAGS = sa.table("tags", sa.column("key"), sa.column("value"), sa.column("run_uuid"))
ATTRS = sa.table(
    "trial_system_attributes", sa.column("trial_id"), sa.column("key"), sa.column("value_json")
)
AUDIT = (
    names.CLOSED_AT,
    names.CLOSED_REASON,
    names.CLOSED_BY,
    names.PREVIOUS_STATE,
    names.END_TIME_SOURCE,
)


def provenance(n: int) -> dict[str, str]:
    """Tags of a job that ran on this host before a reboot."""
    return {
        names.HOST: socket.gethostname(),
        names.BOOT_ID: str(uuid.UUID(int=n + 1)),
        names.PID: str(1000 + n),
        names.PID_START: "1700000000.00",
        names.CMD: "python train.py",
    }


@dataclass(frozen=True)
class DeadStores:
    """An MLflow store and an Optuna storage, each with ``count`` dead records."""

    mlflow_uri: str
    optuna_url: str
    name: str
    count: int

    def args(self) -> list[str]:
        return ["--mlflow", self.mlflow_uri, "--optuna", self.optuna_url]


def make_dead_stores(mlflow_uri: str, optuna_url: str, name: str, count: int) -> DeadStores:
    """Create both stores through the libraries and add ``count`` dead runs and trials."""
    import mlflow
    import optuna

    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    experiment_id = int(client.create_experiment(name))
    _dispose_mlflow_engine(mlflow_uri)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(optuna_url)
    study_id = storage.create_new_study([optuna.study.StudyDirection.MINIMIZE], name)
    storage.remove_session()
    storage.engine.dispose()

    now_ms = int(time.time() * 1000)
    engine = sa.create_engine(mlflow_uri, poolclass=sa.pool.NullPool)
    with engine.begin() as conn:
        run_ids = [uuid.uuid4().hex for _ in range(count)]
        conn.execute(
            sa.text(
                "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
                "user_id, status, start_time, lifecycle_stage, artifact_uri, experiment_id) "
                "VALUES (:id, :name, 'LOCAL', 'train.py', '', 'me', 'RUNNING', :start, "
                "'active', '', :exp)"
            ),
            [
                {"id": r, "name": f"run-{n}", "start": now_ms - 3_600_000 - n, "exp": experiment_id}
                for n, r in enumerate(run_ids)
            ],
        )
        conn.execute(
            sa.insert(TAGS),
            [
                {"key": k, "value": v, "run_uuid": r}
                for n, r in enumerate(run_ids)
                for k, v in provenance(n).items()
            ],
        )
    engine.dispose()

    engine = sa.create_engine(optuna_url, poolclass=sa.pool.NullPool)
    started = sa.bindparam("start", type_=sa.DateTime)
    with engine.begin() as conn:
        insert = sa.text(
            "INSERT INTO trials (number, study_id, state, datetime_start) "
            "VALUES (:number, :study, 'RUNNING', :start)"
        ).bindparams(started)
        for n in range(count):
            conn.execute(insert, {"number": n, "study": study_id, "start": _naive_utc_hour_ago()})
        ids = conn.execute(
            sa.text("SELECT trial_id FROM trials WHERE study_id = :s ORDER BY number"),
            {"s": study_id},
        ).scalars()
        conn.execute(
            sa.insert(ATTRS),
            [
                {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)}
                for n, trial_id in enumerate(list(ids))
                for k, v in provenance(n).items()
            ],
        )
    engine.dispose()
    return DeadStores(mlflow_uri, optuna_url, name, count)


def _naive_utc_hour_ago() -> Any:
    from datetime import datetime, timedelta, timezone

    return datetime.now(timezone.utc).replace(tzinfo=None) - timedelta(hours=1)


def _dispose_mlflow_engine(uri: str) -> None:
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    engine = SqlAlchemyStore._engine_map.pop(uri, None)
    if engine is not None:
        engine.dispose()


def half_closed(stores: DeadStores) -> tuple[list[str], int]:
    """Records whose state and audit trail disagree (must be none), and how many are closed.

    Read with a writable connection where the store is a sqlite file, as any later reader
    would: SQLite rolls back the journal a writer killed mid-transaction left behind.
    """
    problems: list[str] = []
    closed = 0
    engine = sa.create_engine(stores.mlflow_uri, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        runs = conn.execute(
            sa.text("SELECT run_uuid, status, end_time FROM runs WHERE name LIKE 'run-%'")
        ).all()
        tags: dict[str, set[str]] = {}
        mltidy_tags = sa.select(TAGS.c.run_uuid, TAGS.c.key).where(TAGS.c.key.like("mltidy.%"))
        for run_id, key in conn.execute(mltidy_tags):
            tags.setdefault(run_id, set()).add(key)
    engine.dispose()
    for run_id, status, end_time in runs:
        audit = tags.get(run_id, set()) & set(AUDIT)
        if status == "RUNNING":
            if audit or end_time is not None:
                problems.append(f"run {run_id} RUNNING with {sorted(audit)}, end {end_time}")
        else:
            closed += 1
            if audit != set(AUDIT) or status != "KILLED" or end_time is None:
                problems.append(f"run {run_id} {status} with {sorted(audit)}, end {end_time}")
    engine = sa.create_engine(stores.optuna_url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        trials = conn.execute(
            sa.text("SELECT trial_id, state, datetime_complete FROM trials")
        ).all()
        attrs: dict[int, set[str]] = {}
        mltidy_attrs = sa.select(ATTRS.c.trial_id, ATTRS.c.key).where(ATTRS.c.key.like("mltidy.%"))
        for trial_id, key in conn.execute(mltidy_attrs):
            attrs.setdefault(trial_id, set()).add(key)
    engine.dispose()
    for trial_id, state, complete in trials:
        audit = attrs.get(trial_id, set()) & set(AUDIT)
        state = str(state).rsplit(".", 1)[-1]
        if state == "RUNNING":
            if audit or complete is not None:
                problems.append(f"trial {trial_id} RUNNING with {sorted(audit)}")
        else:
            closed += 1
            if audit != set(AUDIT) or state != "FAIL" or complete is None:
                problems.append(f"trial {trial_id} {state} with {sorted(audit)}")
    return problems, closed
