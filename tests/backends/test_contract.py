"""The backend contract: every backend passes the same tests against a real store.

The RUNNING records come from real training processes killed with SIGKILL and SIGTERM.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta
from pathlib import Path

import pytest

from killed_jobs import READY_AFTER
from mltidy.backends import Selection, open_backend
from mltidy.backends.identity import sqlite_file, store_id
from mltidy.backends.interface import RhythmReader, RunHistory, StudyWatcher
from mltidy.errors import StoreError, StoreNotFound
from mltidy.model import ActivitySource, Record, RecordKind, StoreKind, utc_now

from .conftest import StoreCase


def _key(case: StoreCase, record: Record) -> str:
    """What identifies a job's record: the run id, or the trial number within its study."""
    if case.kind is StoreKind.MLFLOW:
        return record.id
    return f"{record.container}:{record.trial_number}"


def _job_key(case: StoreCase, job: object, study: str) -> str:
    if case.kind is StoreKind.MLFLOW:
        return str(job.run_id)  # type: ignore[attr-defined]
    return f"{study}:{job.trial_number}"  # type: ignore[attr-defined]


def _active(case: StoreCase, selection: Selection | None = None) -> dict[str, Record]:
    with open_backend(case.kind, case.uri) as backend:
        return {_key(case, r): r for r in backend.iter_active(selection or Selection())}


def test_lists_the_killed_jobs_and_not_the_finished_one(case: StoreCase) -> None:
    active = _active(case)
    jobs = case.jobs
    for job in jobs.killed:
        assert _job_key(case, job, jobs.name) in active
    assert _job_key(case, jobs.other, jobs.other_name) in active
    assert _job_key(case, jobs.finished, jobs.name) not in active


def test_records_carry_the_contract_fields(case: StoreCase) -> None:
    jobs = case.jobs
    record = _active(case)[_job_key(case, jobs.sigkilled, jobs.name)]
    now = utc_now()
    assert record.state == "RUNNING"
    assert record.container == jobs.name
    assert record.container_id
    assert record.store == store_id(case.kind, case.uri)
    assert record.started_at is not None and record.started_at.tzinfo is not None
    assert timedelta(0) <= now - record.started_at < timedelta(minutes=10)
    if case.kind is StoreKind.MLFLOW:
        assert record.kind is RecordKind.MLFLOW_RUN
        assert record.name == f"trial-{jobs.sigkilled.trial_number}"
        assert record.trial_number is None
        assert record.user
        assert record.last_activity_at is not None
        assert record.started_at <= record.last_activity_at <= now
    else:
        assert record.kind is RecordKind.OPTUNA_TRIAL
        assert record.trial_number == jobs.sigkilled.trial_number
        assert record.tags.get("mlflow_run_id") == jobs.sigkilled.run_id


def test_killed_runs_carry_their_rhythm(case: StoreCase) -> None:
    """A RUNNING run's metric history: how many distinct times it logged at, and its longest
    pause between two of them (each job logs one metric per 0.2 s epoch before its kill).
    A trial's own activity, where it has any, is an Optuna heartbeat."""
    jobs = case.jobs
    active = _active(case)
    with open_backend(case.kind, case.uri) as backend:
        if isinstance(backend, RhythmReader):  # rhythms read on demand, as scan asks for them
            runs = list(active.values())
            active = dict(zip(active, backend.with_rhythms(runs), strict=True))
    for job, study in ((jobs.sigkilled, jobs.name), (jobs.sigtermed, jobs.name)):
        record = active[_job_key(case, job, study)]
        if case.kind is StoreKind.OPTUNA:
            assert record.activity_source in (None, ActivitySource.OPTUNA_HEARTBEAT)
            assert (record.activity_source is None) is (record.last_activity_at is None)
            continue
        assert record.activity_source is ActivitySource.METRIC
        # Killed after its READY_AFTER-th metric (later when other jobs were slower to start).
        assert record.activity_count >= READY_AFTER
        assert record.longest_pause is not None
        assert timedelta(milliseconds=150) <= record.longest_pause < timedelta(seconds=30)
        assert record.last_activity_at is not None and record.started_at is not None
        span = record.last_activity_at - record.started_at
        assert record.longest_pause <= span
    with open_backend(case.kind, case.uri) as backend:
        if case.kind is StoreKind.MLFLOW:
            fresh = backend.read(str(jobs.sigkilled.run_id))
            assert fresh is not None
            assert fresh.activity_count == active[str(jobs.sigkilled.run_id)].activity_count
            finished = backend.read(str(jobs.finished.run_id))
            assert finished is not None and finished.activity_count == 0


