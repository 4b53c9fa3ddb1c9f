"""Closing never harms a record that finished meanwhile, never closes twice, and survives
partial failure. Real stores, real killed jobs, real concurrent processes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import psutil
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from close_world import CloseWorld, make_close_world, mlflow_snapshot, optuna_snapshot
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
