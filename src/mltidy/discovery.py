"""Stores found in a folder by their content (SQLite schema, journal format, ``mlruns`` layout),
never by file name: the last step of finding stores, after options, environment and config."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from mltidy.backends.identity import store_spec
from mltidy.backends.sql import recover_hot_journal
from mltidy.bounded import HEAD_BYTES, read_head
from mltidy.model import StoreKind, StoreSpec

SKIP_DIRS = frozenset(
    {"node_modules", "__pycache__", "site-packages", "venv", "env", "build", "dist", "artifacts"}
)
SQLITE_MAGIC = b"SQLite format 3\x00"
#: How much of an unreadable SQLite file is searched for the table names of a store.
SNIFF_BYTES = 64 * 1024


def discover(cwd: Path) -> list[StoreSpec]:
    """Stores in ``cwd`` and one level below, recognised by content, in a stable order."""
    specs: list[StoreSpec] = []
    for entry in _entries(cwd):
        spec = identify(entry, cwd)
        if spec is not None:
            specs.append(spec)
        elif entry.is_dir() and not _skipped(entry):
            for child in _entries(entry):
                child_spec = identify(child, cwd)
                if child_spec is not None:
                    specs.append(child_spec)
    return specs


def _entries(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    except OSError:
        return []


def _skipped(folder: Path) -> bool:
    return folder.name in SKIP_DIRS or (folder / "pyvenv.cfg").exists()


def identify(path: Path, cwd: Path) -> StoreSpec | None:
    """What store ``path`` holds, judged by its content, or ``None``.

    Reads a few KB at most (:mod:`mltidy.bounded`), never blocks on a lock, and never leaves a
    store out because a writer holds it or died in it: such a store is returned like any other,
    and reading it then reports what is wrong, as for a store given with ``--mlflow``.
    """
    from mltidy.backends.mlflow.client import looks_like_mlruns
    from mltidy.backends.optuna.journal import looks_like_journal

    shown = _display(path, cwd)
    source = f"found {shown}"
    if path.is_dir():
        if looks_like_mlruns(path):
            return store_spec(StoreKind.MLFLOW, f"file:{shown}", source, cwd)
        return None
    head = read_head(path, HEAD_BYTES)
    if not head:
        return None
    if head.startswith(SQLITE_MAGIC):
        kind = sqlite_store_kind(path)
        if kind is not None:
            return store_spec(kind, f"sqlite:///{shown}", source, cwd)
        return None
    if looks_like_journal(path, HEAD_BYTES):
        return store_spec(StoreKind.OPTUNA, shown, source, cwd)
    return None


#: How much work SQLite may do to list a candidate's tables (virtual machine steps, in
#: thousands): enough for any real schema, a bound for a hostile file.
SCHEMA_STEPS = 200


def _tables(path: Path, *, immutable: bool) -> set[str]:
    """The table names of a SQLite file, read-only (raises sqlite3 errors).

    ``immutable`` skips SQLite's locks and journal: the file is read as it is on disk, so a
    writer holding a lock, or one that died mid-transaction and left a hot journal, cannot make
    discovery wait or skip it (the schema of a store does not change under its writers).
    """
    flags = "mode=ro&immutable=1" if immutable else "mode=ro"
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?{flags}", uri=True, timeout=2)
    try:
        steps = 0

        def budget() -> int:
            nonlocal steps
            steps += 1
            return 1 if steps > SCHEMA_STEPS else 0

        conn.set_progress_handler(budget, 1000)
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table' LIMIT 1000")
        return {str(row[0]) for row in rows}
    finally:
        conn.close()


def sqlite_store_kind(path: Path) -> StoreKind | None:
    """Whether a SQLite file is an MLflow or an Optuna database, or ``None``.

    A file SQLite cannot read as it lies on disk (a writer died mid-write) is read again the
    way an explicit store is: its hot journal rolled back first (docs/stores.md). A file whose
    tables cannot be read at all is still returned as a store when its first pages name the
    tables of one, so that reading it reports the problem instead of it silently missing.
    """
    try:
        names = _tables(path, immutable=True)
    except sqlite3.Error:
        try:
            recover_hot_journal(path.resolve())
            names = _tables(path, immutable=False)
        except (OSError, sqlite3.Error):
            return _sniffed_kind(path)
    return _kind_of(names)


def _kind_of(names: set[str]) -> StoreKind | None:
    if {"runs", "experiments", "alembic_version"} <= names:
        return StoreKind.MLFLOW
    if {"studies", "trials", "version_info"} <= names:
        return StoreKind.OPTUNA
    return None


def _sniffed_kind(path: Path) -> StoreKind | None:
    """The kind of store a SQLite file that cannot be read looks like, from the table names in
    its first pages (where SQLite keeps its schema)."""
    head = read_head(path, SNIFF_BYTES) or b""
    if b"alembic_version" in head and b"experiments" in head:
        return StoreKind.MLFLOW
    if b"version_info" in head and b"trials" in head:
        return StoreKind.OPTUNA
    return None


def _display(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)
