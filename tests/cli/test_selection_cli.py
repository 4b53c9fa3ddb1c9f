"""Selection options select exactly what they name, in every command, over a store holding
several experiments and studies crossed (real jobs killed with SIGKILL; crossed_world.py)."""

from __future__ import annotations

import getpass
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from crossed_world import CrossedWorld
from mltidy.cli.app import app


def invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def world(
    crossed_world: CrossedWorld, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> CrossedWorld:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLTIDY_STATE_DIR", str(tmp_path / "state"))
    for variable in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE"):
        monkeypatch.delenv(variable, raising=False)
    return crossed_world


def stores(world: CrossedWorld) -> list[str]:
    return ["--mlflow", world.mlflow_uri, "--optuna", world.optuna_url]


def selected(world: CrossedWorld, *args: str, command: str = "scan") -> set[str]:
    """The records a command selects, as ``run:JOB`` / ``trial:JOB``."""
    code, out, err = invoke(command, "-f", "json", *stores(world), *args)
    assert code == 0, (out, err)
    payload = json.loads(out)
    entries = payload["records"] if command == "scan" else payload["changes"] + payload["skipped"]
    return {label(world, entry) for entry in entries}


def label(world: CrossedWorld, entry: dict[str, object]) -> str:
    for job in world.jobs:
        if entry["kind"] == "mlflow_run" and entry["id"] == world.jobs[job].run_id:
            return f"run:{job}"
        if (
            entry["kind"] == "optuna_trial"
            and entry["trial_number"] == world.jobs[job].trial_number
            and entry["container"] == _study(job)
        ):
            return f"trial:{job}"
    raise AssertionError(f"a record no job wrote: {entry}")


def _study(job: str) -> str:
    from crossed_world import LAYOUT

    return LAYOUT[job][1]


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            [],
            {"run:j1", "run:j2", "run:j3", "run:j4", "run:j5"}
            | {"trial:j1", "trial:j2", "trial:j3", "trial:j4", "trial:j5", "trial:j6"},
        ),
        # a study: its trials and the runs linked to them, by mlflow_run_id, by the plugin's tags
        # and by MLflowCallback's experiment named after the study; nothing else
        (["-s", "s1"], {"trial:j1", "trial:j2", "run:j1", "run:j2"}),
        (["-s", "s2"], {"trial:j3", "run:j3"}),
        (["-s", "s4"], {"trial:j5", "run:j5"}),
        (["--study", "s5"], {"trial:j6"}),
        # an experiment: its runs and the trials linked to them
        (["-e", "exp-a"], {"run:j1", "run:j3", "trial:j1", "trial:j3"}),
        (["-e", "exp-b"], {"run:j2", "trial:j2"}),
        (["-e", "s4"], {"run:j5", "trial:j5"}),
        # several names: the union
        (["-e", "exp-c", "-s", "s5"], {"run:j4", "trial:j4", "trial:j6"}),
        (["-s", "s2", "-s", "s3"], {"run:j3", "trial:j3", "run:j4", "trial:j4"}),
    ],
)
def test_experiments_and_studies_select_exactly_their_records(
    world: CrossedWorld, args: list[str], expected: set[str]
) -> None:
    assert selected(world, *args) == expected
    assert selected(world, *args, command="close") == expected


def test_every_filter_at_once_selects_exactly_the_named_records(world: CrossedWorld) -> None:
    time.sleep(1.1)  # older than 1 s, silent for 1 s
    run_j2 = world.run_id("j2")[:8]
    trial_j1 = f"s1:{world.trial_number('j1')}"
    args = [
        "-s", "s1",
        "--older-than", "1s",
        "--silent-for", "1s",
        "--user", getpass.getuser(),
        "--host", socket.gethostname(),
        "--run", run_j2,
        "--trial", trial_j1,
    ]  # fmt: skip
    assert selected(world, *args) == {"run:j2", "trial:j1"}
    code, out, _ = invoke("close", "-f", "json", *stores(world), *args)
    assert code == 0
    plan = json.loads(out)
    assert {label(world, c) for c in plan["changes"]} == {"run:j2", "trial:j1"}
    assert plan["skipped"] == [] and plan["missing"] == []
    # each filter, changed alone, drops what it should
    for change, expected in (
        (["--older-than", "1h"], set()),
        (["--silent-for", "1h"], set()),
        (["--user", "nobody-here"], set()),
        (["--host", "no-such-host"], set()),
        (["-s", "s2"], set()),  # the named records are not in study s2
    ):
        changed = list(args)
        at = changed.index(change[0])
        changed[at + 1] = change[1]
        assert selected(world, *changed) == expected, change


def test_the_ids_tables_show_are_accepted(world: CrossedWorld) -> None:
    code, out, _ = invoke("scan", *stores(world), "-s", "s2")
    assert code == 0
    shown = world.run_id("j3")[:8]
    assert shown in out and "#" in out
    assert selected(world, "--run", shown) == {"run:j3"}
    assert selected(world, "--run", world.run_id("j3")) == {"run:j3"}
    assert selected(world, "--trial", f"s2:#{world.trial_number('j3')}") == {"trial:j3"}
    assert selected(world, "-s", "s2", "--trial", f"#{world.trial_number('j3')}") == {"trial:j3"}
    # the Markdown report shows whole run ids and #N: accepted as they are
    code, out, _ = invoke("scan", "-f", "markdown", *stores(world), "-s", "s2")
    assert code == 0
    assert f"`{world.run_id('j3')}`" in out and f"`#{world.trial_number('j3')}`" in out
    # the measured defect: `close --run d7fb5b7b` said "no unfinished record with this id"
    code, out, _ = invoke("close", "-f", "json", *stores(world), "--run", shown)
    assert code == 0
    assert [c["id"] for c in json.loads(out)["changes"]] == [world.run_id("j3")]


