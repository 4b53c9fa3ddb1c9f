"""Where stores come from: options, environment, config file, then discovery by schema."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from mltidy.config import FileConfig, discover, load_file_config, resolve_stores
from mltidy.errors import UsageError
from mltidy.model import StoreKind


def _mlflow_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num TEXT)")
        conn.execute("CREATE TABLE runs (run_uuid TEXT)")
        conn.execute("CREATE TABLE experiments (experiment_id INTEGER)")


def _optuna_db(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE studies (study_id INTEGER)")
        conn.execute("CREATE TABLE trials (trial_id INTEGER)")
        conn.execute("CREATE TABLE version_info (schema_version INTEGER)")


def _journal(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"op_code": 0, "worker_id": "w", "study_name": "s"}) + "\n")


def _mlruns(path: Path) -> None:
    (path / "0").mkdir(parents=True)
    (path / "0" / "meta.yaml").write_text(
        "artifact_location: file:///x\nexperiment_id: '0'\nlifecycle_stage: active\nname: Default\n"
    )


def test_discovery_goes_by_content_not_name(tmp_path: Path) -> None:
    _mlflow_db(tmp_path / "tracking.bin")  # no .db suffix: content decides
    _optuna_db(tmp_path / "hpo" / "studies.sqlite3")
    _journal(tmp_path / "hpo" / "journal.txt")
    _mlruns(tmp_path / "experiments")
    (tmp_path / "notes.db").write_text("not sqlite")
    with sqlite3.connect(tmp_path / "other.db") as conn:
        conn.execute("CREATE TABLE things (x INTEGER)")
    specs = discover(tmp_path)
    found = {(s.kind, s.uri) for s in specs}
    assert found == {
        (StoreKind.MLFLOW, "sqlite:///tracking.bin"),
        (StoreKind.OPTUNA, "sqlite:///hpo/studies.sqlite3"),
        (StoreKind.OPTUNA, "hpo/journal.txt"),
        (StoreKind.MLFLOW, "file:experiments"),
    }
    assert all(s.source.startswith("found ") for s in specs)


def test_discovery_stops_one_level_below(tmp_path: Path) -> None:
    _mlflow_db(tmp_path / "a" / "b" / "mlflow.db")
    _optuna_db(tmp_path / ".hidden" / "optuna.db")
    _optuna_db(tmp_path / "node_modules" / "optuna.db")
    assert discover(tmp_path) == []


def test_discovery_does_not_modify_what_it_inspects(tmp_path: Path) -> None:
    _mlflow_db(tmp_path / "mlflow.db")
    before = sorted(p.name for p in tmp_path.iterdir())
    data = (tmp_path / "mlflow.db").read_bytes()
    discover(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    assert (tmp_path / "mlflow.db").read_bytes() == data


def test_options_win_over_everything(tmp_path: Path) -> None:
    _mlflow_db(tmp_path / "mlflow.db")
    specs = resolve_stores(
        mlflow=["sqlite:///x.db"], env={"OPTUNA_STORAGE": "sqlite:///o.db"}, cwd=tmp_path
    )
    assert [(s.kind, s.uri, s.source) for s in specs] == [
        (StoreKind.MLFLOW, "sqlite:///x.db", "--mlflow")
    ]


def test_environment_then_config_then_discovery_per_kind(tmp_path: Path) -> None:
    _mlflow_db(tmp_path / "mlflow.db")
    _optuna_db(tmp_path / "optuna.db")
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    specs = resolve_stores(env=env, cwd=tmp_path, config=FileConfig())
    assert [(s.kind, s.uri, s.source) for s in specs] == [
        (StoreKind.MLFLOW, "http://127.0.0.1:5000", "MLFLOW_TRACKING_URI"),
        (StoreKind.OPTUNA, "sqlite:///optuna.db", "found optuna.db"),
    ]


def test_pyproject_tool_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.mltidy]\nmlflow = "sqlite:///runs.db"\n'
        'optuna = ["sqlite:///a.db", "journal.log"]\nstale_after = "2h"\n'
    )
    config = load_file_config(tmp_path)
    assert config.get_str("stale_after") == "2h"
    specs = resolve_stores(env={}, cwd=tmp_path, config=config)
    assert [(s.uri, s.source) for s in specs] == [
        ("sqlite:///runs.db", "pyproject.toml"),
        ("sqlite:///a.db", "pyproject.toml"),
        ("journal.log", "pyproject.toml"),
    ]


def test_mltidy_toml_is_found_from_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / "mltidy.toml").write_text('optuna = "sqlite:///o.db"\n')
    (tmp_path / "sub").mkdir()
    config = load_file_config(tmp_path / "sub")
    assert config.path == tmp_path / "mltidy.toml"
    assert config.get_list("optuna") == ["sqlite:///o.db"]


def test_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "mltidy.toml").write_text("mlflow = [1, 2]\n")
    config = load_file_config(tmp_path)
    with pytest.raises(UsageError):
        config.get_list("mlflow")
    (tmp_path / "mltidy.toml").write_text("mlflow = \n")
    with pytest.raises(UsageError):
        load_file_config(tmp_path)
