"""Jobs as most users run them: in an environment without mltidy, killed for real.

The jobs run ``field_jobs/train.py`` (an MLflow run per Optuna trial, a metric per epoch, the
run id stored in the trial first thing) with the python of a side venv that has mlflow and
optuna but no mltidy (``side_venvs.py``), so nothing writes provenance. What mltidy can still
tell from the stores alone, measured:

* **Verdict progression and time to stale**: two jobs log every 2 s, one is SIGKILLed and one
  SIGTERMed; scanned every 2 s, each run (and its trial, through ``mlflow_run_id``) is
  ``active`` until the rhythm rule calls it ``stale``: 2 minutes after its last metric (the
  floor; its longest pause was 2 s). The seconds from the signal to ``stale`` are printed and
  kept in docs/provenance.md.
* **The cadence rule on irregular jobs**: four living jobs with jittered, bimodal, once-3x and
  slowing pauses, scanned every half second with the rule's floor scaled down with them (the
  jobs pause for tenths of a second, not minutes; the rule is the same at every scale apart
  from its floor). Every verdict of a living job that says ``stale`` is a false stale; the rate
  is printed and kept in docs/provenance.md.
* ``close --include-stale`` leaves records stale by rhythm alone unless ``--rhythm`` is given;
  ``--this-host`` says what it left out; ``mltidy run -- <side python> train.py`` closes what
  its SIGKILLed job left, run and trial.
"""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

import mlflow
import optuna
import pytest
from typer.testing import CliRunner

import mltidy
from mltidy.backends.identity import store_spec
from mltidy.backends.session import StoreSession
from mltidy.cli.app import app
from mltidy.evidence.local import LocalProbe
from mltidy.judge import RHYTHM_FLOOR, Policy
from mltidy.model import (
    Basis,
    JudgedRecord,
    RecordKind,
    Selection,
    StoreKind,
    VerdictKind,
    utc_now,
)
from mltidy.scan import collect, iter_scan
from side_venvs import TRAIN, SideJob, SideVenvs, start_side_job, without_mltidy_env

#: The irregular jobs pause for tenths of a second where real ones pause for up to minutes.
SCALE = 60
IRREGULAR_EPOCHS = 120


def _pauses(kind: str) -> list[float]:
    """Pause after each epoch, in seconds (deterministic)."""
    rng = random.Random(kind)
    if kind == "jitter":
        return [rng.lognormvariate(math.log(0.35), 0.35) for _ in range(IRREGULAR_EPOCHS)]
    if kind == "eval":  # an evaluation pause four times the training pause, every 8 epochs
        return [1.2 if n % 8 == 7 else 0.3 for n in range(IRREGULAR_EPOCHS)]
    if kind == "once":  # once, a pause three times longer than any before
        return [1.2 if n == 20 else 0.4 for n in range(IRREGULAR_EPOCHS)]
    if kind == "slowing":  # each epoch 2% slower than the last
        return [0.2 * 1.02**n for n in range(IRREGULAR_EPOCHS)]
    raise AssertionError(kind)


IRREGULAR = ("jitter", "eval", "once", "slowing")


@dataclass
class Seen:
    """One record's verdicts over time: (seconds since its job's signal, kind, basis, reason)."""

    verdicts: list[tuple[float, VerdictKind, Basis, str]] = field(default_factory=list)

    def first(self, kind: VerdictKind) -> tuple[float, VerdictKind, Basis, str] | None:
        return next((v for v in self.verdicts if v[1] is kind), None)


@dataclass
class Field:
    """The stores, the jobs, and what the scans saw."""

    mlflow: str
    optuna: str
    steady: dict[str, SideJob]
    killed_at: dict[str, float]
    seen: dict[tuple[str, RecordKind], Seen]
    irregular: dict[str, list[tuple[VerdictKind, Basis, str]]]
    scans: int = 0