def test_an_ambiguous_id_is_a_usage_error_listing_the_candidates(world: CrossedWorld) -> None:
    code, out, err = invoke("close", *stores(world), "--trial", "0")  # trial 0 of every study
    assert code == 2, (out, err)
    assert "--trial #0 matches" in err
    for study in ("s1:0", "s2:0", "s3:0"):
        assert study in err
    assert "Traceback" not in out + err
    firsts = [world.run_id(j)[0] for j in ("j1", "j2", "j3", "j4", "j5")]
    shared = next((c for c in firsts if firsts.count(c) > 1), None)
    if shared is not None:
        code, _, err = invoke("scan", *stores(world), "--run", shared)
        assert code == 2
        assert f"--run {shared} matches" in err


def test_an_id_that_names_nothing_is_reported(world: CrossedWorld) -> None:
    code, out, _ = invoke("close", "-f", "json", *stores(world), "-s", "s2", "--run", "ffffffff")
    assert code == 0
    assert json.loads(out)["missing"] == ["ffffffff"]
    code, _, err = invoke("scan", *stores(world), "--trial", "s1:999")
    assert code == 0
    assert "s1:999: no unfinished record" in err


@pytest.mark.parametrize(
    ("args", "message", "hint"),
    [
        (["-s", "nosuch-study"], "--study 'nosuch-study': no study of that name", "studies: s1"),
        (["-e", "exp-q"], "--experiment 'exp-q': no experiment of that name", "'exp-a'"),
        (["-s", "s1", "-e", "expa"], "no experiment of that name", "did you mean 'exp-a'"),
    ],
)
@pytest.mark.parametrize("command", ["scan", "close", "declutter", "link", "watch"])
def test_an_unknown_name_is_a_usage_error_with_close_matches(
    world: CrossedWorld, command: str, args: list[str], message: str, hint: str
) -> None:
    once = ["--once"] if command == "watch" else []
    dry = ["--dry-run"] if command == "link" else []
    code, out, err = invoke(command, *stores(world), *once, *dry, *args)
    assert code == 2, (out, err)
    assert message in err and hint in err
    assert "Traceback" not in out + err
    code, out, _ = invoke(command, "-f", "json", *stores(world), *once, *dry, *args)
    assert code == 2
    error = json.loads(out)["error"]
    assert error["code"] == "usage" and message in error["message"] and hint in error["hint"]


def test_declutter_link_and_watch_select_alike(world: CrossedWorld) -> None:
    code, out, err = invoke("link", "--dry-run", "-f", "json", *stores(world), "-e", "exp-a")
    assert code == 0, err
    pairs = {(p["study"], p["trial_number"]) for p in json.loads(out)["pairs"]}
    assert pairs == {("s1", world.trial_number("j1")), ("s2", world.trial_number("j3"))}
    code, out, err = invoke(
        "link",
        "--dry-run",
        "-f",
        "json",
        *stores(world),
        "-s",
        "s1",
        "--run",
        world.run_id("j2")[:8],
    )
    assert code == 0, err
    assert [p["run_id"] for p in json.loads(out)["pairs"]] == [world.run_id("j2")]
    code, out, err = invoke("declutter", "-f", "json", *stores(world), "-s", "s3")
    assert code == 0, err
    assert [s["study"] for s in json.loads(out)["studies"]] == ["s3"]
    code, out, err = invoke(
        "watch", "--once", "-f", "json", "--stale-after", "1s", *stores(world), "-s", "s4"
    )
    assert code == 0, err
    subjects = {
        e["subject"]
        for e in json.loads(out)["events"]
        if (e.get("subject") or "").startswith(("run:", "trial:"))
    }
    assert subjects == {f"run:{world.run_id('j5')}", f"trial:{_trial_id(world, 'j5')}"}


def _trial_id(world: CrossedWorld, job: str) -> str:
    code, out, _ = invoke("scan", "-f", "json", *stores(world), "-s", _study(job))
    assert code == 0
    (trial,) = [
        r
        for r in json.loads(out)["records"]
        if r["kind"] == "optuna_trial" and r["trial_number"] == world.trial_number(job)
    ]
    return str(trial["id"])


def test_through_the_installed_entry_point(world: CrossedWorld) -> None:
    exe = Path(sys.executable).parent / "mltidy"
    done = subprocess.run(
        [str(exe), "close", "-f", "json", *stores(world), "-s", "s1"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert {label(world, c) for c in plan["changes"]} == {
        "trial:j1",
        "trial:j2",
        "run:j1",
        "run:j2",
    }
    done = subprocess.run(
        [str(exe), "scan", *stores(world), "-s", "nosuch-study"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 2
    assert "no study of that name" in done.stderr


def test_link_names_the_trials_without_a_run(world: CrossedWorld) -> None:
    number = world.trial_number("j6")
    code, out, err = invoke("link", "--dry-run", "-f", "json", *stores(world), "-s", "s5")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["trials_without_run"] == 1
    assert [(t["study"], t["trial_number"], t["state"]) for t in payload["without_run"]] == [
        ("s5", number, "RUNNING")
    ]
    code, out, err = invoke("link", "--dry-run", *stores(world), "-s", "s5")
    assert code == 0
    assert "Trials without a run" in out and f"#{number} running" in out
    assert "1 trials without a run" in err
