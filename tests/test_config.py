"""Where stores come from: options, environment, config file, then discovery by schema."""

from __future__ import annotations

import json
import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest

from mltidy.config import STALE_AFTER, Config, FileConfig, load_file_config
from mltidy.discovery import discover
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
    root = tmp_path.resolve()
    assert found == {
        (StoreKind.MLFLOW, f"sqlite:///{root}/tracking.bin"),
        (StoreKind.OPTUNA, f"sqlite:///{root}/hpo/studies.sqlite3"),
        (StoreKind.OPTUNA, f"{root}/hpo/journal.txt"),
        (StoreKind.MLFLOW, f"file://{root}/experiments"),
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
    config = Config(env={"OPTUNA_STORAGE": "sqlite:///o.db"}, cwd=tmp_path)
    specs = config.stores(mlflow=["sqlite:///x.db"])
    assert [(s.kind, s.uri, s.source) for s in specs] == [
        (StoreKind.MLFLOW, f"sqlite:///{tmp_path}/x.db", "--mlflow")
    ]


def test_environment_then_config_then_discovery_per_kind(tmp_path: Path) -> None:
    _mlflow_db(tmp_path / "mlflow.db")
    _optuna_db(tmp_path / "optuna.db")
    env = {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}
    specs = Config(FileConfig(), env, tmp_path).stores()
    assert [(s.kind, s.uri, s.source) for s in specs] == [
        (StoreKind.MLFLOW, "http://127.0.0.1:5000", "MLFLOW_TRACKING_URI"),
        (StoreKind.OPTUNA, f"sqlite:///{tmp_path}/optuna.db", "found optuna.db"),
    ]


def test_pyproject_tool_table(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n\n[tool.mltidy]\nmlflow = "sqlite:///runs.db"\n'
        'optuna = ["sqlite:///a.db", "journal.log"]\nstale_after = "2h"\n'
    )
    config = Config(load_file_config(tmp_path), {}, tmp_path)
    assert config.value(STALE_AFTER) == timedelta(hours=2)
    specs = config.stores()
    assert [(s.uri, s.source) for s in specs] == [
        (f"sqlite:///{tmp_path}/runs.db", "pyproject.toml"),
        (f"sqlite:///{tmp_path}/a.db", "pyproject.toml"),
        (f"{tmp_path}/journal.log", "pyproject.toml"),
    ]


def test_mltidy_toml_is_found_from_a_subfolder(tmp_path: Path) -> None:
    (tmp_path / "mltidy.toml").write_text('optuna = "sqlite:///o.db"\n')
    (tmp_path / "sub").mkdir()
    config = load_file_config(tmp_path / "sub")
    assert config.path == tmp_path / "mltidy.toml"
    assert config.values["optuna"] == ["sqlite:///o.db"]
    # a relative store in a config file is relative to the file's folder, not to where mltidy runs
    (spec,) = Config(config, {}, tmp_path / "sub").stores()
    assert spec.uri == f"sqlite:///{tmp_path}/o.db"


def test_bad_config_is_a_usage_error(tmp_path: Path) -> None:
    (tmp_path / "mltidy.toml").write_text("mlflow = [1, 2]\n")
    with pytest.raises(UsageError):
        load_file_config(tmp_path)
    (tmp_path / "mltidy.toml").write_text("mlflow = \n")
    with pytest.raises(UsageError):
        load_file_config(tmp_path)


def test_optuna_utc_offset_from_option_environment_or_file(tmp_path: Path) -> None:
    from datetime import timedelta

    from mltidy.config import load_config

    (tmp_path / "mltidy.toml").write_text(
        'optuna_utc_offset = ["+09:00", "sqlite:///la.db=America/Los_Angeles"]\n'
    )
    config = load_config(tmp_path, env={})
    zones = config.writer_zones()
    default, source = zones[None]
    assert default.utcoffset(None) == timedelta(hours=9) and source == "mltidy.toml"
    (la, _) = zones[f"sqlite:///{tmp_path.resolve() / 'la.db'}"]
    assert str(la) == "America/Los_Angeles"
    from_env = load_config(tmp_path, env={"MLTIDY_OPTUNA_UTC_OFFSET": "-07:00"}).writer_zones()
    assert list(from_env) == [None] and from_env[None][1] == "MLTIDY_OPTUNA_UTC_OFFSET"
    given = config.writer_zones(["UTC"])
    assert given[None][1] == "--optuna-utc-offset"
    (tmp_path / "mltidy.toml").write_text('optuna_utc_offset = "+25:00"\n')
    with pytest.raises(UsageError, match="optuna_utc_offset"):
        load_config(tmp_path, env={})


def test_a_config_file_others_may_write_is_ignored(tmp_path: Path) -> None:
    (tmp_path / "mltidy.toml").write_text('notify = "json://collector.example/x"\n')
    (tmp_path / "mltidy.toml").chmod(0o666)
    (tmp_path / "proj").mkdir()
    found = load_file_config(tmp_path / "proj")
    assert found.path is None and found.values == {}
    assert found.ignored == (f"{tmp_path / 'mltidy.toml'}: writable by others (group or world)",)
    (tmp_path / "mltidy.toml").chmod(0o644)
    assert load_file_config(tmp_path / "proj").path == tmp_path / "mltidy.toml"


def test_the_search_stops_at_the_home_directory(tmp_path: Path) -> None:
    (tmp_path / "mltidy.toml").write_text('stale_after = "2h"\n')
    home = tmp_path / "home"
    (home / "proj").mkdir(parents=True)
    assert load_file_config(home / "proj", home=home).path is None
    assert load_file_config(home / "proj", home=tmp_path / "elsewhere").path is not None


def test_discovery_finds_a_locked_store(tmp_path: Path) -> None:
    _mlflow_db(tmp_path / "mlflow.db")
    holder = sqlite3.connect(tmp_path / "mlflow.db", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        (spec,) = discover(tmp_path)
    finally:
        holder.close()
    assert spec.kind is StoreKind.MLFLOW
