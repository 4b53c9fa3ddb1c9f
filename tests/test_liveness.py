"""Liveness with evidence, on real processes: alive while running, dead after a real death.

The jobs are real Python processes with mltidy's MLflow plugin active (mltidy is installed in
the test environment, so every ``mlflow.start_run`` carries provenance) or with the Optuna
opt-ins; they die by SIGKILL, SIGTERM and ``os._exit``.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import mlflow
import psutil
import pytest

from mltidy.backends import Selection
from mltidy.backends.identity import store_spec
from mltidy.backends.session import StoreSession
from mltidy.demo.jobs import Job, create_stores, start_job
from mltidy.evidence.local import LocalProbe, StaticFacts
from mltidy.judge import Policy
from mltidy.model import JudgedRecord, RecordKind, StoreKind, StoreSpec, VerdictKind, utc_now
from mltidy.provenance.facts import read_boot_id
from mltidy.scan import ScanResult, collect, iter_scan

STUDY = "liveness"


def _scan(specs: list[StoreSpec], *args: Any, **kwargs: Any) -> ScanResult:
    """mltidy's scan over a session of these stores."""
    with StoreSession(specs) as session:
        return collect(iter_scan(session, *args, **kwargs))


class Lab:
    """An MLflow and an Optuna sqlite store, and jobs started against them."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mlflow_uri = f"sqlite:///{root / 'mlflow.db'}"
        self.optuna_url = f"sqlite:///{root / 'optuna.db'}"
        create_stores(self.mlflow_uri, self.optuna_url, STUDY, root / "artifacts")

    def start(self, *extra: str, mlflow_on: bool = True, env: dict[str, str] | None = None) -> Job:
        return start_job(
            mlflow_uri=self.mlflow_uri if mlflow_on else None,
            optuna_url=self.optuna_url,
            study=STUDY,
            cwd=self.root,
            epochs=2000,
            epoch_seconds=0.2,
            env=env,
            extra=list(extra),
        )

    def scan(self, stale_after: str = "1h", facts: object | None = None) -> list[JudgedRecord]:
        seconds = {"1s": 1, "2s": 2, "1h": 3600}[stale_after]
        specs = [
            store_spec(StoreKind.MLFLOW, self.mlflow_uri, "test"),
            store_spec(StoreKind.OPTUNA, self.optuna_url, "test"),
        ]
        policy = Policy(now=utc_now(), stale_after=timedelta(seconds=seconds))
        result = _scan(specs, Selection(), policy, facts or LocalProbe())  # type: ignore[arg-type]
        assert all(s.ok for s in result.stores)
        return list(result.records)


def _run_of(records: list[JudgedRecord], job: Job) -> JudgedRecord:
    return next(r for r in records if r.record.id == job.run_id)


def _trial_of(records: list[JudgedRecord], job: Job) -> JudgedRecord:
    return next(
        r
        for r in records
        if r.record.kind is RecordKind.OPTUNA_TRIAL and r.record.trial_number == job.trial_number
    )


def _ready(*jobs: Job) -> None:
    with ThreadPoolExecutor(len(jobs)) as pool:
        list(pool.map(lambda job: job.wait_ready(), jobs))


@pytest.fixture
def lab(tmp_path: Path) -> Lab:
    return Lab(tmp_path)


def test_alive_while_silent_then_dead_after_sigkill_sigterm_and_os_exit(lab: Lab) -> None:
    quiet_a = lab.start("--quiet")
    quiet_b = lab.start("--quiet")
    exits = lab.start("--exit-after-ready", "1")
    try:
        _ready(quiet_a, quiet_b, exits)
        time.sleep(2.5)  # longer than --stale-after 1s without a metric
        records = lab.scan("1s")
        for job in (quiet_a, quiet_b):
            for found in (_run_of(records, job), _trial_of(records, job)):
                assert found.verdict.kind is VerdictKind.ALIVE, found.verdict.reason
                assert f"process {job.pid} " in found.verdict.reason
        exits.wait(timeout=60)
        quiet_a.kill(signal.SIGKILL)
        quiet_b.kill(signal.SIGTERM)
        records = lab.scan("1h")  # dead is certain: no waiting for staleness
        host = socket.gethostname()
        for job in (quiet_a, quiet_b, exits):
            run, trial = _run_of(records, job), _trial_of(records, job)
            assert run.verdict.kind is VerdictKind.DEAD, run.verdict.reason
            assert run.verdict.reason.startswith(f"process {job.pid} (")
            assert run.verdict.reason.endswith(f"no longer exists on {host}")
            assert trial.verdict.kind is VerdictKind.DEAD
            assert trial.verdict.reason.startswith(f"its MLflow run {str(job.run_id)[:8]}: ")
    finally:
        for job in (quiet_a, quiet_b, exits):
            job.kill(signal.SIGKILL)


def test_finished_jobs_are_not_listed(lab: Lab) -> None:
    job = start_job(
        mlflow_uri=lab.mlflow_uri,
        optuna_url=lab.optuna_url,
        study=STUDY,
        cwd=lab.root,
        epochs=2,
    )
    job.wait_ready()
    assert job.wait() == 0
    assert lab.scan() == []


def _live_sleeper() -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])


def _hand_made_run(lab: Lab, tags: dict[str, str]) -> str:
    """A RUNNING run created through MLflow with provenance written by hand."""
    client = mlflow.MlflowClient(tracking_uri=lab.mlflow_uri)
    experiment = client.get_experiment_by_name(STUDY)
    assert experiment is not None
    run = client.create_run(experiment.experiment_id, tags=tags)
    return str(run.info.run_id)


def test_a_reused_pid_is_dead(lab: Lab) -> None:
    sleeper = _live_sleeper()
    try:
        started = psutil.Process(sleeper.pid).create_time()
        facts = {
            "mltidy.host": socket.gethostname(),
            "mltidy.pid": str(sleeper.pid),
            "mltidy.cmd": "python train.py",
        }
        reused = _hand_made_run(lab, {**facts, "mltidy.pid_start": f"{started - 500:.2f}"})
        same = _hand_made_run(lab, {**facts, "mltidy.pid_start": f"{started:.2f}"})
        records = {r.record.id: r.verdict for r in lab.scan()}
        assert records[reused].kind is VerdictKind.DEAD
        assert "now belongs to another process" in records[reused].reason
        assert records[same].kind is VerdictKind.ALIVE
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_reboot_is_dead(lab: Lab) -> None:
    if read_boot_id() is None:
        pytest.skip("this kernel has no boot id")
    run_id = _hand_made_run(
        lab,
        {
            "mltidy.host": socket.gethostname(),
            "mltidy.boot_id": "00000000-0000-0000-0000-000000000000",
            "mltidy.pid": str(os.getpid()),
        },
    )
    (found,) = [r for r in lab.scan() if r.record.id == run_id]
    assert found.verdict.kind is VerdictKind.DEAD
    assert "rebooted" in found.verdict.reason


def test_another_hosts_record_needs_a_heartbeat_gap(lab: Lab) -> None:
    fresh = (datetime.now(timezone.utc) - timedelta(seconds=5)).isoformat(timespec="seconds")
    old = (datetime.now(timezone.utc) - timedelta(hours=3)).isoformat(timespec="seconds")
    remote = {"mltidy.host": "gpu-elsewhere", "mltidy.pid": "1", "mltidy.pid_start": "1.00"}
    beating = _hand_made_run(lab, {**remote, "mltidy.heartbeat_at": fresh})
    silent = _hand_made_run(lab, {**remote, "mltidy.heartbeat_at": old})
    records = {r.record.id: r.verdict for r in lab.scan()}
    assert records[beating].kind is VerdictKind.ALIVE
    assert records[beating].reason.endswith("from gpu-elsewhere")
    assert records[silent].kind is VerdictKind.STALE
    assert records[silent].reason.startswith(
        "its heartbeat stopped: last beat 3 h ago from gpu-elsewhere"
    )


@pytest.mark.parametrize("optin", ["track", "record"])
def test_optuna_opt_ins_without_mlflow(tmp_path: Path, optin: str) -> None:
    journal = str(tmp_path / "journal.log")
    create_journal = start_job(
        mlflow_uri=None,
        optuna_url=journal,
        study=STUDY,
        cwd=tmp_path,
        epochs=2000,
        extra=["--provenance", optin],
    )
    try:
        create_journal.wait_ready()
        spec = store_spec(StoreKind.OPTUNA, journal, "test")
        before = _scan([spec], Selection(), Policy(now=utc_now()), LocalProbe()).records
        assert [r.verdict.kind for r in before] == [VerdictKind.ALIVE]
        create_journal.kill(signal.SIGKILL)
        after = _scan([spec], Selection(), Policy(now=utc_now()), LocalProbe()).records
        (trial,) = after
        assert trial.verdict.kind is VerdictKind.DEAD
        assert trial.verdict.reason.startswith(f"process {create_journal.pid} ")
        assert trial.record.evidence_from is None
    finally:
        create_journal.kill(signal.SIGKILL)


def test_a_trial_killed_before_it_wrote_mlflow_run_id_is_dead(lab: Lab) -> None:
    job = lab.start("--link", "late")
    try:
        job.wait_ready()
        job.kill(signal.SIGKILL)
        records = lab.scan()
        trial = _trial_of(records, job)
        assert "mlflow_run_id" not in trial.record.tags
        assert trial.record.evidence_from == job.run_id
        assert trial.verdict.kind is VerdictKind.DEAD
    finally:
        job.kill(signal.SIGKILL)


def test_the_mlflow_heartbeat_proves_life_across_hosts(lab: Lab) -> None:
    job = lab.start("--quiet", env={"MLTIDY_HEARTBEAT": "1"})
    elsewhere = StaticFacts(host="another-host")
    try:
        job.wait_ready()
        time.sleep(3)
        run = _run_of(lab.scan("2s", elsewhere), job)
        assert run.record.tags.get("mltidy.heartbeat_at")
        assert run.verdict.kind is VerdictKind.ALIVE
        assert run.verdict.reason.startswith("mltidy heartbeat")
        job.kill(signal.SIGKILL)
        time.sleep(6)  # beats every 1 s: stale after 3 missed beats and 1 s of slack
        run = _run_of(lab.scan("2s", elsewhere), job)
        assert run.verdict.kind is VerdictKind.STALE
    finally:
        job.kill(signal.SIGKILL)


def test_the_plugin_never_breaks_a_run(lab: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    from mltidy.provenance import mlflow_plugin

    def broken() -> dict[str, str]:
        raise RuntimeError("probe exploded")

    monkeypatch.setattr(mlflow_plugin, "process_facts", broken)
    mlflow.set_tracking_uri(lab.mlflow_uri)
    try:
        with mlflow.start_run(experiment_id=_experiment_id(lab)) as run:
            mlflow.log_metric("loss", 1.0)
        tags = mlflow.MlflowClient(lab.mlflow_uri).get_run(run.info.run_id).data.tags
        assert run.info.run_id
        assert not any(key.startswith("mltidy.") for key in tags)
    finally:
        mlflow.set_tracking_uri(None)


def test_the_plugin_tags_runs_and_can_be_switched_off(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    mlflow.set_tracking_uri(lab.mlflow_uri)
    client = mlflow.MlflowClient(lab.mlflow_uri)
    try:
        with mlflow.start_run(experiment_id=_experiment_id(lab)) as on:
            pass
        monkeypatch.setenv("MLTIDY_PROVENANCE", "0")
        with mlflow.start_run(experiment_id=_experiment_id(lab)) as off:
            pass
    finally:
        mlflow.set_tracking_uri(None)
    tags = client.get_run(on.info.run_id).data.tags
    assert tags["mltidy.pid"] == str(os.getpid())
    assert tags["mltidy.host"] == socket.gethostname()
    assert float(tags["mltidy.pid_start"]) == pytest.approx(
        psutil.Process().create_time(), abs=0.02
    )
    assert not any(k.startswith("mltidy.") for k in client.get_run(off.info.run_id).data.tags)


def test_optuna_trial_detection_can_be_switched_off(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    import optuna

    study = optuna.load_study(study_name=STUDY, storage=lab.optuna_url)
    mlflow.set_tracking_uri(lab.mlflow_uri)
    client = mlflow.MlflowClient(lab.mlflow_uri)
    runs: list[str] = []

    def objective(trial: optuna.Trial) -> float:
        with mlflow.start_run(experiment_id=_experiment_id(lab)) as run:
            runs.append(run.info.run_id)
        return 1.0

    try:
        study.optimize(objective, n_trials=1)
        monkeypatch.setenv("MLTIDY_OPTUNA_DETECT", "0")
        study.optimize(objective, n_trials=1)
    finally:
        mlflow.set_tracking_uri(None)
    detected = client.get_run(runs[0]).data.tags
    assert detected["mltidy.optuna.study"] == STUDY
    assert detected["mltidy.optuna.trial_number"] == "0"
    assert "mltidy.optuna.study" not in client.get_run(runs[1]).data.tags


def test_the_optuna_heartbeat_writes_a_system_attribute(tmp_path: Path) -> None:
    import optuna

    from mltidy.provenance import track

    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 'o.db'}")
    seen: list[str] = []

    @track(heartbeat=1)
    def objective(trial: optuna.Trial) -> float:
        time.sleep(2.5)
        attrs = study._storage.get_trial_system_attrs(trial._trial_id)
        seen.append(attrs.get("mltidy.heartbeat_at", ""))
        assert attrs["mltidy.pid"] == str(os.getpid())
        return 1.0

    study.optimize(objective, n_trials=1)
    assert seen and seen[0]


def test_this_host_judges_only_this_hosts_records(
    lab: Lab, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from mltidy.cli.app import app

    mine = _hand_made_run(lab, {"mltidy.host": socket.gethostname(), "mltidy.pid": "999999"})
    theirs = _hand_made_run(lab, {"mltidy.host": "gpu-elsewhere", "mltidy.pid": "1"})
    bare = _hand_made_run(lab, {})
    monkeypatch.chdir(lab.root)
    result = CliRunner().invoke(app, ["scan", "--this-host", "-f", "jsonl"])
    ids = [line.split('"id": "')[1].split('"')[0] for line in result.stdout.splitlines()]
    assert mine in ids
    assert theirs not in ids and bare not in ids


def _experiment_id(lab: Lab) -> str:
    experiment = mlflow.MlflowClient(lab.mlflow_uri).get_experiment_by_name(STUDY)
    assert experiment is not None
    return str(experiment.experiment_id)


def test_optunas_own_heartbeat_counts_as_activity(tmp_path: Path) -> None:
    """A trial of ``RDBStorage(heartbeat_interval=1)`` beats in ``trial_heartbeats``; without
    provenance it is alive while it beats and stale once silent."""
    url = f"sqlite:///{tmp_path / 'optuna.db'}"
    job = start_job(
        mlflow_uri=None,
        optuna_url=url,
        study=STUDY,
        cwd=tmp_path,
        epochs=2000,
        heartbeat=1,
    )
    spec = [store_spec(StoreKind.OPTUNA, url, "test")]
    elsewhere = StaticFacts(host="another-host")
    try:
        job.wait_ready()
        time.sleep(2.5)
        policy = Policy(now=utc_now(), stale_after=timedelta(seconds=2))
        (trial,) = _scan(spec, Selection(), policy, elsewhere).records
        assert trial.record.last_activity_at is not None
        assert trial.verdict.kind is VerdictKind.ALIVE
        assert trial.verdict.reason.startswith("Optuna heartbeat")
        job.kill(signal.SIGKILL)
        time.sleep(3.5)
        policy = Policy(now=utc_now(), stale_after=timedelta(seconds=2))
        (trial,) = _scan(spec, Selection(), policy, elsewhere).records
        assert trial.verdict.kind is VerdictKind.STALE
    finally:
        job.kill(signal.SIGKILL)
