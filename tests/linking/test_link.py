"""``mltidy link`` on every convention in use, with real optuna-integration and real runs."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import mlflow
import optuna
import pytest
from optuna_dashboard._note import get_note_from_system_attrs, save_note_with_version
from typer.testing import CliRunner

from mltidy.cli.app import app
from mltidy.demo.jobs import create_stores, start_job

optuna.logging.set_verbosity(optuna.logging.WARNING)


class Lab:
    """Fresh MLflow and Optuna sqlite stores in a temporary folder."""

    def __init__(self, root: Path, name: str) -> None:
        self.root = root
        self.name = name
        self.mlflow_uri = f"sqlite:///{root / 'mlflow.db'}"
        self.optuna_url = f"sqlite:///{root / 'optuna.db'}"

    def link(self, *extra: str) -> tuple[int, dict[str, Any], str]:
        result = CliRunner().invoke(
            app,
            [
                "link",
                "-f",
                "json",
                "--mlflow",
                self.mlflow_uri,
                "--optuna",
                self.optuna_url,
                *extra,
            ],
        )
        return result.exit_code, json.loads(result.stdout or "{}"), result.stderr

    def study(self) -> optuna.Study:
        return optuna.load_study(study_name=self.name, storage=self.optuna_url)

    def note(self, trial: optuna.trial.FrozenTrial) -> str:
        study = self.study()
        attrs = study._storage.get_study_system_attrs(study._study_id)
        return str(get_note_from_system_attrs(attrs, trial._trial_id)["body"])

    def run(self, run_id: str) -> Any:
        return mlflow.MlflowClient(tracking_uri=self.mlflow_uri).get_run(run_id)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = Lab(tmp_path, "linking")
    mlflow.set_tracking_uri(made.mlflow_uri)
    try:
        yield made
    finally:
        mlflow.set_tracking_uri(None)


def _check_pair(lab: Lab, trial: optuna.trial.FrozenTrial, run_id: str) -> None:
    run = lab.run(run_id)
    url = f"http://127.0.0.1:5000/#/experiments/{run.info.experiment_id}/runs/{run_id}"
    assert trial.user_attrs["mlflow_run_url"] == url
    assert f"]({url})" in lab.note(trial)
    tags = run.data.tags
    assert tags["optuna.study_name"] == lab.name
    assert tags["optuna.trial_number"] == str(trial.number)
    assert tags["optuna.storage"] == lab.optuna_url
    dashboard = (
        f"http://127.0.0.1:8080/dashboard/studies/{lab.study()._study_id}"
        f"/trials?numbers={trial.number}"
    )
    assert tags["optuna.dashboard_url"] == dashboard
    assert f"]({dashboard})" in tags["mlflow.note.content"]


def test_tutorial_convention_both_ways_idempotent_and_user_text_kept(lab: Lab) -> None:
    create_stores(lab.mlflow_uri, lab.optuna_url, lab.name, lab.root / "artifacts")
    jobs = [
        start_job(
            mlflow_uri=lab.mlflow_uri,
            optuna_url=lab.optuna_url,
            study=lab.name,
            cwd=lab.root,
            epochs=2,
        )
        for _ in range(2)
    ]
    for job in jobs:
        job.wait_ready()
        assert job.wait() == 0
    study = lab.study()
    first = study.trials[0]
    save_note_with_version(study._storage, study._study_id, first._trial_id, 1, "my own note")
    run_id = str(first.user_attrs["mlflow_run_id"])
    mlflow.MlflowClient(lab.mlflow_uri).set_tag(run_id, "mlflow.note.content", "my description")

    code, report, err = lab.link()
    assert code == 0, err
    assert {p["status"] for p in report["pairs"]} == {"linked"}
    assert {p["how"] for p in report["pairs"]} == {"trial user attribute mlflow_run_id"}
    for trial in lab.study().trials:
        _check_pair(lab, trial, str(trial.user_attrs["mlflow_run_id"]))
    first = lab.study().trials[0]
    assert lab.note(first).startswith("my own note\n\n")
    assert lab.run(run_id).data.tags["mlflow.note.content"].startswith("my description\n\n")

    code, again, _ = lab.link()
    assert code == 0
    assert {p["status"] for p in again["pairs"]} == {"unchanged"}
    assert lab.note(lab.study().trials[0]).count("[//]: # (mltidy:link)") == 1


def test_dry_run_writes_nothing(lab: Lab) -> None:
    create_stores(lab.mlflow_uri, lab.optuna_url, lab.name, lab.root / "artifacts")
    job = start_job(
        mlflow_uri=lab.mlflow_uri, optuna_url=lab.optuna_url, study=lab.name, cwd=lab.root, epochs=2
    )
    job.wait_ready()
    job.wait()
    before = (lab.root / "mlflow.db").read_bytes(), (lab.root / "optuna.db").read_bytes()
    code, report, _ = lab.link("--dry-run")
    assert code == 0
    assert [p["status"] for p in report["pairs"]] == ["planned"]
    assert ((lab.root / "mlflow.db").read_bytes(), (lab.root / "optuna.db").read_bytes()) == before


def test_optuna_integration_track_in_mlflow_and_callback_conventions(lab: Lab) -> None:
    from optuna_integration.mlflow import MLflowCallback

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", -1, 1)
        return x * x

    # track_in_mlflow: the trial's system attribute mlflow_run_id.
    tracked = MLflowCallback(tracking_uri=lab.mlflow_uri, metric_name="loss")
    study = optuna.create_study(study_name="tracked", storage=lab.optuna_url)
    study.optimize(tracked.track_in_mlflow()(objective), n_trials=2, callbacks=[tracked])
    # MLflowCallback alone: runs named after trial numbers in an experiment named after the study.
    plain = MLflowCallback(tracking_uri=lab.mlflow_uri, metric_name="loss")
    study = optuna.create_study(study_name="callback", storage=lab.optuna_url)
    study.optimize(objective, n_trials=2, callbacks=[plain])

    code, report, err = lab.link()
    assert code == 0, err
    how = {(p["study"], p["trial_number"]): p["how"] for p in report["pairs"]}
    assert how[("tracked", 0)].startswith("trial system attribute")
    assert how[("callback", 0)] in (
        "optuna-integration MLflowCallback run (study name and trial number)",
        "run tagged by mltidy's MLflow plugin",
    )
    assert len(how) == 4
    for name in ("tracked", "callback"):
        lab.name = name
        for trial in lab.study().trials:
            pair = next(
                p
                for p in report["pairs"]
                if (p["study"], p["trial_number"]) == (name, trial.number)
            )
            _check_pair(lab, trial, pair["run_id"])


def test_a_trial_killed_before_it_wrote_mlflow_run_id_is_linked_through_the_plugin(
    lab: Lab,
) -> None:
    create_stores(lab.mlflow_uri, lab.optuna_url, lab.name, lab.root / "artifacts")
    job = start_job(
        mlflow_uri=lab.mlflow_uri,
        optuna_url=lab.optuna_url,
        study=lab.name,
        cwd=lab.root,
        epochs=1000,
        extra=["--link", "late"],
    )
    job.wait_ready()
    job.kill(signal.SIGKILL)
    code, report, err = lab.link()
    assert code == 0, err
    (pair,) = report["pairs"]
    assert pair["how"] == "run tagged by mltidy's MLflow plugin"
    assert pair["run_id"] == job.run_id
    trial = lab.study().trials[0]
    assert "mlflow_run_id" not in trial.user_attrs
    _check_pair(lab, trial, str(job.run_id))


def test_ambiguous_candidates_are_reported_not_guessed(lab: Lab) -> None:
    study = optuna.create_study(study_name=lab.name, storage=lab.optuna_url)
    trial = study.ask()
    client = mlflow.MlflowClient(lab.mlflow_uri)
    experiment = client.create_experiment("elsewhere")
    tags = {
        "mltidy.optuna.study": lab.name,
        "mltidy.optuna.trial_id": str(trial._trial_id),
        "mltidy.optuna.trial_number": "0",
    }
    for _ in range(2):
        client.create_run(experiment, tags=tags)
    code, report, _ = lab.link()
    assert code == 0
    assert report["pairs"] == []
    (unclear,) = report["unmatched"]
    assert unclear["why"].startswith("2 candidate runs")


def test_live_linking_while_the_study_runs(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    from mltidy.provenance import track

    monkeypatch.setenv("MLTIDY_DASHBOARD_URL", "http://dash.local:8080")
    mlflow.set_experiment("live")
    seen: list[str] = []

    @track(link=True)
    def objective(trial: optuna.Trial) -> float:
        with mlflow.start_run() as run:
            seen.append(run.info.run_id)
            mlflow.log_metric("loss", 1.0)
        return 1.0

    study = optuna.create_study(study_name=lab.name, storage=lab.optuna_url)
    study.optimize(objective, n_trials=2)
    for trial, run_id in zip(study.trials, seen, strict=True):
        assert trial.user_attrs["mlflow_run_url"].endswith(f"/runs/{run_id}")
        tags = lab.run(run_id).data.tags
        assert tags["optuna.trial_number"] == str(trial.number)
        assert tags["optuna.dashboard_url"].startswith("http://dash.local:8080/dashboard/")
        assert run_id in lab.note(trial)
    code, report, _ = lab.link("--dashboard-url", "http://dash.local:8080")
    assert code == 0
    assert {p["status"] for p in report["pairs"]} == {"unchanged"}
    assert os.environ["MLTIDY_DASHBOARD_URL"] == "http://dash.local:8080"


_CALLBACK_STUDY = """
import sys, optuna
from optuna_integration.mlflow import MLflowCallback
optuna.logging.set_verbosity(optuna.logging.WARNING)
mlflow_uri, storage = sys.argv[1], sys.argv[2]
callback = MLflowCallback(tracking_uri=mlflow_uri, metric_name="loss")
study = optuna.create_study(study_name="zoned", storage=storage)
study.optimize(lambda t: t.suggest_float("x", -1, 1) ** 2, n_trials=2, callbacks=[callback])
"""


def test_callback_runs_written_in_one_zone_are_linked_in_another(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """MLflowCallback writes datetime_start as naive local text of the job (Tokyo here); link
    runs in Los Angeles. Study name and trial number pair them; two storages holding a study
    of the same name (runs of both in one experiment) are told apart by datetime_start, read at
    whatever offset explains it."""
    import subprocess
    import sys
    import time

    mlflow_uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    storages = [f"sqlite:///{tmp_path / name}" for name in ("first.db", "second.db")]
    env = {**os.environ, "TZ": "Asia/Tokyo", "MLTIDY_PROVENANCE": "0", "MLTIDY_OPTUNA_DETECT": "0"}
    for storage in storages:
        subprocess.run(
            [sys.executable, "-c", _CALLBACK_STUDY, mlflow_uri, storage],
            env=env,
            check=True,
            timeout=300,
            capture_output=True,
        )
    monkeypatch.setenv("TZ", "America/Los_Angeles")
    time.tzset()
    try:
        result = CliRunner().invoke(
            app,
            ["link", "-f", "json", "--mlflow", mlflow_uri]
            + [arg for storage in storages for arg in ("--optuna", storage)],
        )
    finally:
        monkeypatch.undo()
        time.tzset()
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["unmatched"] == [] and report["trials_without_run"] == 0
    pairs = report["pairs"]
    assert len(pairs) == 4 and len({p["run_id"] for p in pairs}) == 4
    assert {p["how"] for p in pairs} == {
        "optuna-integration MLflowCallback run (study name, trial number and datetime_start)"
    }
    client = mlflow.MlflowClient(tracking_uri=mlflow_uri)
    tokyo = ZoneInfo("Asia/Tokyo")
    for pair in pairs:
        run = client.get_run(pair["run_id"])
        assert run.data.tags["number"] == str(pair["trial_number"])
        storage = next(s for s in storages if s.endswith(Path(pair["optuna_store"]).name))
        trial = optuna.load_study(study_name="zoned", storage=storage).trials[pair["trial_number"]]
        # optuna 5 hands back naive local time of this process: the instant, in Tokyo.
        start = trial.datetime_start.astimezone(tokyo).replace(tzinfo=None)
        assert run.data.tags["datetime_start"] == str(start)


def test_a_callback_run_whose_start_no_offset_explains_is_reported() -> None:
    from datetime import datetime, timezone

    from mltidy.linking.pairing import CandidateRuns, match
    from mltidy.model import RunRef, StoreId, TrialRef

    trial = TrialRef(
        store=StoreId("sqlite:///o.db"),
        study="s",
        study_id="1",
        trial_id="4",
        number=3,
        state="FAIL",
        started_at=datetime(2026, 1, 1, 3, 0, 0, tzinfo=timezone.utc),
        run_id_user_attr=None,
        run_id_system_attr=None,
        run_url=None,
        note="",
    )

    def run(run_id: str, start: str) -> RunRef:
        tags = {"number": "3", "datetime_start": start}
        return RunRef(StoreId("sqlite:///m.db"), run_id, run_id, "1", "s", tags)

    runs = CandidateRuns()
    runs.add(run("a" * 32, "2026-01-01 12:00:00"))  # Tokyo: the trial's start
    found = match(trial, runs)
    assert found is not None and found.__class__.__name__ == "Pair"
    odd = CandidateRuns()
    odd.add(run("b" * 32, "2026-01-01 12:07:31"))  # no UTC offset makes this 03:00:00
    reported = match(trial, odd)
    assert reported is not None and reported.__class__.__name__ == "Unmatched"
    assert "not this trial's start at any UTC offset" in reported.why  # type: ignore[union-attr]
    both = CandidateRuns()
    both.add(run("a" * 32, "2026-01-01 12:00:00"))
    both.add(run("c" * 32, "2026-01-01 12:00:09"))
    tied = match(trial, both)
    assert tied is not None and getattr(tied, "run", None) is not None
    assert tied.run.run_id == "a" * 32  # type: ignore[union-attr]
