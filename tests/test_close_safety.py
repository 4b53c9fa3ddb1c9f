"""Closing never harms a record that finished meanwhile, never closes twice, survives partial
failure, and leaves no record half closed when the closer is killed. Real stores, real killed
jobs, real concurrent processes, a real SIGKILL of the closer."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import optuna
import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

from close_world import CloseWorld, make_close_world, mlflow_snapshot, optuna_snapshot
from dead_records import DeadStores, half_closed, make_dead_stores
from mltidy import close
from mltidy.backends import Selection
from mltidy.backends.identity import store_spec
from mltidy.backends.session import StoreSession
from mltidy.demo.jobs import optuna_storage
from mltidy.evidence.local import LocalProbe
from mltidy.judge import Policy
from mltidy.model import StoreKind, StoreSpec, utc_now

KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


def _pair(kind: str, request: pytest.FixtureRequest, tmp_path: Path, name: str) -> tuple[str, str]:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}"
    server = request.getfixturevalue("postgres_server")
    slug = name.replace("-", "_")
    return server.create_database(f"m_{slug}"), server.create_database(f"o_{slug}")


@pytest.fixture(params=KINDS)
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[CloseWorld]:
    name = f"safety-{request.param}-{os.getpid()}-{len(request.node.name)}"
    made = make_close_world(*_pair(request.param, request, tmp_path, name), tmp_path / "w", name)
    yield made
    made.stop()


def _specs(world: CloseWorld) -> list[StoreSpec]:
    return [
        store_spec(StoreKind.MLFLOW, world.mlflow_uri, "test"),
        store_spec(StoreKind.OPTUNA, world.optuna_url, "test"),
    ]


def test_a_record_that_finishes_between_plan_and_apply_stays_finished(world: CloseWorld) -> None:
    specs = _specs(world)
    selection = Selection(experiments=(world.name,), studies=(world.name,))
    options = close.CloseOptions()
    session = StoreSession(specs)
    planned = close.plan(session, selection, Policy(now=utc_now()), LocalProbe(), options)
    killed_run = str(world.killed.run_id)
    assert killed_run in {c.item.record.id for c in planned.changes}

    # The job "finishes" after the plan: its run and trial end normally.
    mlflow.MlflowClient(tracking_uri=world.mlflow_uri).set_terminated(killed_run, "FINISHED")
    storage = optuna_storage(world.optuna_url)
    if isinstance(storage, str):
        storage = optuna.storages.RDBStorage(storage, skip_table_creation=True)
    study = optuna.load_study(study_name=world.name, storage=storage)
    trial = study.trials[int(world.killed.trial_number or 0)]
    storage.set_trial_state_values(trial._trial_id, optuna.trial.TrialState.COMPLETE, [0.5])
    runs_before = mlflow_snapshot(world.mlflow_uri, world.name)

    applied = close.apply(session, planned, options)
    session.close()
    skipped = {s.item.record.id: s.why for s in applied.skipped}
    assert skipped[killed_run].startswith("already FINISHED")
    assert skipped[str(trial._trial_id)].startswith("already COMPLETE")
    runs_after = mlflow_snapshot(world.mlflow_uri, world.name)
    assert runs_after[killed_run] == runs_before[killed_run]
    assert not any(k.startswith("mltidy.closed") for k in runs_after[killed_run]["tags"])
    trial_after = optuna_snapshot(world.optuna_url, world.name)[trial.number]
    assert trial_after["state"] == "COMPLETE"
    assert "mltidy.closed_at" not in trial_after["system_attrs"]
    closed = {c.item.record.id for c in applied.changes if c.outcome is close.Outcome.CLOSED}
    assert str(world.empty.run_id) in closed


def _dead_pid() -> tuple[int, float]:
    """A pid and start time of a process that really ran and really ended."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.3)"])
    started = psutil.Process(proc.pid).create_time()
    proc.wait()
    return proc.pid, started


def _dead_records(world: CloseWorld, count: int) -> tuple[set[str], set[str]]:
    """Extra RUNNING runs and trials whose provenance names a process that has ended."""
    pid, started = _dead_pid()
    facts = {
        "mltidy.host": socket.gethostname(),
        "mltidy.pid": str(pid),
        "mltidy.pid_start": f"{started:.2f}",
        "mltidy.cmd": "python train.py",
    }
    client = mlflow.MlflowClient(tracking_uri=world.mlflow_uri)
    experiment = client.get_experiment_by_name(world.name)
    assert experiment is not None
    runs = {
        str(client.create_run(experiment.experiment_id, tags=facts).info.run_id)
        for _ in range(count)
    }
    storage = optuna_storage(world.optuna_url)
    study = optuna.load_study(study_name=world.name, storage=storage)
    trials = set()
    for _ in range(count):
        trial = study.ask()
        for key, value in facts.items():
            study._storage.set_trial_system_attr(trial._trial_id, key, value)
        trials.add(str(trial._trial_id))
    return runs, trials


