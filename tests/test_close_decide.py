"""Which verdicts a close plan acts on, whatever the options (a pure decision)."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

import pytest

from mltidy.close import CloseOptions, Outcome, plan_scanned
from mltidy.judge import Policy
from mltidy.model import JudgedRecord, Record, RecordKind, StoreId, Verdict, VerdictKind
from mltidy.scan import NoMatch

NOW = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)


def _item(verdict: VerdictKind, run_id: str = "r1") -> JudgedRecord:
    record = Record(
        kind=RecordKind.MLFLOW_RUN,
        store=StoreId("sqlite:////data/mlflow.db"),
        id=run_id,
        name="run",
        container="e",
        container_id="1",
        state="RUNNING",
        started_at=NOW - timedelta(hours=2),
        last_activity_at=NOW - timedelta(hours=1),
    )
    return JudgedRecord(record, Verdict(verdict, "because"))


@pytest.mark.parametrize(
    ("verdict", "options", "closed"),
    [
        (VerdictKind.DEAD, CloseOptions(), True),
        (VerdictKind.STALE, CloseOptions(), False),
        (VerdictKind.STALE, CloseOptions(include_stale=True), True),
        (VerdictKind.UNKNOWN, CloseOptions(include_stale=True), False),
        (VerdictKind.UNKNOWN, CloseOptions(explicit=True, force=True), True),
        (VerdictKind.ALIVE, CloseOptions(include_stale=True), False),
        (VerdictKind.ALIVE, CloseOptions(explicit=True, force=True), False),
    ],
)
def test_what_is_closed(verdict: VerdictKind, options: CloseOptions, closed: bool) -> None:
    report = plan_scanned([_item(verdict)], Policy(now=NOW), options)
    assert bool(report.changes) is closed
    assert len(report.changes) + len(report.skipped) == 1
    for change in report.changes:
        assert change.outcome is Outcome.PLANNED
        assert change.end_time == NOW - timedelta(hours=1)  # the last activity, never now
        assert change.new_state == ("FAILED" if options.as_failed else "KILLED")


def test_ids_that_named_nothing_are_reported() -> None:
    report = plan_scanned(
        [_item(VerdictKind.DEAD, "r2"), NoMatch("nope")], Policy(now=NOW), CloseOptions()
    )
    assert [c.item.record.id for c in report.changes] == ["r2"]
    assert report.missing == ("nope",)


def test_a_dry_run_says_a_retry_would_be_enqueued() -> None:
    item = _item(VerdictKind.DEAD)
    trial = JudgedRecord(
        dataclasses.replace(item.record, kind=RecordKind.OPTUNA_TRIAL, id="7", trial_number=3),
        item.verdict,
    )
    report = plan_scanned([item, trial], Policy(now=NOW), CloseOptions(retry=True, max_retry=2))
    run_change, trial_change = report.changes
    assert run_change.detail is None and not run_change.retry
    assert trial_change.retry
    assert trial_change.detail == "a retry would be enqueued (unless --max-retry 2 is reached)"
