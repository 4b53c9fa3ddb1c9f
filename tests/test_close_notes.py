"""The reasons a bulk close writes where people look: every closed run's MLflow description
and every closed trial's optuna-dashboard note, the user's own text kept, on the SQL fast
paths (read by id, written a few hundred notes per transaction) as on the default ones."""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from dead_records import DeadStores, make_dead_stores
from mltidy import dashboard_notes, names
from mltidy.backends.interface import RunLinker, TrialLinker
from mltidy.backends.mlflow.sql import MlflowSqlBackend
from mltidy.backends.optuna import sql as optuna_sql
from mltidy.backends.optuna.sql import OptunaSqlBackend
from mltidy.cli.app import app

COUNT = 12
DATABASES = itertools.count()
KINDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=KINDS)
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[list[DeadStores]]:
    """Two experiments and two studies of dead records in one store of each kind."""
    if request.param == "sqlite":
        pair = (f"sqlite:///{tmp_path / 'mlflow.db'}", f"sqlite:///{tmp_path / 'optuna.db'}")
    else:
        server = request.getfixturevalue("postgres_server")
        name = f"notes_{os.getpid()}_{next(DATABASES)}"
        pair = (server.create_database(f"m_{name}"), server.create_database(f"o_{name}"))
    yield [make_dead_stores(*pair, study, COUNT) for study in ("first", "second")]


def _run_ids(uri: str) -> list[str]:
    engine = sa.create_engine(uri, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        ids = [str(r[0]) for r in conn.execute(sa.text("SELECT run_uuid FROM runs"))]
    engine.dispose()
    return sorted(ids)


def _trial_ids(url: str) -> list[str]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        ids = [str(r[0]) for r in conn.execute(sa.text("SELECT trial_id FROM trials"))]
    engine.dispose()
    return sorted(ids, key=int)


def _study_attrs(url: str) -> dict[int, dict[str, object]]:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT study_id, key, value_json FROM study_system_attributes")
        ).all()
    engine.dispose()
    found: dict[int, dict[str, object]] = {}
    for study_id, key, value in rows:
        found.setdefault(study_id, {})[key] = json.loads(value)
    return found


def test_every_closed_record_says_why_and_keeps_the_users_text(
    stores: list[DeadStores], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Fewer notes per transaction than trials: several transactions, whole studies in each.
    monkeypatch.setattr(optuna_sql, "NOTES_PER_TRANSACTION", 5)
    mlflow_uri, optuna_url = stores[0].mlflow_uri, stores[0].optuna_url
    runs, trials = _run_ids(mlflow_uri), _trial_ids(optuna_url)
    assert len(runs) == len(trials) == 2 * COUNT
    mine_run, mine_trial = runs[3], trials[COUNT + 2]
    with MlflowSqlBackend(mlflow_uri, writable=True) as backend:
        backend.write_run_tags(mine_run, {names.MLFLOW_NOTE: "my own words"})
    with OptunaSqlBackend(optuna_url, writable=True) as backend:
        (ref,) = backend.link_trials({mine_trial}, ["second"])
        backend.write_trial_notes([(ref, "my trial notes")])

    result = CliRunner().invoke(
        app, ["close", "--mlflow", mlflow_uri, "--optuna", optuna_url, "--yes", "-f", "json"]
    )

    assert result.exit_code == 0, result.output
    changes = json.loads(result.stdout)["changes"]
    assert len(changes) == 4 * COUNT
    assert all(c["status"] == "closed" and not c["detail"] for c in changes), changes
    with MlflowSqlBackend(mlflow_uri) as backend:
        descriptions = backend.run_notes(set(runs))
    assert sorted(descriptions) == runs
    for run_id, text in descriptions.items():
        assert text.startswith("my own words\n\n") is (run_id == mine_run)
        assert "**Closed by mltidy** as KILLED" in text and "rebooted" in text, text
    attrs = _study_attrs(optuna_url)
    notes = {
        str(trial_id): dashboard_notes.read_note(study, trial_id)
        for study in attrs.values()
        for trial_id in map(int, trials)
        if names.dashboard_note_version(trial_id) in study
    }
    assert sorted(notes, key=int) == trials
    for trial_id, (version, text, _) in notes.items():
        assert version == (2 if trial_id == mine_trial else 1)
        assert text.startswith("my trial notes\n\n") is (trial_id == mine_trial)
        assert "**Closed by mltidy** as FAIL" in text and "rebooted" in text, text


def test_reads_by_id_agree_with_the_default_reads(stores: list[DeadStores]) -> None:
    mlflow_uri, optuna_url = stores[0].mlflow_uri, stores[0].optuna_url
    runs, trials = _run_ids(mlflow_uri), _trial_ids(optuna_url)
    with MlflowSqlBackend(mlflow_uri, writable=True) as backend:
        backend.write_run_tags(runs[0], {names.MLFLOW_NOTE: "a description"})
        wanted = {runs[0], runs[5], "0" * 32}
        fast = backend.run_notes(wanted)
        default = RunLinker.run_notes(backend, wanted)
    assert fast[runs[0]] == default[runs[0]] == "a description"
    assert fast.get(runs[5], "") == default.get(runs[5], "") == ""
    assert fast.get("0" * 32, "") == ""
    with OptunaSqlBackend(optuna_url) as backend:
        wanted = {trials[1], trials[COUNT + 4], "999999"}
        by_id = backend.link_trials(wanted, ["first", "second"])
        every = TrialLinker.link_trials(backend, wanted, ["first", "second"])
    assert sorted(by_id, key=lambda t: int(t.trial_id)) == sorted(
        every, key=lambda t: int(t.trial_id)
    )
    assert {t.trial_id for t in by_id} == {trials[1], trials[COUNT + 4]}