def test_two_concurrent_closers_close_everything_exactly_once(world: CloseWorld) -> None:
    runs, trials = _dead_records(world, 15)
    runs |= {str(world.killed.run_id), str(world.empty.run_id)}
    exe = Path(sys.executable).parent / "mltidy"
    command = [str(exe), "close", "--yes", "-f", "json", *world.args()]
    procs = [
        subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [p.communicate(timeout=300) for p in procs]
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
        assert "error" not in err
    closed: list[str] = []
    for out, _ in outputs:
        payload = json.loads(out)
        closed += [c["id"] for c in payload["changes"] if c["status"] == "closed"]
        assert all(c["status"] != "failed" for c in payload["changes"])
    assert len(closed) == len(set(closed))  # nobody closed a record twice
    trial_ids = set(closed) - runs
    assert runs <= set(closed)
    assert len(trial_ids) == len(trials) + 2  # the extra trials and the two killed jobs' trials
    snapshot = mlflow_snapshot(world.mlflow_uri, world.name)
    assert all(snapshot[r]["status"] == "KILLED" for r in runs)
    assert snapshot[str(world.live.run_id)]["status"] == "RUNNING"


@pytest.mark.postgres
def test_partial_failure_closes_the_rest_and_exits_4(
    postgres_server: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mltidy.cli.app import app

    name = f"partial-{os.getpid()}"
    mlflow_url = postgres_server.create_database("m_partial")  # type: ignore[attr-defined]
    world = make_close_world(
        mlflow_url, f"sqlite:///{tmp_path / 'optuna.db'}", tmp_path / "w", name
    )
    try:
        admin = create_engine(mlflow_url)
        with admin.begin() as conn:
            conn.execute(text("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'"))
            conn.execute(text("GRANT SELECT ON ALL TABLES IN SCHEMA public TO reader"))
        admin.dispose()
        reader = make_url(mlflow_url).set(username="reader", password="reader-pw")
        reader_url = reader.render_as_string(hide_password=False)
        monkeypatch.chdir(tmp_path)
        result = CliRunner().invoke(
            app,
            ["close", "--yes", "-f", "json", "--mlflow", reader_url, "--optuna", world.optuna_url],
        )
        assert result.exit_code == 4, result.stderr
        payload = json.loads(result.stdout)
        statuses = {(c["kind"], c["status"]) for c in payload["changes"]}
        assert statuses == {("mlflow_run", "failed"), ("optuna_trial", "closed")}
        assert result.stderr.count("could not close") == 2
        assert "reader-pw" not in result.stdout + result.stderr
        trials = optuna_snapshot(world.optuna_url, name)
        assert trials[int(world.killed.trial_number or 0)]["state"] == "FAIL"
        runs = mlflow_snapshot(world.mlflow_uri, name)
        assert runs[str(world.killed.run_id)]["status"] == "RUNNING"
    finally:
        world.stop()


# -- closing in bulk ------------------------------------------------------------------------

#: More than two batches (close.BATCH) of each kind.
BULK = 1_200


@pytest.fixture(params=KINDS)
def dead(request: pytest.FixtureRequest, tmp_path: Path) -> DeadStores:
    name = f"bulk-{request.param}-{os.getpid()}-{len(request.node.name)}"
    return make_dead_stores(*_pair(request.param, request, tmp_path, name), name, BULK)


def _refuse_audit_of(stores: DeadStores, run_id: str) -> Callable[[], None]:
    """Make the store refuse the audit tags of one run (a trigger), as a full disk or a lost
    connection would refuse a write halfway through a batch; returns the undo."""
    engine = create_engine(stores.mlflow_uri)
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON tags "
                    f"WHEN NEW.run_uuid = '{run_id}' "
                    "BEGIN SELECT RAISE(ABORT, 'refused by the test'); END"
                )
            )
        else:
            conn.execute(
                text(
                    "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                    f"IF NEW.run_uuid = '{run_id}' THEN RAISE EXCEPTION 'refused by the test'; "
                    "END IF; RETURN NEW; END $$ LANGUAGE plpgsql"
                )
            )
            conn.execute(
                text(
                    "CREATE TRIGGER refuse BEFORE INSERT ON tags FOR EACH ROW "
                    "EXECUTE FUNCTION refuse()"
                )
            )

    def undo() -> None:
        with engine.begin() as conn:
            conn.execute(text("DROP TRIGGER refuse" + ("" if _is_sqlite(engine) else " ON tags")))
        engine.dispose()

    return undo


