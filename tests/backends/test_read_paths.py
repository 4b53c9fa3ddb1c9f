"""The two read paths of SQL stores: the fast path and the library path return the same records,
the schema version picks between them, and neither path ever changes a store it refuses."""

from __future__ import annotations

import hashlib
import logging
import shutil
import sqlite3
import warnings
from pathlib import Path

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from killed_jobs import KilledJobs
from mltidy.backends import Selection, open_backend
from mltidy.backends.identity import sqlite_file
from mltidy.backends.mlflow.library import MlflowSqlLibraryBackend
from mltidy.backends.mlflow.sql import MlflowSqlBackend
from mltidy.backends.optuna.library import OptunaSqlLibraryBackend
from mltidy.backends.optuna.sql import OptunaSqlBackend
from mltidy.backends.schema_versions import MLFLOW_REVISIONS
from mltidy.cli.app import app
from mltidy.errors import NotAStore, UnsupportedSchema, UsageError
from mltidy.model import Record, StoreKind

WORLDS = ["sqlite_world", pytest.param("postgres_world", marks=pytest.mark.postgres)]
KINDS = [StoreKind.MLFLOW, StoreKind.OPTUNA]


def _uri(world: KilledJobs, kind: StoreKind) -> str:
    return world.mlflow_uri if kind is StoreKind.MLFLOW else world.optuna_url


def _read(
    monkeypatch: pytest.MonkeyPatch, kind: StoreKind, uri: str, path: str, extra: list[str]
) -> tuple[type, dict[str, Record], dict[str, Record | None]]:
    """Every active record, and ``read()`` of each of them and of ``extra`` ids, on one path."""
    monkeypatch.setenv("MLTIDY_READ_PATH", path)
    with open_backend(kind, uri) as backend:
        active = {r.id: r for r in backend.iter_active(Selection())}
        fresh = {i: backend.read(i) for i in [*active, *extra]}
        return type(backend), active, fresh


def assert_same_records(fast: Record | None, library: Record | None) -> None:
    """Field for field, including the tags the judge reads. Activity times agree to the second:
    Optuna heartbeats are measured against the database clock, read once per read."""
    assert (fast is None) == (library is None)
    if fast is None or library is None:
        return
    assert fast.kind is library.kind
    for field in ("store", "id", "name", "container", "container_id", "state", "started_at"):
        assert getattr(fast, field) == getattr(library, field), field
    assert fast.trial_number == library.trial_number
    assert fast.user == library.user
    assert dict(fast.tags) == dict(library.tags)
    if fast.last_activity_at is None or library.last_activity_at is None:
        assert fast.last_activity_at == library.last_activity_at
    else:
        assert abs((fast.last_activity_at - library.last_activity_at).total_seconds()) < 1


