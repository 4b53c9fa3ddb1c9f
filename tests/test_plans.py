"""Apply what was reviewed: ``close``/``declutter``/``link --plan FILE`` apply exactly the
plan's records, each still compare-and-set, and report the ones that changed since (real jobs
killed with real signals, real stores)."""

from __future__ import annotations

import dataclasses
import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import pytest
from typer.testing import CliRunner

from close_world import CloseWorld, make_close_world, mlflow_snapshot, optuna_snapshot
from labs import Lab, ready
from mltidy.cli.app import app


@pytest.fixture(params=["sqlite", "file-journal"])
def world(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CloseWorld]:
    monkeypatch.chdir(tmp_path)
    if request.param == "sqlite":
        pair = (f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}")
    else:
        pair = (f"file:{tmp_path / 'mlruns'}", str(tmp_path / "optuna.log"))
    made = make_close_world(*pair, tmp_path / "work", f"plan-{request.param}")
    yield made
    made.stop()


def invoke(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, list(args))
    try:
        payload = json.loads(result.stdout)
    except ValueError:
        payload = {"stdout": result.stdout}
    return result.exit_code, payload, result.stderr


def write(path: Path, payload: dict[str, Any]) -> str:
    path.write_text(json.dumps(payload))
    return str(path)


def test_close_applies_exactly_the_reviewed_plan(world: CloseWorld, tmp_path: Path) -> None:
    killed, empty, live = (str(j.run_id) for j in (world.killed, world.empty, world.live))
    code, plan, _ = invoke("close", "-f", "json", *world.args())
    assert code == 0
    assert plan["version"] == 2 and plan["command"] == "close" and plan["dry_run"] is True
    assert {s["uri"] for s in plan["stores"]} >= {c["store"] for c in plan["changes"]}
    assert {c["id"] for c in plan["changes"] if c["kind"] == "mlflow_run"} == {killed, empty}
    path = write(tmp_path / "plan.json", plan)

    # After the review, the live job dies: a plain `close --yes` would close it too (the
    # measured defect: 2 planned, 4 closed). And someone ends the empty run by hand.
    world.live.kill(signal.SIGKILL)
    mlflow.MlflowClient(tracking_uri=world.mlflow_uri).set_terminated(empty, "FINISHED")
    runs_before = mlflow_snapshot(world.mlflow_uri, world.name)

    # The plan as it stands now, changing nothing.
    code, check, err = invoke("close", "--plan", path, "-f", "json", *_stores(world))
    assert code == 0, err
    assert {c["id"] for c in check["changes"] if c["kind"] == "mlflow_run"} == {killed}
    changed = {s["id"]: s["why"] for s in check["skipped"]}
    assert changed[empty] == "changed since the plan: now FINISHED"
    assert mlflow_snapshot(world.mlflow_uri, world.name) == runs_before

    # Applied: exactly the plan's records that did not change.
    code, done, err = invoke("close", "--plan", path, "--yes", "-f", "json", *_stores(world))
    assert code == 0, err
    assert done["dry_run"] is False
    closed = {c["id"] for c in done["changes"] if c["status"] == "closed"}
    assert {i for i in closed if len(i) == 32} == {killed}
    runs = mlflow_snapshot(world.mlflow_uri, world.name)
    assert runs[killed]["status"] == "KILLED"
    assert runs[empty]["status"] == "FINISHED"  # changed since: left alone
    assert runs[live]["status"] == "RUNNING"  # not in the plan: not touched
    trials = optuna_snapshot(world.optuna_url, world.name)
    assert trials[int(world.killed.trial_number or 0)]["state"] == "FAIL"
    assert trials[int(world.live.trial_number or 0)]["state"] == "RUNNING"

    # A plan is applied once: again, everything in it has changed since.
    code, again, _ = invoke("close", "--plan", path, "--yes", "-f", "json", *_stores(world))
    assert code == 0
    assert [c for c in again["changes"] if c["status"] == "closed"] == []


def _stores(world: CloseWorld) -> list[str]:
    return ["--mlflow", world.mlflow_uri, "--optuna", world.optuna_url]


def test_a_plan_names_its_stores_so_file_stores_need_no_options(
    world: CloseWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, plan, _ = invoke("close", "-f", "json", *world.args())
    assert code == 0
    path = write(tmp_path / "plan.json", plan)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # no store here to find
    code, check, err = invoke("close", "--plan", path, "-f", "json")
    assert code == 0, err
    assert {c["id"] for c in check["changes"]} == {c["id"] for c in plan["changes"]}


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: {**p, "command": "declutter"}, "is a plan of mltidy declutter, not of"),
        (lambda p: {**p, "version": 1}, "is a plan of version 1"),
        (lambda p: {**p, "dry_run": False}, "reports changes already made"),
        (lambda p: {"records": []}, "not a plan of mltidy"),
        (lambda p: {**p, "changes": [{"kind": "nope"}]}, "not of the documented form"),
    ],
)
def test_what_is_not_a_plan_is_a_usage_error(tmp_path: Path, edit: Any, message: str) -> None:
    plan = {"version": 2, "command": "close", "dry_run": True, "stores": [], "changes": []}
    path = write(tmp_path / "plan.json", edit(plan))
    code, out, err = invoke("close", "--plan", path)
    assert code == 2, (out, err)
    assert message in err
    code, out, err = invoke("close", "--plan", str(tmp_path / "none.json"), "-f", "json")
    assert code == 2 and "cannot read the plan" in out["error"]["message"]
    code, _, err = invoke("close", "--plan", path, "-s", "x", "--include-stale")
    assert code == 2
    assert "takes no -s/--study, --include-stale" in err


