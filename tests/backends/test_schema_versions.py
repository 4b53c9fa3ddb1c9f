"""The schema versions the fast path knows include the installed libraries' newest ones.

When this fails after an MLflow or Optuna upgrade, regenerate the lists with
``python -m mltidy.backends.schema_versions`` and check that the fast path's columns
(``mlflow/sql.py``, ``optuna/sql.py``) are still there in the new migrations.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from mltidy.backends import schema_versions as versions


def test_the_installed_mlflow_head_revision_is_known() -> None:
    from mlflow.store.db.utils import _get_latest_schema_revision

    head = _get_latest_schema_revision()
    assert head in versions.MLFLOW_REVISIONS
    assert head in versions.mlflow_fast_revisions()


def test_the_installed_mlflow_migrations_are_the_embedded_chain() -> None:
    import mlflow

    folder = Path(mlflow.__file__).parent / "store" / "db_migrations" / "versions"
    chain = versions.collect(str(folder))
    assert chain[: len(versions.MLFLOW_REVISIONS)] == list(versions.MLFLOW_REVISIONS)


def test_the_installed_optuna_schema_is_known() -> None:
    import optuna
    from optuna.storages._rdb import models

    assert models.SCHEMA_VERSION == versions.OPTUNA_SCHEMA_VERSION
    folder = Path(optuna.__file__).parent / "storages" / "_rdb" / "alembic" / "versions"
    chain = versions.collect(str(folder))
    assert chain[-1] in versions.OPTUNA_REVISIONS
    assert chain[: len(versions.OPTUNA_REVISIONS)] == list(versions.OPTUNA_REVISIONS)


def test_fast_revisions_start_where_the_tables_it_reads_exist() -> None:
    fast = versions.mlflow_fast_revisions()
    assert versions.MLFLOW_FIRST_FAST in fast
    assert versions.MLFLOW_REVISIONS[0] not in fast


def test_collect_orders_a_chain_and_rejects_a_fork(tmp_path: Path) -> None:
    for name, revision, down in (
        ("b", "bbb", '"aaa"'),
        ("a", "aaa", "None"),
        ("c", "ccc", "'bbb'"),
    ):
        (tmp_path / f"{name}.py").write_text(f'revision = "{revision}"\ndown_revision = {down}\n')
    assert versions.collect(str(tmp_path)) == ["aaa", "bbb", "ccc"]
    (tmp_path / "d.py").write_text('revision = "ddd"\ndown_revision = "aaa"\n')
    with pytest.raises(ValueError, match="one chain"):
        versions.collect(str(tmp_path))