def _scan(stores: tuple[str, str], study: str, policy: Policy) -> list[JudgedRecord]:
    specs = [
        store_spec(StoreKind.MLFLOW, stores[0], "test"),
        store_spec(StoreKind.OPTUNA, stores[1], "test"),
    ]
    with StoreSession(specs) as session:
        result = collect(
            iter_scan(
                session,
                Selection(experiments=(study,), studies=(study,)),
                policy,
                LocalProbe(),
                schedulers=(),
            )
        )
    assert all(s.ok for s in result.stores)
    return list(result.records)


@pytest.fixture(scope="module")
def field_run(side_venvs: SideVenvs, tmp_path_factory: pytest.TempPathFactory) -> Field:
    root = tmp_path_factory.mktemp("field")
    stores = (f"sqlite:///{root / 'mlflow.db'}", f"sqlite:///{root / 'optuna.db'}")
    _create(side_venvs.job, stores, ("steady", "irregular"), root)

    def job(study: str, pauses: str, ready_after: int, epochs: int) -> SideJob:
        return start_side_job(
            side_venvs.job,
            root,
            *("--mlflow", stores[0], "--optuna", stores[1], "--study", study),
            *("--pauses", pauses, "--ready-after", str(ready_after), "--epochs", str(epochs)),
        )

    steady = {name: job("steady", "2", 6, 10_000) for name in ("sigkill", "sigterm")}
    irregular = {
        kind: job("irregular", ",".join(f"{p:.3f}" for p in _pauses(kind)), 6, IRREGULAR_EPOCHS)
        for kind in IRREGULAR
    }
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda j: j.wait_ready(), [*steady.values(), *irregular.values()]))
    seen: dict[tuple[str, RecordKind], Seen] = {}
    by_run = {j.run_id: name for name, j in steady.items()}
    # Before the signals: a job that logs is active, never alive (no proof of life).
    for item in _scan(stores, "steady", Policy(now=utc_now())):
        name = by_run.get(item.record.id) or by_run.get(item.record.evidence_from)
        seen.setdefault((str(name), item.record.kind), Seen()).verdicts.append(
            (-1.0, item.verdict.kind, item.verdict.basis, item.verdict.reason)
        )
    killed_at = {
        "sigkill": steady["sigkill"].kill(signal.SIGKILL),
        "sigterm": steady["sigterm"].kill(signal.SIGTERM),
    }
    result = Field(stores[0], stores[1], steady, killed_at, seen, {k: [] for k in IRREGULAR})
    scaled = RHYTHM_FLOOR / SCALE
    deadline = time.time() + 240
    next_steady = 0.0
    while time.time() < deadline:
        alive = {k for k, j in irregular.items() if j.process.poll() is None}
        if alive:
            for item in _scan(stores, "irregular", Policy(now=utc_now(), rhythm_floor=scaled)):
                record = item.record
                kind = next(
                    (
                        k
                        for k, j in irregular.items()
                        if j.run_id in (record.id, record.evidence_from)
                    ),
                    None,
                )
                still = kind is not None and irregular[kind].process.poll() is None
                if still and kind in alive:
                    verdict = item.verdict
                    result.irregular[kind].append((verdict.kind, verdict.basis, verdict.reason))
            result.scans += 1
        if time.time() >= next_steady:
            next_steady = time.time() + 2
            for item in _scan(stores, "steady", Policy(now=utc_now())):
                record, verdict = item.record, item.verdict
                name = by_run.get(record.id) or by_run.get(record.evidence_from)
                since = time.time() - killed_at[str(name)]
                seen[(str(name), record.kind)].verdicts.append(
                    (since, verdict.kind, verdict.basis, verdict.reason)
                )
            if not alive and all(s.first(VerdictKind.STALE) for s in seen.values()):
                break
        time.sleep(0.5 if alive else 1.0)
    for j in irregular.values():
        j.process.wait(timeout=120)
    _report(result)
    return result


