"""The store schema versions mltidy's SQL fast path knows, collected from MLflow and Optuna.

The fast path (``mlflow/sql.py``, ``optuna/sql.py``) reads a handful of long-stable columns
without importing mlflow or optuna. That is safe only for schemas someone has looked at: a store
at a revision not listed here is read through the library instead (``mlflow/library.py``,
``optuna/library.py``), which knows its own schema.

The lists are embedded, not computed at run time, because finding them means importing (or at
least locating) mlflow and optuna, which the fast path exists to avoid. They are regenerated when
a new MLflow or Optuna release adds a migration (``tests/backends/test_schema_versions.py``
fails until then)::

    python -m mltidy.backends.schema_versions
"""

from __future__ import annotations

#: MLflow's alembic revisions (``alembic_version.version_num``), oldest first, as collected from
#: ``mlflow/store/db_migrations/versions`` of mlflow 3.17.2.
MLFLOW_REVISIONS: tuple[str, ...] = (
    "451aebb31d03",
    "90e64c465722",
    "181f10493468",
    "df50e92ffc5e",
    "7ac759974ad8",
    "89d4b8295536",
    "2b4d017a5e9b",
    "cfd24bdc0731",
    "0a8213491aaa",
    "728d730b5ebd",
    "27a6a02d2cf1",
    "84291f40a231",
    "a8c4a736bde6",
    "39d1c3be5f05",
    "c48cb773bb87",
    "bd07f7e963c5",
    "0c779009ac13",
    "cc1f77228345",
    "97727af70f4d",
    "3500859a5d39",
    "7f2a7d5fae7d",
    "2d6e25af4d3e",
    "acf3f17fdcc7",
    "867495a8f9d4",
    "5b0e9adcef9c",
    "4465047574b1",
    "f5a4f2784254",
    "0584bdc529eb",
    "400f98739977",
    "6953534de441",
    "bda7b8c39065",
    "cbc13b556ace",
    "770bee3ae1dd",
    "a1b2c3d4e5f6",
    "de4033877273",
    "1a0cddfcaa16",
    "534353b11cbc",
    "71994744cf8e",
    "3da73c924c2f",
    "bf29a5ff90ea",
    "1bd49d398cd23",
    "b7c8d9e0f1a2",
    "5d2d30f0abce",
    "c9d4e5f6a7b8",
    "2c33131f4dae",
    "d3e4f5a6b7c8",
    "d0e1f2a3b4c5",
    "c8d9e0f1a2b3",
    "1b5f0d9ad7c1",
    "e1f2a3b4c5d6",
    "76601a5f987d",
    "c3d6457b6d8a",
    "a5b4c3d2e1f0",
    "ae8bbe7743c9",
    "7d34483879f0",
    "da6fb0208061",
    "89d3d66ed43f",
    "b7e4c1a90f23",
    "a8b9c0d1e2f3",
    "c1d2e3f4a5b6",
    "c3d9e7f1a2b4",
    "6f8d9c3b2a1e",
    "1971f2d9a75b",
    "17e22815139b",
    "b7e2c1a4d9f3",
    "75868b020152",
    "dc11669786a5",
)

#: The first MLflow revision with every table the fast path reads (``latest_metrics`` appeared in
#: 89d4b8295536); older stores go to the library path, which asks for ``mlflow db upgrade``.
MLFLOW_FIRST_FAST = "89d4b8295536"

#: Optuna's alembic revisions (``alembic_version.version_num`` in an Optuna storage), oldest
#: first, as collected from ``optuna/storages/_rdb/alembic/versions`` of optuna 5.0.0.
OPTUNA_REVISIONS: tuple[str, ...] = (
    "v0.9.0.a",
    "v1.2.0.a",
    "v1.3.0.a",
    "v2.4.0.a",
    "v2.6.0.a",
    "v3.0.0.a",
    "v3.0.0.b",
    "v3.0.0.c",
    "v3.0.0.d",
    "v3.2.0.a",
)

#: ``version_info.schema_version`` of every Optuna storage since schema management moved to
#: alembic (Optuna's ``models.SCHEMA_VERSION``, frozen at 12 since then).
OPTUNA_SCHEMA_VERSION = 12


def mlflow_fast_revisions() -> frozenset[str]:
    """The MLflow revisions the fast path reads."""
    return frozenset(MLFLOW_REVISIONS[MLFLOW_REVISIONS.index(MLFLOW_FIRST_FAST) :])


def collect(versions_dir: str) -> list[str]:
    """The revisions of an alembic ``versions`` folder, oldest first, read from the files'
    ``revision`` / ``down_revision`` lines (without importing them)."""
    import re
    from pathlib import Path

    parent: dict[str, str | None] = {}
    for path in Path(versions_dir).glob("*.py"):
        text = path.read_text(encoding="utf-8")
        revision = re.search(r"^revision\s*(?::[^=]*)?=\s*['\"]([^'\"]+)['\"]", text, re.M)
        down = re.search(
            r"^down_revision\s*(?::[^=]*)?=\s*(?:['\"]([^'\"]+)['\"]|None)", text, re.M
        )
        if revision and down:
            parent[revision.group(1)] = down.group(1)
    children = {down: rev for rev, down in parent.items()}
    chain: list[str] = []
    current = children.get(None)
    while current is not None:
        chain.append(current)
        current = children.get(current)
    if len(chain) != len(parent):
        raise ValueError(f"{versions_dir}: revisions do not form one chain")
    return chain


def _main() -> None:  # pragma: no cover - a developer tool
    from importlib.util import find_spec
    from pathlib import Path

    for package, sub in (
        ("mlflow", "store/db_migrations/versions"),
        ("optuna", "storages/_rdb/alembic/versions"),
    ):
        spec = find_spec(package)
        assert spec is not None and spec.submodule_search_locations
        folder = Path(next(iter(spec.submodule_search_locations))) / sub
        print(f"# {package}")
        for revision in collect(str(folder)):
            print(f'    "{revision}",')


if __name__ == "__main__":  # pragma: no cover
    _main()
