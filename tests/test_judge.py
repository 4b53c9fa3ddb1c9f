"""The judge: a pure function from evidence to a verdict and a checkable reason."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from mltidy.judge import Policy, judge
from mltidy.model import Record, RecordKind, VerdictKind

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)


def _run(started: timedelta | None, last: timedelta | None) -> Record:
    return Record(
        kind=RecordKind.MLFLOW_RUN,
        store="sqlite:///mlflow.db",
        id="abc",
        name="run",
        container="exp",
        container_id="1",
        state="RUNNING",
        started_at=None if started is None else NOW - started,
        last_activity_at=None if last is None else NOW - last,
    )


POLICY = Policy(now=NOW, stale_after=timedelta(hours=1))


def test_silence_longer_than_stale_after_is_stale() -> None:
    verdict = judge(_run(timedelta(hours=5), timedelta(hours=2, minutes=14)), POLICY)
    assert verdict.kind is VerdictKind.STALE
    assert "2 h 14 min" in verdict.reason
    assert "metric" in verdict.reason


def test_recent_activity_without_provenance_is_unknown() -> None:
    verdict = judge(_run(timedelta(hours=5), timedelta(minutes=5)), POLICY)
    assert verdict.kind is VerdictKind.UNKNOWN
    assert "5 min" in verdict.reason


def test_never_logged_and_old_is_stale() -> None:
    verdict = judge(_run(timedelta(hours=3), None), POLICY)
    assert verdict.kind is VerdictKind.STALE
    assert "never logged" in verdict.reason


def test_never_logged_and_young_is_unknown() -> None:
    verdict = judge(_run(timedelta(minutes=3), None), POLICY)
    assert verdict.kind is VerdictKind.UNKNOWN
    assert "too young" in verdict.reason


def test_no_times_at_all_is_unknown() -> None:
    assert judge(_run(None, None), POLICY).kind is VerdictKind.UNKNOWN


def test_trials_speak_of_heartbeats() -> None:
    trial = Record(
        kind=RecordKind.OPTUNA_TRIAL,
        store="sqlite:///optuna.db",
        id="1",
        name="trial 0",
        container="study",
        container_id="1",
        state="RUNNING",
        started_at=NOW - timedelta(hours=2),
        trial_number=0,
    )
    verdict = judge(trial, POLICY)
    assert verdict.kind is VerdictKind.STALE
    assert "heartbeat" in verdict.reason


def test_the_judge_is_pure() -> None:
    record = _run(timedelta(hours=5), timedelta(hours=2))
    assert judge(record, POLICY) == judge(record, POLICY)
