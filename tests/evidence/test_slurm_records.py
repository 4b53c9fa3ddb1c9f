"""SLURM jobs that log to MLflow and Optuna, judged and closed from a host that is not their node.

Real jobs submitted with ``sbatch`` to the real single-node SLURM of the fixtures; mltidy judges
them as a login node would: the facts probe says this is another host, so no process lookup can
help, and only the scheduler can make a verdict certain.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from mltidy import close, names
from mltidy.backends.identity import store_spec
from mltidy.backends.session import StoreSession
from mltidy.demo.jobs import create_stores
from mltidy.evidence.local import StaticFacts
from mltidy.judge import Policy
from mltidy.model import Basis, JudgedRecord, RecordKind, Selection, StoreKind, VerdictKind, utc_now
from mltidy.scan import collect, iter_scan
from slurm_cluster import SlurmCluster

pytestmark = pytest.mark.slurm

LOGIN_NODE = StaticFacts(host="login-node")


@dataclass
class Cluster:
    """The test's stores and SLURM, and how to submit a training job to it."""

    slurm: SlurmCluster
    root: Path
    mlflow_uri: str
    optuna_url: str
    study: str

    def submit(self, *sbatch_args: str, command: str | None = None, epochs: int = 100000) -> str:
        """A training job (one trial, one MLflow run, a metric every 0.3 s); its job id."""
        worker = command or (
            f"{sys.executable} -m mltidy.demo.worker --mlflow {self.mlflow_uri} "
            f"--optuna {self.optuna_url} --study {self.study} --epochs {epochs} "
            "--epoch-seconds 0.3"
        )
        return self.slurm.sbatch(*sbatch_args, wrap=worker)

    def wait_ready(self, job: str, timeout: float = 90.0) -> None:
        """Until the job's training logged its first metric (the worker says ``ready``)."""
        out = self.slurm.job_dir / f"{job}.out"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if out.exists() and "ready " in out.read_text(errors="replace"):
                return
            time.sleep(0.2)
        text = out.read_text(errors="replace") if out.exists() else "(no output)"
        raise TimeoutError(f"job {job} never got ready; state {self.slurm.state(job)}\n{text}")

    def specs(self) -> list:  # type: ignore[type-arg]
        return [
            store_spec(StoreKind.MLFLOW, self.mlflow_uri, "test"),
            store_spec(StoreKind.OPTUNA, self.optuna_url, "test"),
        ]

    def records(self, job: str) -> list[JudgedRecord]:
        """The job's unfinished records, judged from the login node."""
        with StoreSession(self.specs()) as session:
            result = collect(iter_scan(session, Selection(), Policy(now=utc_now()), LOGIN_NODE))
        assert all(s.ok for s in result.stores)
        return [r for r in result.records if r.record.tags.get(names.SLURM_JOB_ID) == job]


@pytest.fixture(scope="module", autouse=True)
def time_limited(
    slurm_cluster: SlurmCluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[SlurmCluster, str, str]]:
    """A training job with a 1-minute time limit, submitted as the module starts, so that its
    wait overlaps the other tests; the last test checks it timed out."""
    root = tmp_path_factory.mktemp("time-limited")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    create_stores(uri, f"sqlite:///{root / 'optuna.db'}", "limited", root / "artifacts")
    command = _training_then("time.sleep(600)", uri, "limited")
    job = slurm_cluster.sbatch("--time=1", wrap=command)
    yield slurm_cluster, job, uri
    slurm_cluster.run("scancel", job, check=False)


@pytest.fixture
def cluster(slurm: SlurmCluster, tmp_path: Path) -> Iterator[Cluster]:
    study = f"slurm-{time.monotonic_ns() % 10**8}"
    made = Cluster(
        slurm,
        tmp_path,
        f"sqlite:///{tmp_path / 'mlflow.db'}",
        f"sqlite:///{tmp_path / 'optuna.db'}",
        study,
    )
    create_stores(made.mlflow_uri, made.optuna_url, study, tmp_path / "artifacts")
    yield made