def _create(python: Path, stores: tuple[str, str], names: tuple[str, ...], root: Path) -> None:
    """Experiments and studies made before the jobs start (jobs in parallel race otherwise)."""
    code = (
        "import sys, mlflow, optuna\n"
        "mlflow.set_tracking_uri(sys.argv[1])\n"
        "for name in sys.argv[3:]:\n"
        "    mlflow.set_experiment(name)\n"
        "    optuna.create_study(study_name=name, storage=sys.argv[2], load_if_exists=True)\n"
    )
    subprocess.run(
        [str(python), "-c", code, *stores, *names],
        env=without_mltidy_env(),
        cwd=root,
        check=True,
        capture_output=True,
        timeout=300,
    )


def _report(result: Field) -> None:
    """The measured numbers, on the test's output (``pytest -s``) for docs/provenance.md."""
    lines = []
    for (name, kind), seen in sorted(result.seen.items(), key=lambda x: (x[0][0], x[0][1].value)):
        stale = seen.first(VerdictKind.STALE)
        lines.append(
            f"{name} {kind.value}: stale {stale[0]:.0f} s after the signal"
            if stale
            else f"{name} {kind.value}: never stale"
        )
    verdicts = [v for vs in result.irregular.values() for v in vs]
    false = sum(1 for v in verdicts if v[0] is VerdictKind.STALE)
    lines.append(
        f"irregular jobs: {false} stale of {len(verdicts)} verdicts of living jobs "
        f"({', '.join(f'{k} {len(v)}' for k, v in result.irregular.items())})"
    )
    print("\nfield measurements:\n  " + "\n  ".join(lines))


def test_a_killed_job_is_active_then_stale_by_its_rhythm(field_run: Field) -> None:
    for name in ("sigkill", "sigterm"):
        for kind in (RecordKind.MLFLOW_RUN, RecordKind.OPTUNA_TRIAL):
            seen = field_run.seen[(name, kind)]
            before = seen.verdicts[0]
            assert before[0] < 0 and before[1] is VerdictKind.ACTIVE, before
            assert "no proof that its process lives" in before[3]
            assert all(v[1] is not VerdictKind.ALIVE for v in seen.verdicts)
            stale = seen.first(VerdictKind.STALE)
            assert stale is not None, seen.verdicts[-1]
            # Silent for the 2 min floor after its last metric (at most one 2 s pause before
            # the signal), seen by a scan every 2 s (slower when the machine is busy).
            assert 110 <= stale[0] <= 150, stale
            assert stale[2] is Basis.RHYTHM
            assert "its longest pause before was 2 s" in stale[3]
            if kind is RecordKind.OPTUNA_TRIAL:
                assert stale[3].startswith("its MLflow run ")
            # Between: active, with the real signal named.
            between = [v for v in seen.verdicts if 0 <= v[0] < stale[0]]
            assert between and all(v[1] is VerdictKind.ACTIVE for v in between)
            assert all("last metric" in v[3] and "heartbeat" not in v[3] for v in between)


def test_irregular_living_jobs_are_not_called_stale(field_run: Field) -> None:
    verdicts = {k: v for k, v in field_run.irregular.items()}
    assert all(len(v) >= 10 for v in verdicts.values()), {k: len(v) for k, v in verdicts.items()}
    stale = {k: [v for v in vs if v[0] is VerdictKind.STALE] for k, vs in verdicts.items()}
    # The job that once paused three times longer than ever before is never stale.
    assert stale["once"] == []
    total = sum(len(v) for v in verdicts.values())
    rate = sum(len(v) for v in stale.values()) / total
    assert rate <= 0.01, stale


