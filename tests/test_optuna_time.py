"""Trial start times are right whichever Optuna wrote them.

Optuna 4.x wrote naive local time; Optuna 5 RDB storages write naive UTC; journals carry an
offset from 5.0 on. Installing Optuna 4.x beside 5.x in the test environment is impractical, so
the 4.x rows are constructed by hand: a real Optuna 5 storage whose ``version_info`` and
``datetime_start`` are rewritten the way a 4.x writer leaves them.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import optuna
import pytest

from mltidy.backends import Selection, open_backend
from mltidy.backends.optuna.time import journal_to_utc, rdb_to_utc, writes_naive_utc
from mltidy.model import StoreKind


@pytest.fixture(params=["Asia/Tokyo", "America/New_York", "UTC"])
def local_tz(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Run the test in a machine time zone (restored afterwards)."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def _running_trial_store(path: Path) -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name="s", storage=f"sqlite:///{path}")
    study.ask()  # a RUNNING trial, as an ask/tell job killed before tell leaves it


def test_version_parsing() -> None:
    assert writes_naive_utc("5.0.0")
    assert writes_naive_utc("5.1.0.dev")
    assert not writes_naive_utc("4.5.0")
    assert not writes_naive_utc(None)


def test_optuna5_sqlite_rows_are_naive_utc(tmp_path: Path, local_tz: str) -> None:
    path = tmp_path / "optuna.db"
    _running_trial_store(path)
    with open_backend(StoreKind.OPTUNA, f"sqlite:///{path}") as backend:
        (record,) = backend.iter_active(Selection())
    assert record.started_at is not None
    assert abs(datetime.now(timezone.utc) - record.started_at) < timedelta(minutes=1)


def test_optuna4_sqlite_rows_are_naive_local(tmp_path: Path, local_tz: str) -> None:
    path = tmp_path / "optuna.db"
    _running_trial_store(path)
    true_start = datetime.now(timezone.utc) - timedelta(hours=2)
    naive_local = true_start.astimezone().replace(tzinfo=None)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE version_info SET library_version = '4.2.1'")
        conn.execute("UPDATE trials SET datetime_start = ?", (naive_local.isoformat(" "),))
    with open_backend(StoreKind.OPTUNA, f"sqlite:///{path}") as backend:
        (record,) = backend.iter_active(Selection())
    assert record.started_at is not None
    assert abs(record.started_at - true_start) < timedelta(seconds=1)


def test_a_future_reading_means_the_other_convention() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=timezone.utc)
    # A 5.x writer (naive UTC) in a store that says 4.x, read on a machine west of UTC.
    value = datetime(2026, 1, 1, 11, 0)
    read = rdb_to_utc(value, naive_utc=False, now=now)
    assert read is not None and read <= now + timedelta(minutes=2)


def test_journal_lines_with_and_without_offset(tmp_path: Path, local_tz: str) -> None:
    path = tmp_path / "journal.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(path)))
    study = optuna.create_study(study_name="s", storage=storage)
    study.ask()
    study.ask()
    true_start = datetime.now(timezone.utc) - timedelta(hours=3)
    lines = path.read_text().splitlines()
    rewritten = []
    creates = 0
    for line in lines:
        entry = json.loads(line)
        if "datetime_start" in entry and entry.get("op_code") == 4:
            creates += 1
            if creates == 2:  # the second trial as a 4.x writer left it: naive local
                entry["datetime_start"] = true_start.astimezone().replace(tzinfo=None).isoformat()
        rewritten.append(json.dumps(entry))
    path.write_text("\n".join(rewritten) + "\n")
    with open_backend(StoreKind.OPTUNA, str(path)) as backend:
        records = sorted(backend.iter_active(Selection()), key=lambda r: r.trial_number or 0)
    assert [r.trial_number for r in records] == [0, 1]
    assert records[0].started_at is not None and records[1].started_at is not None
    assert abs(datetime.now(timezone.utc) - records[0].started_at) < timedelta(minutes=1)
    assert abs(records[1].started_at - true_start) < timedelta(seconds=1)


def test_journal_to_utc_keeps_aware_values() -> None:
    aware = datetime(2026, 1, 1, 12, 0, tzinfo=timezone(timedelta(hours=9)))
    assert journal_to_utc(aware) == datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc)
    assert journal_to_utc(None) is None


def test_zones_are_offsets_or_names() -> None:
    from mltidy.backends.optuna.time import parse_zone

    now = datetime(2026, 7, 1, 12, 0, tzinfo=timezone.utc)
    assert now.astimezone(parse_zone("+09:00")).utcoffset() == timedelta(hours=9)
    assert now.astimezone(parse_zone("UTC-0530")).utcoffset() == -timedelta(hours=5, minutes=30)
    assert now.astimezone(parse_zone("UTC")).utcoffset() == timedelta(0)
    # A zone name follows daylight saving time: Los Angeles is UTC-7 in July, UTC-8 in January.
    zone = parse_zone("America/Los_Angeles")
    assert now.astimezone(zone).utcoffset() == -timedelta(hours=7)
    assert now.replace(month=1).astimezone(zone).utcoffset() == -timedelta(hours=8)
    for bad in ("+15:00", "Mars/Olympus", "soon", ""):
        with pytest.raises(ValueError):
            parse_zone(bad)


def test_the_offset_is_inferred_from_trials_linked_to_runs() -> None:
    from mltidy.backends.optuna.time import infer_offset

    run_start = datetime(2026, 1, 1, 3, 0, 5, tzinfo=timezone.utc)
    tokyo = datetime(2026, 1, 1, 12, 0, 2)  # the trial started 3 s before its run, at UTC+9
    found = infer_offset([(tokyo, run_start)] * 3)
    assert found.offset == timedelta(hours=9)
    assert found.why == "inferred from 3 trials linked to MLflow runs"
    # A run started an hour after its trial (data loading) is outvoted by the others.
    late = infer_offset([(tokyo, run_start)] * 3 + [(tokyo, run_start + timedelta(hours=1))])
    assert late.offset == timedelta(hours=9)
    split = infer_offset([(tokyo, run_start), (tokyo, run_start + timedelta(hours=1))])
    assert split.offset is None and "disagree" in split.why
    assert infer_offset([]).offset is None
    # A pair far from a quarter hour (a run started 7 min after its trial) says nothing.
    assert infer_offset([(tokyo, run_start + timedelta(minutes=7))]).offset is None


def test_times_are_written_back_in_the_storage_convention() -> None:
    from mltidy.backends.optuna.time import StorageTimes, parse_zone

    end = datetime(2026, 1, 1, 3, 0, tzinfo=timezone.utc)
    assert StorageTimes(naive_utc=True).to_store(end) == datetime(2026, 1, 1, 3, 0)
    tokyo = StorageTimes(naive_utc=False)
    tokyo.set_zone(parse_zone("+09:00"), "test")
    assert tokyo.to_store(end) == datetime(2026, 1, 1, 12, 0)
    now = end + timedelta(hours=1)
    assert tokyo.to_utc(datetime(2026, 1, 1, 12, 0), now) == end
    assert tokyo.assumed(datetime(2026, 1, 1, 12, 0), now) is None
    assert StorageTimes(naive_utc=False).assumed(datetime(2026, 1, 1, 12, 0), now) is not None