def _by_kind(records: list[JudgedRecord]) -> dict[RecordKind, JudgedRecord]:
    found = {r.record.kind: r for r in records}
    assert set(found) == {RecordKind.MLFLOW_RUN, RecordKind.OPTUNA_TRIAL}, records
    return found


def test_a_running_job_is_alive_and_a_cancelled_one_dead_from_another_host(
    cluster: Cluster,
) -> None:
    job = cluster.submit()
    cluster.wait_ready(job)
    running = _by_kind(cluster.records(job))
    for item in running.values():
        assert item.verdict.kind is VerdictKind.ALIVE, item.verdict
        assert item.verdict.basis is Basis.SCHEDULER
        assert f"SLURM job {job} is RUNNING" in item.verdict.reason
    cluster.slurm.scancel(job)
    cluster.slurm.wait_for(job, {"CANCELLED"})
    dead = _by_kind(cluster.records(job))
    for item in dead.values():
        assert item.verdict.kind is VerdictKind.DEAD, item.verdict
        assert f"SLURM job {job} ended CANCELLED" in item.verdict.reason
        assert item.verdict.ended_at is not None
    # Closing from the login node: certain, so `close --yes` closes both, ending at the job's end.
    with StoreSession(cluster.specs()) as session:
        report = close.plan(
            session, Selection(), Policy(now=utc_now()), LOGIN_NODE, close.CloseOptions()
        )
        mine = [c for c in report.changes if c.item.record.tags.get(names.SLURM_JOB_ID) == job]
        assert len(mine) == 2
        done = close.apply(session, report, close.CloseOptions())
    closed = [c for c in done.changes if c.item.record.tags.get(names.SLURM_JOB_ID) == job]
    assert [c.outcome for c in closed] == [close.Outcome.CLOSED] * 2
    ended = dead[RecordKind.MLFLOW_RUN].verdict.ended_at
    assert ended is not None
    for change in closed:
        assert change.end_time >= (change.item.record.last_activity_at or ended)
    assert cluster.records(job) == []


def test_a_job_that_completed_without_ending_its_run_is_dead(cluster: Cluster) -> None:
    command = (
        f"{sys.executable} -m mltidy.demo.worker --mlflow {cluster.mlflow_uri} "
        f"--optuna {cluster.optuna_url} --study {cluster.study} --epochs 1000 "
        "--exit-after-ready 0"
    )
    job = cluster.submit(command=command)
    cluster.slurm.wait_for(job, {"COMPLETED"}, timeout=90)
    for item in _by_kind(cluster.records(job)).values():
        assert item.verdict.kind is VerdictKind.DEAD
        assert f"SLURM job {job} ended COMPLETED" in item.verdict.reason


