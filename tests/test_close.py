"""``mltidy close`` and ``declutter`` against every kind of store, on real killed jobs.

Each world gets fresh stores: sqlite, the file store with a journal, PostgreSQL, and a real
``mlflow server`` (with a sqlite Optuna storage).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pytest
from typer.testing import CliRunner

from close_world import CloseWorld, make_close_world, mlflow_snapshot, optuna_snapshot
from mltidy.cli.app import app
from mltidy.demo.jobs import optuna_storage

WORLDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("file-journal", id="file-store+journal"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    pytest.param("server", id="mlflow-server", marks=pytest.mark.mlflow_server),
    pytest.param("mysql", id="mysql", marks=pytest.mark.mysql),
]


@pytest.fixture(params=WORLDS)
def world(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CloseWorld]:
    kind: str = request.param
    name = f"close-{kind}-{time.monotonic_ns() % 10**8}"
    monkeypatch.chdir(tmp_path)
    if kind == "sqlite":
        pair = (f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}")
    elif kind == "file-journal":
        pair = (f"file:{tmp_path / 'mlruns'}", str(tmp_path / "optuna.log"))
    elif kind in ("postgres", "mysql"):
        server = request.getfixturevalue(f"{kind}_server")
        slug = name.replace("-", "_")
        pair = (server.create_database(f"m_{slug}"), server.create_database(f"o_{slug}"))
    else:
        server = request.getfixturevalue("mlflow_server")
        pair = (server.url, f"sqlite:///{tmp_path / 'optuna.db'}")
    made = make_close_world(*pair, tmp_path / "work", name)
    yield made
    made.stop()


def invoke(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, list(args))
    try:
        payload = json.loads(result.stdout)
    except ValueError:
        payload = {"stdout": result.stdout}
    return result.exit_code, payload, result.stderr


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _ids(entries: list[dict[str, Any]], kind: str) -> set[str]:
    return {e["id"] for e in entries if e["kind"] == kind}


def test_close_scenario(world: CloseWorld) -> None:
    runs_before = mlflow_snapshot(world.mlflow_uri, world.name)
    trials_before = optuna_snapshot(world.optuna_url, world.name)
    killed, empty = str(world.killed.run_id), str(world.empty.run_id)
    live, finished = str(world.live.run_id), str(world.finished.run_id)

    # 1. The dry run plans the dead, leaves the living alone, and changes nothing at all.
    code, plan, _ = invoke("close", "-f", "json", *world.args())
    assert code == 0
    assert plan["dry_run"] is True
    assert _ids(plan["changes"], "mlflow_run") == {killed, empty}
    assert {c["status"] for c in plan["changes"]} == {"planned"}
    assert live in _ids(plan["skipped"], "mlflow_run")
    assert all(s["why"].startswith("alive") for s in plan["skipped"])
    assert mlflow_snapshot(world.mlflow_uri, world.name) == runs_before
    assert optuna_snapshot(world.optuna_url, world.name) == trials_before

    # A dry run shows everything --yes would do, retries included.
    code, retrying, _ = invoke("close", "--retry", "-f", "json", *world.args())
    assert code == 0
    for change in retrying["changes"]:
        trial = change["kind"] == "optuna_trial"
        assert change["retry"] is trial
        assert change["detail"] == ("a retry would be enqueued" if trial else None)

    # 2. Applied, with retries: true end times, audit tags; live and finished untouched.
    code, done, err = invoke("close", "--yes", "--retry", "-f", "json", *world.args())
    assert code == 0, (err, done)
    assert done.get("dry_run") is False, done
    assert {c["status"] for c in done["changes"]} == {"closed"}
    runs_after = mlflow_snapshot(world.mlflow_uri, world.name)
    assert runs_after[killed]["status"] == "KILLED"
    assert runs_after[killed]["end_time"] == runs_before[killed]["last_metric"]
    assert runs_after[empty]["status"] == "KILLED"
    assert runs_after[empty]["end_time"] == runs_before[empty]["start_time"]
    for run_id in (killed, empty):
        tags = runs_after[run_id]["tags"]
        assert tags["mltidy.previous_state"] == "RUNNING"
        assert tags["mltidy.closed_reason"].startswith("dead: process ")
        assert "@" in tags["mltidy.closed_by"] and tags["mltidy.closed_at"]
    assert runs_after[live] == runs_before[live]
    assert runs_after[finished] == runs_before[finished]

    trials_after = optuna_snapshot(world.optuna_url, world.name)
    for job in (world.killed, world.empty):
        trial = trials_after[int(job.trial_number or 0)]
        assert trial["state"] == "FAIL"
        assert trial["system_attrs"]["mltidy.closed_reason"].startswith("dead: its MLflow run")
    assert trials_after[int(world.live.trial_number or 0)]["state"] == "RUNNING"
    retries = {n: t for n, t in trials_after.items() if t["state"] == "WAITING"}
    assert len(retries) == 2
    killed_trial = trials_before[int(world.killed.trial_number or 0)]
    retry_of_killed = next(
        t
        for t in retries.values()
        if t["system_attrs"]["failed_trial"] == world.killed.trial_number
    )
    assert retry_of_killed["system_attrs"]["retry_history"] == [world.killed.trial_number]
    assert retry_of_killed["params"] == killed_trial["params"]
    assert "mlflow_run_id" not in retry_of_killed["user_attrs"]
    assert not any(k.startswith("mltidy.") for k in retry_of_killed["system_attrs"])

    # 3. Idempotent: nothing left to close (and said to be no dry run).
    code, again, _ = invoke("close", "--yes", "-f", "json", *world.args())
    assert code == 0
    assert again["changes"] == [] and again["dry_run"] is False

    # 4. Declutter: only the empty closed run goes, softly, and comes back on restore.
    time.sleep(1.1)
    code, dry, _ = invoke("declutter", "--older-than", "1s", "-f", "json", *world.args())
    assert code == 0
    actions = {r["id"]: r["action"] for r in dry["runs"]}
    assert actions == {empty: "delete", killed: "keep"}
    assert mlflow_snapshot(world.mlflow_uri, world.name) == runs_after
    code, report, _ = invoke(
        "declutter", "--older-than", "1s", "--yes", "-f", "json", *world.args()
    )
    assert code == 0
    assert {r["id"]: r["action"] for r in report["runs"]} == {empty: "deleted", killed: "keep"}
    (study,) = report["studies"]
    assert study["failed"] == 2 and study["closed_by_mltidy"] == 2 and study["running"] == 1
    # The compute the failed trials cost runs to their true end (last activity), not to the
    # moment mltidy closed them (journal storages record the closing time as their end).
    lost = sum(
        (_time(c["end_time"]) - _time(c["started_at"])).total_seconds()
        for c in done["changes"]
        if c["kind"] == "optuna_trial"
    )
    # Optuna's tables on MySQL keep whole seconds (DATETIME: up to 1 s per trial); elsewhere µs.
    precision = study["failed"] if world.optuna_url.startswith("mysql") else 0.01
    assert study["failed_seconds"] == pytest.approx(lost, abs=precision)
    decluttered = mlflow_snapshot(world.mlflow_uri, world.name)
    assert decluttered[empty]["lifecycle"] == "deleted"
    assert decluttered[killed]["lifecycle"] == "active"
    mlflow.MlflowClient(tracking_uri=world.mlflow_uri).restore_run(empty)
    assert mlflow_snapshot(world.mlflow_uri, world.name)[empty]["lifecycle"] == "active"


@pytest.mark.parametrize("world", ["sqlite", "file-journal"], indirect=True)
def test_retried_trial_is_picked_up_by_optimize(world: CloseWorld) -> None:
    code, _, err = invoke("close", "--yes", "--retry", "-s", world.name, *world.args())
    assert code == 0, err
    before = optuna_snapshot(world.optuna_url, world.name)
    waiting = {n: t["params"] for n, t in before.items() if t["state"] == "WAITING"}
    seen: list[dict[str, Any]] = []

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        layers = trial.suggest_int("layers", 1, 4)
        seen.append({"number": trial.number, "lr": lr, "layers": layers})
        return lr

    study = optuna.load_study(study_name=world.name, storage=optuna_storage(world.optuna_url))
    study.optimize(objective, n_trials=len(waiting))
    assert {s["number"] for s in seen} == set(waiting)
    for s in seen:
        assert waiting[s["number"]] == {"lr": s["lr"], "layers": s["layers"]}
        retried = study.trials[s["number"]]
        assert optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(retried) in {
            world.killed.trial_number,
            world.empty.trial_number,
        }