def _compare_paths(
    monkeypatch: pytest.MonkeyPatch, kind: StoreKind, uri: str, extra: list[str]
) -> dict[str, Record]:
    fast_type, fast, fast_read = _read(monkeypatch, kind, uri, "fast", extra)
    library_type, library, library_read = _read(monkeypatch, kind, uri, "library", extra)
    assert fast_type in (MlflowSqlBackend, OptunaSqlBackend)
    assert library_type in (MlflowSqlLibraryBackend, OptunaSqlLibraryBackend)
    assert fast and set(fast) == set(library)
    for record_id, record in fast.items():
        assert_same_records(record, library[record_id])
    assert set(fast_read) == set(library_read)
    for record_id, record in fast_read.items():
        assert_same_records(record, library_read[record_id])
    return fast


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
@pytest.mark.parametrize("world_name", WORLDS)
def test_both_paths_return_the_same_records(
    world_name: str,
    kind: StoreKind,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world: KilledJobs = request.getfixturevalue(world_name)
    finished = [str(world.finished.run_id)] if kind is StoreKind.MLFLOW else []
    records = _compare_paths(monkeypatch, kind, _uri(world, kind), [*finished, "987654"])
    if kind is StoreKind.MLFLOW:
        assert str(world.sigkilled.run_id) in records
        assert records[str(world.sigkilled.run_id)].last_activity_at is not None
        assert any(key.startswith("mltidy.") for key in records[str(world.sigkilled.run_id)].tags)
    else:
        assert any(r.tags.get("mlflow_run_id") == world.sigkilled.run_id for r in records.values())


def _optuna_with_heartbeats(url: str) -> None:
    """Trials written by optuna itself: one with a heartbeat and attributes of several JSON
    types, one without a heartbeat."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # heartbeats outside optimize() are "experimental"
        storage = optuna.storages.RDBStorage(url, heartbeat_interval=60)
        study = optuna.create_study(study_name="beats", storage=storage)
        trial = study.ask()
    storage.record_heartbeat(trial._trial_id)
    trial.set_user_attr("mlflow_run_id", "0123456789abcdef")
    trial.set_user_attr("mltidy.note", {"epochs": 3, "ok": True})
    storage.set_trial_system_attr(trial._trial_id, "mltidy.host", "gpu-01")
    storage.set_trial_system_attr(trial._trial_id, "mltidy.pid", 4121)
    storage.set_trial_system_attr(trial._trial_id, "unrelated", "not read")
    study.ask()
    storage.remove_session()
    storage.engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def heartbeat_storage(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'beats.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    _optuna_with_heartbeats(url)
    return url


def test_both_paths_read_optuna_heartbeats_and_attributes_alike(
    heartbeat_storage: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = _compare_paths(monkeypatch, StoreKind.OPTUNA, heartbeat_storage, [])
    beating = [r for r in records.values() if r.last_activity_at is not None]
    assert len(records) == 2 and len(beating) == 1
    assert dict(beating[0].tags) == {
        "mlflow_run_id": "0123456789abcdef",
        "mltidy.note": '{"epochs": 3, "ok": true}',
        "mltidy.host": "gpu-01",
        "mltidy.pid": "4121",
    }


# ------------------------------------------------------------------------------------------
# Choosing the path
# ------------------------------------------------------------------------------------------


@pytest.fixture
def copies(sqlite_world: KilledJobs, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Copies of the sqlite world's stores, to change their schema version; run in an empty
    working folder, so that anything a library writes next to it would show."""
    for uri, name in ((sqlite_world.mlflow_uri, "mlflow.db"), (sqlite_world.optuna_url, "o.db")):
        source = sqlite_file(uri)
        assert source is not None
        shutil.copy(source, tmp_path / name)
    work = tmp_path / "cwd"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("MLTIDY_READ_PATH", raising=False)
    return tmp_path


def _sql(path: Path, *statements: str) -> None:
    with sqlite3.connect(path) as conn:
        for statement in statements:
            conn.execute(statement)
    conn.close()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _snapshot(folder: Path) -> dict[str, str]:
    return {p.name: _digest(p) for p in sorted(folder.iterdir()) if p.is_file()}


def test_known_versions_take_the_fast_path(copies: Path) -> None:
    with open_backend(StoreKind.MLFLOW, f"sqlite:///{copies / 'mlflow.db'}") as backend:
        assert isinstance(backend, MlflowSqlBackend)
        assert "schema revision " + MLFLOW_REVISIONS[-1] in backend.describe()
    with open_backend(StoreKind.OPTUNA, f"sqlite:///{copies / 'o.db'}") as backend:
        assert isinstance(backend, OptunaSqlBackend)


def test_unknown_versions_take_the_library_path_and_say_so(
    copies: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("mltidy.backends.mlflow.sql.mlflow_fast_revisions", frozenset)
    monkeypatch.setattr("mltidy.backends.optuna.tables.OPTUNA_REVISIONS", ())
    before = _snapshot(copies)
    with caplog.at_level(logging.DEBUG, logger="mltidy"):
        with open_backend(StoreKind.MLFLOW, f"sqlite:///{copies / 'mlflow.db'}") as backend:
            assert isinstance(backend, MlflowSqlLibraryBackend)
            assert list(backend.iter_active(Selection()))
        with open_backend(StoreKind.OPTUNA, f"sqlite:///{copies / 'o.db'}") as backend:
            assert isinstance(backend, OptunaSqlLibraryBackend)
            assert list(backend.iter_active(Selection()))
    messages = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert any(
        "not one the fast path knows; reading it through MlflowClient" in m for m in messages
    )
    assert any("not one the fast path knows; reading it through RDBStorage" in m for m in messages)
    assert _snapshot(copies) == before
    assert list((copies / "cwd").iterdir()) == []


def test_debug_option_shows_the_path_taken(copies: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("mltidy.backends.mlflow.sql.mlflow_fast_revisions", frozenset)
    uri = f"sqlite:///{copies / 'mlflow.db'}"
    result = CliRunner().invoke(app, ["--debug", "scan", "--format", "json", "--mlflow", uri])
    assert result.exit_code == 0, result.stderr
    assert "mltidy: debug: " in result.stderr and "reading it through MlflowClient" in result.stderr
    assert '"records"' in result.stdout


def test_forced_paths_and_a_bad_value(copies: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    uri = f"sqlite:///{copies / 'mlflow.db'}"
    monkeypatch.setenv("MLTIDY_READ_PATH", "library")
    with open_backend(StoreKind.MLFLOW, uri) as backend:
        assert isinstance(backend, MlflowSqlLibraryBackend)
    monkeypatch.setattr("mltidy.backends.mlflow.sql.mlflow_fast_revisions", frozenset)
    monkeypatch.setenv("MLTIDY_READ_PATH", "fast")
    with open_backend(StoreKind.MLFLOW, uri) as backend:
        assert isinstance(backend, MlflowSqlBackend)
    monkeypatch.setenv("MLTIDY_READ_PATH", "quick")
    with pytest.raises(UsageError, match="MLTIDY_READ_PATH"):
        open_backend(StoreKind.MLFLOW, uri)
    result = CliRunner().invoke(app, ["scan", "--mlflow", uri])
    assert result.exit_code == 2
    assert "MLTIDY_READ_PATH=quick" in result.stderr


def _refused_unchanged(
    copies: Path, kind: StoreKind, name: str, match: str, path: str = "auto"
) -> UnsupportedSchema:
    before = _snapshot(copies)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLTIDY_READ_PATH", path)
        with pytest.raises(UnsupportedSchema, match=match) as raised:
            open_backend(kind, f"sqlite:///{copies / name}")
    assert _snapshot(copies) == before
    assert list((copies / "cwd").iterdir()) == []
    return raised.value


def test_a_newer_mlflow_revision_is_refused_not_migrated(copies: Path) -> None:
    _sql(copies / "mlflow.db", "UPDATE alembic_version SET version_num = 'fffffffffff0'")
    error = _refused_unchanged(copies, StoreKind.MLFLOW, "mlflow.db", "fffffffffff0")
    assert error.hint is not None and "newer mlflow" in error.hint


def test_an_older_revision_reads_fast_but_the_library_would_migrate_it(copies: Path) -> None:
    _sql(copies / "mlflow.db", f"UPDATE alembic_version SET version_num = '{MLFLOW_REVISIONS[-2]}'")
    error = _refused_unchanged(
        copies, StoreKind.MLFLOW, "mlflow.db", MLFLOW_REVISIONS[-2], path="library"
    )
    assert error.hint is not None and "mlflow db upgrade" in error.hint
    with open_backend(StoreKind.MLFLOW, f"sqlite:///{copies / 'mlflow.db'}") as backend:
        assert isinstance(backend, MlflowSqlBackend)
        assert list(backend.iter_active(Selection()))


def test_missing_mlflow_tables_are_not_created(copies: Path) -> None:
    _sql(copies / "mlflow.db", "DROP TABLE webhook_events")
    _refused_unchanged(copies, StoreKind.MLFLOW, "mlflow.db", "missing", path="library")


def test_a_missing_default_experiment_is_not_inserted(copies: Path) -> None:
    _sql(copies / "mlflow.db", "DELETE FROM experiments WHERE experiment_id = 0")
    _refused_unchanged(copies, StoreKind.MLFLOW, "mlflow.db", "Default experiment", path="library")
    with open_backend(StoreKind.MLFLOW, f"sqlite:///{copies / 'mlflow.db'}") as backend:
        assert list(backend.iter_active(Selection()))


def test_an_unknown_optuna_revision_is_refused_not_migrated(copies: Path) -> None:
    _sql(copies / "o.db", "UPDATE alembic_version SET version_num = 'v9.9.9.a'")
    error = _refused_unchanged(copies, StoreKind.OPTUNA, "o.db", "no longer compatible")
    assert error.hint is not None and "optuna storage upgrade" in error.hint


def test_an_optuna_storage_without_version_rows_is_not_stamped(copies: Path) -> None:
    _sql(copies / "o.db", "DELETE FROM version_info")
    _refused_unchanged(copies, StoreKind.OPTUNA, "o.db", "version_info")
    _sql(copies / "o.db", "DELETE FROM alembic_version")
    _refused_unchanged(copies, StoreKind.OPTUNA, "o.db", "alembic_version", path="library")


# ------------------------------------------------------------------------------------------
# PostgreSQL: read-only sessions, and an empty database stays empty
# ------------------------------------------------------------------------------------------


def _read_only_setting(url: str) -> str:
    engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            return str(conn.execute(sa.text("SHOW default_transaction_read_only")).scalar())
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_library_path_sessions_on_postgres_are_read_only(
    postgres_world: KilledJobs, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLTIDY_READ_PATH", "library")
    with open_backend(StoreKind.MLFLOW, postgres_world.mlflow_uri) as backend:
        assert isinstance(backend, MlflowSqlLibraryBackend)
        assert _read_only_setting(backend.tracking_uri) == "on"
    with open_backend(StoreKind.OPTUNA, postgres_world.optuna_url) as backend:
        assert isinstance(backend, OptunaSqlLibraryBackend)
        with backend._rdb.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW default_transaction_read_only")).scalar() == "on"
    with open_backend(StoreKind.OPTUNA, postgres_world.optuna_url, writable=True) as backend:
        assert isinstance(backend, OptunaSqlLibraryBackend)
        with backend._rdb.engine.connect() as conn:
            assert conn.execute(sa.text("SHOW default_transaction_read_only")).scalar() == "off"


@pytest.mark.parametrize("kind", KINDS, ids=lambda k: k.value)
@pytest.mark.parametrize("path", ["auto", "library"])
def test_an_empty_postgres_database_stays_empty(
    postgres_url: str, kind: StoreKind, path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLTIDY_READ_PATH", path)
    with pytest.raises(NotAStore):
        open_backend(kind, postgres_url)
    engine = sa.create_engine(postgres_url, poolclass=sa.pool.NullPool)
    try:
        assert sa.inspect(engine).get_table_names() == []
    finally:
        engine.dispose()
