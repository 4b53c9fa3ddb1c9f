"""The watch state: each event recorded once, per-target outbox, failure marks, pruning."""

from __future__ import annotations

import os
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from mltidy.errors import UsageError
from mltidy.model import StoreId
from mltidy.notify.events import Event, EventKind, Severity
from mltidy.watch.state import OUTBOX_MAX_AGE, RETENTION, WatchState, legacy_target_key

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)
STORE = StoreId("sqlite:////data/mlflow.db")


def _event(key: str) -> Event:
    return Event(EventKind.DEAD, key, NOW, f"headline {key}", Severity.FAILURE, store=STORE)


def test_an_event_is_recorded_once(tmp_path: Path) -> None:
    with WatchState(tmp_path / "state.db") as state:
        assert [e.key for e in state.add([_event("a"), _event("b")], NOW)] == ["a", "b"]
        assert [e.key for e in state.add([_event("a"), _event("c")], NOW)] == ["c"]
    with WatchState(tmp_path / "state.db") as state:  # and across restarts
        assert state.add([_event("a")], NOW) == []


def test_the_outbox_keeps_what_failed_for_each_target(tmp_path: Path) -> None:
    with WatchState(tmp_path / "state.db") as state:
        state.register([("t1", "json://***"), ("t2", "ntfy://***")], NOW)
        state.add([_event("a"), _event("b")], NOW)
        state.add([_event("old")], NOW, baseline=True)
        assert [e.key for e in state.pending("t1")] == ["a", "b"]  # never the baseline
        state.delivered(["a", "b"], "t1", True, None, NOW)
        state.delivered(["a", "b"], "t2", False, "connection refused", NOW)
        assert state.pending("t1") == []
        assert [e.key for e in state.pending("t2")] == ["a", "b"]
        later = NOW + OUTBOX_MAX_AGE + timedelta(seconds=1)
        assert state.give_up("t2", later) == 2
        assert state.pending("t2") == []


def test_a_target_added_later_gets_only_newer_events(tmp_path: Path) -> None:
    with WatchState(tmp_path / "state.db") as state:
        state.add([_event("before")], NOW)
        state.register([("late", "json://***")], NOW + timedelta(seconds=5))
        state.add([_event("after")], NOW + timedelta(seconds=10))
        assert [e.key for e in state.pending("late")] == ["after"]


def test_failures_in_a_row_and_recovery(tmp_path: Path) -> None:
    with WatchState(tmp_path / "state.db") as state:
        assert state.store_mark(STORE) is None
        first = state.mark_failed(STORE, NOW)
        second = state.mark_failed(STORE, NOW + timedelta(minutes=1))
        assert (first.failures, second.failures) == (1, 2)
        assert second.failing_since == NOW
        state.mark_ok(STORE, NOW + timedelta(minutes=2))
        mark = state.store_mark(STORE)
        assert mark is not None
        assert (mark.failures, mark.failing_since) == (0, None)
        assert mark.last_ok_at == NOW + timedelta(minutes=2)


def test_old_events_are_forgotten(tmp_path: Path) -> None:
    with WatchState(tmp_path / "state.db") as state:
        state.add([_event("a")], NOW)
        state.prune(NOW + RETENTION + timedelta(days=1))
        assert [e.key for e in state.add([_event("a")], NOW + RETENTION)] == ["a"]


def test_a_new_state_is_private(tmp_path: Path) -> None:
    with WatchState(tmp_path / "new" / "state.db", secret_dir=tmp_path / "secrets") as state:
        key = state.target_key("json://hooks.example/token")
    assert (tmp_path / "new" / "state.db").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "new").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "secrets" / "secret").stat().st_mode & 0o777 == 0o600
    assert key != legacy_target_key("json://hooks.example/token")


@pytest.mark.parametrize("kind", ["link", "text", "tracking store", "fifo", "foreign sqlite"])
def test_a_state_path_that_is_not_a_state_is_refused_and_left_alone(
    tmp_path: Path, kind: str
) -> None:
    path = tmp_path / "state.db"
    victim = tmp_path / "victim.txt"
    victim.write_text("mine\n")
    victim.chmod(0o644)
    if kind == "link":
        path.symlink_to(victim)
    elif kind == "text":
        path.write_text("notes\n")
    elif kind == "fifo":
        os.mkfifo(path)
    else:
        with sqlite3.connect(path) as conn:
            tables = ("runs", "experiments") if kind == "tracking store" else ("things",)
            for table in tables:
                conn.execute(f"CREATE TABLE {table} (x)")
    before = {p.name: (p.lstat().st_mode, p.lstat().st_size) for p in tmp_path.iterdir()}
    with pytest.raises(UsageError, match="cannot use"):
        WatchState(path)
    after = {p.name: (p.lstat().st_mode, p.lstat().st_size) for p in tmp_path.iterdir()}
    assert before == after
    assert victim.read_text() == "mine\n"


def test_an_earlier_unkeyed_target_keeps_its_outbox(tmp_path: Path) -> None:
    url = "json://hooks.example/token"
    with WatchState(tmp_path / "state.db", secret_dir=tmp_path) as state:
        state.register([(legacy_target_key(url), "json://***")], NOW)
        state.add([_event("a")], NOW)
        (key,) = state.targets([(url, "json://***")], NOW)
        assert [e.key for e in state.pending(key)] == ["a"]
        assert state.pending(legacy_target_key(url)) == []
