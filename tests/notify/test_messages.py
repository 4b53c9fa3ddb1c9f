"""Grouping events into one message: folding a trial into its run, counting titles."""

from __future__ import annotations

from datetime import datetime, timezone

from mltidy.model import StoreId
from mltidy.notify.events import Event, EventKind, Severity
from mltidy.notify.messages import compose, fold, summary

NOW = datetime(2026, 1, 1, 10, 0, tzinfo=timezone.utc)
RUNS = StoreId("sqlite:////data/mlflow.db")
TRIALS = StoreId("sqlite:////data/optuna.db")


def _event(
    kind: EventKind, subject: str, parent: str | None = None, store: StoreId = RUNS
) -> Event:
    noun = subject.split(":", 1)[0]
    return Event(
        kind=kind,
        key=f"{kind.value}:{subject}",
        at=NOW,
        headline=f"{noun} {subject} is {kind.value}",
        severity=Severity.FAILURE,
        facts=(("Optuna trial", "tuning #3"),) if noun == "trial" else (("store", store),),
        links=((f"link {subject}", f"http://x/{subject}"),),
        store=store,
        subject=subject,
        parent=parent,
    )


def test_a_trial_folds_into_its_run_of_the_same_kind() -> None:
    run = _event(EventKind.DEAD, "run:abc")
    trial = _event(EventKind.DEAD, "trial:7", parent="run:abc", store=TRIALS)
    (merged,) = fold([run, trial])
    assert merged.subject == "run:abc"
    assert ("Optuna trial", "tuning #3") in merged.facts
    assert ("trial store", TRIALS) in merged.facts
    assert [label for label, _ in merged.links] == ["link run:abc", "link trial:7"]


def test_a_trial_of_another_kind_or_without_its_run_stays_apart() -> None:
    run = _event(EventKind.DEAD, "run:abc")
    stale_trial = _event(EventKind.STALE, "trial:7", parent="run:abc")
    orphan = _event(EventKind.DEAD, "trial:8", parent="run:zzz")
    assert fold([run, stale_trial, orphan]) == [run, stale_trial, orphan]


def test_titles_count_worst_news_first() -> None:
    events = [
        _event(EventKind.RUN_FINISHED, "run:a"),
        _event(EventKind.DEAD, "run:b"),
        _event(EventKind.DEAD, "run:c"),
        _event(EventKind.STALE, "trial:9"),
    ]
    assert summary(events) == "2 runs dead, 1 trial stale, 1 run finished"
    message = compose(events)
    assert message.title == "mltidy: 2 runs dead, 1 trial stale, 1 run finished"
    assert message.events == 4


def test_long_groups_list_the_rest_in_one_line_each_then_count() -> None:
    events = [_event(EventKind.DEAD, f"run:{i}") for i in range(15)]
    body = compose(events, detailed=2, listed=3).body
    assert "And 13 more:" in body
    assert body.count("\n- ") == 4  # three listed, then "... and 10 more"
    assert "and 10 more" in body