def test_a_plan_naming_a_server_not_given_is_a_usage_error(tmp_path: Path) -> None:
    server = "postgresql://bob@db.example:5432/mlflow"
    plan = {
        "version": 2,
        "command": "close",
        "dry_run": True,
        "stores": [{"uri": server, "kind": "mlflow", "ok": True, "error": None}],
        "changes": [],
    }
    code, _, err = invoke("close", "--plan", write(tmp_path / "p.json", plan))
    assert code == 2
    assert f"names the mlflow store {server}, which is not among the stores given" in err
    assert "--mlflow" in err


def test_declutter_deletes_only_what_the_plan_lists_and_is_still_empty(
    world: CloseWorld, tmp_path: Path
) -> None:
    code, _, err = invoke("close", "--yes", "-f", "json", *world.args())
    assert code == 0, err
    time.sleep(1.1)
    code, plan, _ = invoke("declutter", "--older-than", "1s", "-f", "json", *world.args())
    assert code == 0
    empty = str(world.empty.run_id)
    assert plan["command"] == "declutter" and plan["version"] == 2
    assert {r["id"]: r["action"] for r in plan["runs"]}[empty] == "delete"
    path = write(tmp_path / "declutter.json", plan)
    # Since the review, the empty run got a metric: it is no longer empty.
    mlflow.MlflowClient(tracking_uri=world.mlflow_uri).log_metric(empty, "late", 1.0)
    code, done, err = invoke("declutter", "--plan", path, "--yes", "-f", "json", *_stores(world))
    assert code == 0, err
    (entry,) = done["runs"]
    assert entry["id"] == empty and entry["action"] == "keep"
    assert entry["why"] == "changed since the plan: holds 1 metric"
    assert mlflow_snapshot(world.mlflow_uri, world.name)[empty]["lifecycle"] == "active"


def test_link_writes_only_the_pairs_of_the_plan(lab: Lab, tmp_path: Path) -> None:
    stores = ["--mlflow", lab.mlflow, "--optuna", lab.optuna]
    first = lab.start(2)
    ready(first)
    assert first.wait() == 0
    code, plan, err = invoke("link", "--dry-run", "-f", "json", *stores)
    assert code == 0, err
    assert plan["command"] == "link" and plan["dry_run"] is True
    assert [p["status"] for p in plan["pairs"]] == ["planned"]
    path = write(tmp_path / "link.json", plan)
    second = lab.start(2)
    ready(second)
    assert second.wait() == 0
    code, done, err = invoke("link", "--plan", path, "-f", "json", *stores)
    assert code == 0, err
    assert [(p["run_id"], p["status"]) for p in done["pairs"]] == [(first.run_id, "linked")]
    code, after, _ = invoke("link", "--dry-run", "-f", "json", *stores)
    statuses = {p["run_id"]: p["status"] for p in after["pairs"]}
    assert statuses == {first.run_id: "unchanged", second.run_id: "planned"}


def test_times_in_a_plan_have_milliseconds_and_that_is_the_same_activity() -> None:
    from datetime import datetime, timedelta, timezone

    from mltidy import names
    from mltidy.model import Record, RecordKind, StoreId
    from mltidy.plans import changed_since

    beat = datetime(2026, 1, 1, 10, 0, 0, 123456, tzinfo=timezone.utc)
    fresh = Record(
        RecordKind.OPTUNA_TRIAL,
        StoreId("sqlite:////x/optuna.db"),
        "7",
        "trial 3",
        "s",
        "1",
        "RUNNING",
        beat - timedelta(hours=1),
        last_activity_at=beat,
        trial_number=3,
        tags={names.HEARTBEAT_AT: beat.isoformat()},
    )
    in_plan = beat.replace(microsecond=123000)  # what the plan file kept
    planned = dataclasses.replace(
        fresh, last_activity_at=in_plan, tags={names.HEARTBEAT_AT: in_plan.isoformat()}
    )
    assert changed_since(planned, fresh) is None
    later = dataclasses.replace(fresh, last_activity_at=beat + timedelta(seconds=2))
    assert changed_since(planned, later) == "changed since the plan: new activity"
    ended = dataclasses.replace(fresh, state="COMPLETE")
    assert changed_since(planned, ended) == "changed since the plan: now COMPLETE"
    assert changed_since(planned, None) == "changed since the plan: gone from the store"
