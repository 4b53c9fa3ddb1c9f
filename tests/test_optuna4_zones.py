"""Optuna 4.x stores, written by a real Optuna 4.x process in one time zone, read in others.

Optuna 4.x wrote naive local time of the writing process, and no storage says which zone that
was. The writers here run in a side venv with Optuna 4.x and no mltidy (``side_venvs.py``), under
``TZ`` Asia/Tokyo, America/Los_Angeles and UTC; each writes one study whose trials train in
MLflow runs (the run's start is epoch-based: the scan infers the writer's offset from it) and one
study without MLflow (nothing tells the offset). Every writer is SIGKILLed mid-trial. The scans
run in this process under other ``TZ`` values.
"""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mltidy.backends.identity import store_spec
from mltidy.backends.optuna.time import parse_zone
from mltidy.backends.session import StoreSession
from mltidy.cli.app import app
from mltidy.evidence.local import LocalProbe
from mltidy.judge import Policy
from mltidy.model import Basis, JudgedRecord, Selection, StoreKind, VerdictKind, utc_now
from mltidy.scan import collect, iter_scan
from side_venvs import TRAIN, SideVenvs, start_side_job, without_mltidy_env

ZONES = ("Asia/Tokyo", "America/Los_Angeles", "UTC")


@dataclass(frozen=True)
class Written:
    """One writer's stores, and when its trials started (between ``spawned`` and ``ready``)."""

    zone: str
    root: Path
    spawned: datetime
    ready: datetime

    @property
    def mlflow(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def linked(self) -> str:
        return f"sqlite:///{self.root / 'linked.db'}"

    @property
    def bare(self) -> str:
        return f"sqlite:///{self.root / 'bare.db'}"


def _at(epoch: float) -> datetime:
    return datetime.fromtimestamp(epoch, tz=timezone.utc)


@pytest.fixture(scope="module")
def written(side_venvs: SideVenvs, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Written]:
    root = tmp_path_factory.mktemp("optuna4-zones")

    def write(zone: str) -> Written:
        folder = root / zone.replace("/", "-")
        common = ["--pauses", "0.5", "--ready-after", "2"]
        linked = start_side_job(
            side_venvs.optuna4,
            folder,
            "--mlflow",
            f"sqlite:///{folder / 'mlflow.db'}",
            "--optuna",
            f"sqlite:///{folder / 'linked.db'}",
            "--study",
            "linked",
            *common,
            tz=zone,
        )
        bare = start_side_job(
            side_venvs.optuna4,
            folder,
            "--optuna",
            f"sqlite:///{folder / 'bare.db'}",
            "--study",
            "bare",
            *common,
            tz=zone,
        )
        spawned = min(linked.started, bare.started)
        for job in (linked, bare):
            job.wait_ready()
        ready = max(j.ready_at or 0.0 for j in (linked, bare))
        for job in (linked, bare):
            job.kill(signal.SIGKILL)
        return Written(zone, folder, _at(spawned - 1), _at(ready + 1))

    with ThreadPoolExecutor(len(ZONES)) as pool:
        return dict(zip(ZONES, pool.map(write, ZONES), strict=True))


@pytest.fixture(params=ZONES)
def reader_zone(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """This process reads in time zone ``request.param``."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def _scan(written: Written, optuna: str, *, zone: str | None = None) -> JudgedRecord:
    specs = [store_spec(StoreKind.OPTUNA, optuna, "test")]
    if optuna == written.linked:
        specs.insert(0, store_spec(StoreKind.MLFLOW, written.mlflow, "test"))
    zones = {None: (parse_zone(zone), "--optuna-utc-offset")} if zone else None
    with StoreSession(specs, zones=zones) as session:
        result = collect(
            iter_scan(session, Selection(), Policy(now=utc_now()), LocalProbe(), schedulers=())
        )
    assert all(s.ok for s in result.stores)
    (trial,) = [r for r in result.records if r.record.trial_number is not None]
    return trial


def _offset(zone: str) -> timedelta:
    return datetime.now(parse_zone(zone)).utcoffset() or timedelta(0)


def test_the_writers_really_wrote_naive_local_time(
    written: dict[str, Written], side_venvs: SideVenvs
) -> None:
    for zone, stores in written.items():
        path = stores.root / "bare.db"
        with sqlite3.connect(path) as conn:
            (version,) = conn.execute("SELECT library_version FROM version_info").fetchone()
            (start,) = conn.execute("SELECT datetime_start FROM trials").fetchone()
        assert version.startswith("4.")
        naive = datetime.fromisoformat(start)
        wall = stores.spawned.astimezone(parse_zone(zone)).replace(tzinfo=None)
        assert timedelta(0) <= naive - wall <= stores.ready - stores.spawned, (zone, start)


def test_linked_trials_are_read_true_in_any_zone(
    written: dict[str, Written], reader_zone: str
) -> None:
    """Trials linked to MLflow runs prove their writer's offset: the start is true wherever the
    scan runs, and the verdict rests on the run's activity, not on a guess."""
    for zone, stores in written.items():
        trial = _scan(stores, stores.linked)
        record = trial.record
        assert record.assumed_utc_offset is None, (zone, reader_zone)
        assert record.started_at is not None
        assert stores.spawned <= record.started_at <= stores.ready, (zone, reader_zone)
        assert trial.verdict.basis is not Basis.CLOCK, trial.verdict.reason


def test_a_trial_of_an_unknown_zone_says_so_instead_of_a_wrong_age(
    written: dict[str, Written], reader_zone: str
) -> None:
    for zone, stores in written.items():
        trial = _scan(stores, stores.bare)
        verdict, record = trial.verdict, trial.record
        # Read in this machine's zone, or as UTC where that reading lay in the future.
        ahead = _offset(zone) > _offset(reader_zone)
        assert record.assumed_utc_offset == (timedelta(0) if ahead else _offset(reader_zone))
        assert verdict.kind is VerdictKind.UNKNOWN, (zone, reader_zone, verdict.reason)
        assert verdict.basis is Basis.CLOCK, (zone, reader_zone, verdict.reason)
        assert "optuna_utc_offset" in verdict.reason
        if ahead and _offset(zone) > timedelta(0):
            assert "in the future" in verdict.reason, (zone, reader_zone, verdict.reason)
        else:
            assert "its age depends on a time zone" in verdict.reason
        # Told the writer's zone, mltidy reads the start true and judges its age as usual.
        told = _scan(stores, stores.bare, zone=zone)
        assert told.record.assumed_utc_offset is None
        assert told.record.started_at is not None
        assert stores.spawned <= told.record.started_at <= stores.ready, (zone, reader_zone)
        assert told.verdict.kind is VerdictKind.UNKNOWN and "too young" in told.verdict.reason


def test_close_writes_the_end_in_the_store_convention(
    written: dict[str, Written],
    side_venvs: SideVenvs,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A Tokyo store closed from a UTC machine: datetime_complete is Tokyo time, so Optuna 4.x
    in Tokyo sees an end after the start, as long as the run's activity lasted."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    stores = written["Asia/Tokyo"]
    copy = tmp_path / "tokyo"
    shutil.copytree(stores.root, copy)
    mlflow, optuna = f"sqlite:///{copy / 'mlflow.db'}", f"sqlite:///{copy / 'linked.db'}"
    result = CliRunner().invoke(
        app,
        [
            *("close", "--mlflow", mlflow, "--optuna", optuna),
            *("--trial", "linked:0", "--force", "--yes", "-f", "json"),
        ],
    )
    monkeypatch.undo()
    time.tzset()
    assert result.exit_code == 0, result.output
    read = subprocess.run(
        [
            str(side_venvs.optuna4),
            "-c",
            "import optuna; t = optuna.load_study(study_name='linked', storage="
            f"{optuna!r}).trials[0]; print(t.state.name, t.datetime_start.isoformat(), "
            "t.datetime_complete.isoformat())",
        ],
        capture_output=True,
        text=True,
        env={**without_mltidy_env(), "TZ": "Asia/Tokyo"},
        timeout=120,
        check=True,
    )
    state, start, end = read.stdout.split()
    assert state == "FAIL"
    duration = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    # The run logged a metric every 0.5 s until its kill: at least its 2 metrics' worth.
    assert timedelta(seconds=0.4) <= duration <= stores.ready - stores.spawned, (start, end)
    assert TRAIN.exists()