def test_this_host_says_what_it_left_out(field_run: Field) -> None:
    result = CliRunner().invoke(
        app,
        [
            *("scan", "--this-host", "--mlflow", field_run.mlflow, "--optuna", field_run.optuna),
            *("--experiment", "steady", "--study", "steady"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "--this-host left out 4 unfinished records: 4 without provenance" in result.stderr
    assert "No unfinished runs or trials." not in result.stderr


def test_close_include_stale_needs_rhythm_for_records_stale_by_rhythm(field_run: Field) -> None:
    stores = ["--mlflow", field_run.mlflow, "--optuna", field_run.optuna]
    selection = ["--experiment", "steady", "--study", "steady"]
    result = CliRunner().invoke(
        app, ["close", *stores, *selection, "--include-stale", "--yes", "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["changes"] == []
    assert len(report["skipped"]) == 4
    assert all("stale by its own rhythm only" in s["why"] for s in report["skipped"])
    result = CliRunner().invoke(
        app, ["close", *stores, *selection, "--include-stale", "--rhythm", "--yes", "-f", "json"]
    )
    assert result.exit_code == 0, result.output
    changes = json.loads(result.stdout)["changes"]
    assert len(changes) == 4 and all(c["status"] == "closed" for c in changes)
    client = mlflow.MlflowClient(tracking_uri=field_run.mlflow)
    study = optuna.load_study(study_name="steady", storage=field_run.optuna)
    for job in field_run.steady.values():
        run = client.get_run(str(job.run_id))
        assert run.info.status == "KILLED"
        last = max(m.timestamp for m in client.get_metric_history(run.info.run_id, "loss"))
        assert run.info.end_time == last  # its last activity, not the time of closing
        trial = study.trials[int(job.trial_number or 0)]
        assert trial.state.name == "FAIL"
        assert trial.datetime_start is not None and trial.datetime_complete is not None
        # The trial has no activity of its own: it takes its run's.
        duration = trial.datetime_complete - trial.datetime_start
        assert duration >= timedelta(seconds=10), duration


def test_mltidy_run_closes_the_run_and_trial_of_a_job_without_mltidy(
    side_venvs: SideVenvs, tmp_path: Path
) -> None:
    """``mltidy run -- <python without mltidy> train.py``: the job's run gets provenance from
    MLFLOW_RUN_CONTEXT; SIGKILLed, the supervisor closes its run, and its trial through the
    trial's mlflow_run_id."""
    stores = (f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}")
    _create(side_venvs.job, stores, ("supervised",), tmp_path)
    src = Path(mltidy.__file__).resolve().parents[1]
    launcher = (
        f"import sys; sys.path.insert(0, {str(src)!r}); sys.argv[0] = 'mltidy'; "
        "from mltidy.cli.app import main; main()"
    )
    supervisor = [sys.executable, "-c", launcher, "run", "--mlflow", stores[0]]
    supervisor += ["--optuna", stores[1], "--"]
    job = start_side_job(
        side_venvs.job,
        tmp_path,
        *("--mlflow", stores[0], "--optuna", stores[1], "--study", "supervised"),
        *("--pauses", "0.5", "--ready-after", "3"),
        prefix=supervisor,
    ).wait_ready()
    assert job.pid is not None and job.pid != job.process.pid  # the job, not the supervisor
    import os

    os.kill(job.pid, signal.SIGKILL)
    code = job.process.wait(timeout=180)
    assert code == 128 + signal.SIGKILL, job.log.read_text()
    run = mlflow.MlflowClient(tracking_uri=stores[0]).get_run(str(job.run_id))
    assert run.info.status == "KILLED", job.log.read_text()
    assert "the supervisor (mltidy run) saw process" in run.data.tags["mltidy.closed_reason"]
    assert run.data.tags.get("mltidy.supervision")
    trial = optuna.load_study(study_name="supervised", storage=stores[1]).trials[0]
    assert trial.state.name == "FAIL", job.log.read_text()
    assert "the supervisor (mltidy run)" in str(trial.system_attrs["mltidy.closed_reason"])
    assert TRAIN.exists()


@pytest.fixture(autouse=True)
def _quiet() -> Iterator[None]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