def test_when_slurm_cannot_be_asked_the_other_evidence_decides_and_says_why(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = cluster.submit()
    cluster.wait_ready(job)
    try:
        monkeypatch.setenv("SLURM_CONF", str(cluster.slurm.dead_controller_conf()))
        records = _by_kind(cluster.records(job))
        for item in records.values():
            assert item.verdict.kind is VerdictKind.ACTIVE  # recent metrics, no proof of life
            assert "SLURM" in item.verdict.reason
    finally:
        cluster.slurm.scancel(job)


def _mltidy() -> str:
    return str(Path(sys.executable).with_name("mltidy"))


@pytest.mark.parametrize("launcher", ["sbatch", "srun"])
def test_mltidy_run_in_a_batch_job_closes_on_scancel(cluster: Cluster, launcher: str) -> None:
    worker = (
        f"{sys.executable} -m mltidy.demo.worker --mlflow {cluster.mlflow_uri} "
        f"--optuna {cluster.optuna_url} --study {cluster.study} --epochs 100000 "
        "--epoch-seconds 0.3"
    )
    stores = f"--mlflow {cluster.mlflow_uri} --optuna {cluster.optuna_url}"
    supervised = f"{_mltidy()} run {stores} -- {worker}"
    command = supervised if launcher == "sbatch" else f"srun {supervised}"
    job = cluster.submit(command=command)
    cluster.wait_ready(job)
    cluster.slurm.scancel(job)
    cluster.slurm.wait_for(job, lambda state: state not in ("RUNNING", "COMPLETING", None))
    deadline = time.monotonic() + 30
    while cluster.records(job) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert cluster.records(job) == []  # the supervisor closed the run and the trial
    out = (cluster.slurm.job_dir / f"{job}.out").read_text(errors="replace")
    assert "cancelled by the scheduler" in out, out
    runs = [
        r
        for r in _all_runs(cluster)
        if r.get(names.SLURM_JOB_ID) == job and names.CLOSED_REASON in r
    ]
    assert runs and "cancelled by the scheduler" in runs[0][names.CLOSED_REASON]


def _all_runs(cluster: Cluster) -> list[dict[str, str]]:
    """Every run's tags (read with MLflow's own client, as a person would check)."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, sys, mlflow; c = mlflow.MlflowClient(sys.argv[1]); "
            "e = c.get_experiment_by_name(sys.argv[2]); "
            "print(json.dumps([r.data.tags for r in c.search_runs([e.experiment_id])]))",
            cluster.mlflow_uri,
            cluster.study,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "MLFLOW_ALLOW_FILE_STORE": "true"},
    )
    return list(json.loads(done.stdout))


def _training_then(action: str, mlflow_uri: str, study: str) -> str:
    """A job that opens an MLflow run, logs a metric, says ``ready``, then does ``action``."""
    code = (
        "import mlflow, time; "
        f"mlflow.set_tracking_uri('{mlflow_uri}'); mlflow.set_experiment('{study}'); "
        "mlflow.start_run(); mlflow.log_metric('loss', 1.0); print('ready -', flush=True); "
        f"{action}"
    )
    return f'{sys.executable} -c "{code}"'


def _runs_of(mlflow_uri: str, job: str) -> list[JudgedRecord]:
    specs = [store_spec(StoreKind.MLFLOW, mlflow_uri, "test")]
    with StoreSession(specs) as session:
        result = collect(iter_scan(session, Selection(), Policy(now=utc_now()), LOGIN_NODE))
    return [r for r in result.records if r.record.tags.get(names.SLURM_JOB_ID) == job]


def test_a_run_whose_job_was_killed_for_memory_is_dead(
    slurm_oom_cluster: SlurmCluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(slurm_oom_cluster.conf))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    create_stores(uri, f"sqlite:///{tmp_path / 'optuna.db'}", "oom", tmp_path / "artifacts")
    command = _training_then("x = bytearray(900 << 20); time.sleep(60)", uri, "oom")
    job = slurm_oom_cluster.sbatch("--mem=300M", wrap=command)
    slurm_oom_cluster.wait_for(job, {"OUT_OF_MEMORY"}, timeout=120)
    (run,) = _runs_of(uri, job)
    assert run.verdict.kind is VerdictKind.DEAD
    assert f"SLURM job {job} ended OUT_OF_MEMORY" in run.verdict.reason


def test_a_run_whose_job_hit_its_time_limit_is_dead(
    time_limited: tuple[SlurmCluster, str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Last in this module: the job was submitted when the module started (time_limited), and
    SLURM checks time limits every 30 s, so a 1-minute limit ends it within ~90 s."""
    slurm, job, uri = time_limited
    monkeypatch.setenv("SLURM_CONF", str(slurm.conf))
    slurm.wait_for(job, {"TIMEOUT"}, timeout=180)
    (run,) = _runs_of(uri, job)
    assert run.verdict.kind is VerdictKind.DEAD
    assert f"SLURM job {job} ended TIMEOUT" in run.verdict.reason