def _is_sqlite(engine: Any) -> bool:
    return bool(engine.dialect.name == "sqlite")


def test_a_batch_refused_halfway_changes_none_of_its_records(dead: DeadStores) -> None:
    from typer.testing import CliRunner

    from mltidy.cli.app import app

    command = ["close", "--yes", "-f", "json", *dead.args()]
    plan = json.loads(CliRunner().invoke(app, ["close", "-f", "json", *dead.args()]).stdout)
    runs = [c["id"] for c in plan["changes"] if c["kind"] == "mlflow_run"]
    assert len(runs) == BULK
    victim = runs[close.BATCH + 7]  # in the second batch of runs
    undo = _refuse_audit_of(dead, victim)
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 4, result.stderr
    changes = json.loads(result.stdout)["changes"]
    failed = [c for c in changes if c["status"] == "failed"]
    assert victim in {c["id"] for c in failed}
    assert all("refused by the test" in c["detail"] for c in failed)
    # The refused batch is whole: its runs changed state in the transaction that failed, and
    # were rolled back with it; every other batch closed.
    assert len(failed) in (close.BATCH, BULK % close.BATCH)
    problems, closed = half_closed(dead)
    assert problems == []
    assert closed == 2 * BULK - len(failed)
    undo()
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.stderr
    assert half_closed(dead) == ([], 2 * BULK)


def _hot(journal: Path) -> bool:
    try:
        return journal.stat().st_size > 0
    except FileNotFoundError:
        return False


class _Writing:
    """Sees the closer inside a write transaction: a hot rollback journal next to a sqlite
    file, or a PostgreSQL backend that holds a transaction id (it wrote) and has not ended."""

    def __init__(self, stores: DeadStores) -> None:
        self.journals = [
            Path(url.removeprefix("sqlite:///") + "-journal")
            for url in (stores.mlflow_uri, stores.optuna_url)
            if url.startswith("sqlite:///")
        ]
        self.engine = None
        self.databases: list[str] = []
        if not self.journals:
            self.engine = create_engine(stores.mlflow_uri, poolclass=NullPool)
            self.databases = [make_url(u).database or "" for u in stores.args()[1::2]]

    def __call__(self) -> bool:
        if self.engine is None:
            return any(_hot(j) for j in self.journals)
        with self.engine.connect() as conn:
            found = conn.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity WHERE backend_xid IS NOT NULL "
                    "AND pid <> pg_backend_pid() AND datname = ANY(:names)"
                ),
                {"names": self.databases},
            ).scalar()
        return bool(found)

    def close(self) -> None:
        if self.engine is not None:
            self.engine.dispose()


def test_a_closer_killed_at_any_moment_leaves_no_half_closed_record(dead: DeadStores) -> None:
    """``mltidy close --yes`` (the installed entry point) is SIGKILLed inside a write
    transaction, again and again, a batch later each time, while it closes 2,400 records;
    after every kill, each record is either still RUNNING without any audit tag, or closed
    with all of them. A last run closes the rest."""
    exe = Path(sys.executable).parent / "mltidy"
    command = [str(exe), "close", "--yes", "-f", "json", *dead.args()]
    writing = _Writing(dead)
    killed_writing = 0
    try:
        for nth in (1, 2, 3):
            proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            seen, was = 0, False
            while proc.poll() is None:
                now = writing()
                seen += now and not was  # a new transaction began
                was = now
                if seen >= nth:
                    proc.kill()
                    break
            proc.wait(timeout=60)
            if proc.returncode == -signal.SIGKILL:
                killed_writing += 1
                if writing.journals:  # the transaction was cut short: its journal is hot
                    assert any(_hot(j) for j in writing.journals)
            problems, closed = half_closed(dead)
            assert problems == [], problems[:5]
            assert closed < 2 * BULK or proc.returncode == 0
    finally:
        writing.close()
    assert killed_writing >= 2
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    assert half_closed(dead) == ([], 2 * BULK)