def test_read_returns_a_fresh_record_or_none(case: StoreCase) -> None:
    jobs = case.jobs
    listed = _active(case)
    with open_backend(case.kind, case.uri) as backend:
        for job in (jobs.sigkilled, jobs.finished):
            key = _job_key(case, job, jobs.name)
            if key in listed:
                record_id = listed[key].id
            elif case.kind is StoreKind.MLFLOW:
                record_id = str(job.run_id)
            else:
                continue
            fresh = backend.read(record_id)
            assert fresh is not None
            assert fresh.id == record_id
        if case.kind is StoreKind.MLFLOW:
            finished = backend.read(str(jobs.finished.run_id))
            assert finished is not None and finished.state == "FINISHED"
        unknown = "0" * 32 if case.kind is StoreKind.MLFLOW else "987654"
        assert backend.read(unknown) is None


def test_selection_filters_by_experiment_or_study(case: StoreCase) -> None:
    jobs = case.jobs
    if case.kind is StoreKind.MLFLOW:
        selection = Selection(experiments=(jobs.other_name,))
    else:
        selection = Selection(studies=(jobs.other_name,))
    active = _active(case, selection)
    assert list(active) == [_job_key(case, jobs.other, jobs.other_name)]


def _fingerprint(uri: str) -> str | None:
    """Hash of a local store's bytes (sqlite file, journal file, mlruns tree)."""
    path = sqlite_file(uri)
    if path is None and "://" not in uri:
        path = Path(uri.removeprefix("file:"))
    if path is None:
        return None
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def test_reading_changes_nothing(case: StoreCase) -> None:
    before = _fingerprint(case.uri)
    _active(case)
    assert _fingerprint(case.uri) == before


def test_missing_store_is_an_error_and_is_not_created(case: StoreCase) -> None:
    if case.missing_uri is None:
        pytest.skip("server stores have no path to leave behind")
    with pytest.raises(StoreNotFound):
        open_backend(case.kind, case.missing_uri)
    leftovers = list(Path(case.missing_uri.split("///")[-1].removeprefix("file:")).parent.iterdir())
    assert leftovers == []


def test_describe_names_the_backend(case: StoreCase) -> None:
    with open_backend(case.kind, case.uri) as backend:
        text = backend.describe()
    assert ("MLflow" if case.kind is StoreKind.MLFLOW else "Optuna") in text


def test_errors_are_store_errors(case: StoreCase, tmp_path: Path) -> None:
    """A file of the wrong kind is refused with a StoreError subclass, never a library error."""
    if case.missing_uri is None:
        pytest.skip("server stores are covered by the CLI bad-input tests")
    junk = tmp_path / "junk"
    junk.write_text("this is not a store\n")
    uri = f"sqlite:///{junk}" if case.uri.startswith("sqlite") else str(junk)
    if case.backend == "mlflow-file":
        uri = f"file:{tmp_path}"
    with pytest.raises(StoreError):
        open_backend(case.kind, uri)


def test_ended_runs_and_study_progress(case: StoreCase) -> None:
    """The watch capabilities: MLflow stores list runs that ended since a time, Optuna
    storages report each study's progress and best value."""
    jobs = case.jobs
    now = utc_now()
    with open_backend(case.kind, case.uri) as backend:
        if case.kind is StoreKind.MLFLOW:
            assert isinstance(backend, RunHistory)
            ended = {
                r.id: r for r in backend.iter_ended_runs(Selection(), now - timedelta(hours=1))
            }
            finished = ended[str(jobs.finished.run_id)]
            assert finished.state == "FINISHED"
            assert finished.ended_at is not None and finished.started_at is not None
            assert finished.started_at <= finished.ended_at <= now
            assert finished.container == jobs.name
            assert finished.tags.get("mltidy.pid") == str(jobs.finished.pid)
            assert not {str(job.run_id) for job in jobs.killed} & set(ended)
            later = backend.iter_ended_runs(Selection(), now + timedelta(minutes=1))
            assert list(later) == []
            other = backend.iter_ended_runs(
                Selection(experiments=(jobs.other_name,)), now - timedelta(hours=1)
            )
            assert str(jobs.finished.run_id) not in {r.id for r in other}
        else:
            assert isinstance(backend, StudyWatcher)
            progress = {p.study: p for p in backend.study_progress(Selection())}
            study = progress[jobs.name]
            assert (study.trials, study.running, study.waiting) == (3, 2, 0)
            assert (study.complete, study.pruned, study.failed, study.finished) == (1, 0, 0, 1)
            assert study.directions == ("MINIMIZE",)
            assert study.best_trial_number == jobs.finished.trial_number
            assert study.best_value is not None and 0 < study.best_value < 2
            assert study.first_started_at is not None and study.last_completed_at is not None
            assert study.first_started_at <= study.last_completed_at <= now
            assert study.last_activity_at == max(study.last_started_at, study.last_completed_at)
            assert study.budget is None
            only = backend.study_progress(Selection(studies=(jobs.other_name,)))
            assert [p.study for p in only] == [jobs.other_name]
            assert only[0].running == 1 and only[0].best_value is None
