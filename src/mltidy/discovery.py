"""Stores found in a folder by their content (SQLite schema, journal format, ``mlruns`` layout),
never by file name: the last step of finding stores, after options, environment and config."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from urllib.parse import quote

from mltidy.backends.identity import store_spec
from mltidy.model import StoreKind, StoreSpec

SKIP_DIRS = frozenset(
    {"node_modules", "__pycache__", "site-packages", "venv", "env", "build", "dist", "artifacts"}
)
SQLITE_MAGIC = b"SQLite format 3\x00"


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
    """What store ``path`` holds, judged by its content, or ``None``."""
    from mltidy.backends.mlflow.client import looks_like_mlruns
    from mltidy.backends.optuna.journal import looks_like_journal

    shown = _display(path, cwd)
    source = f"found {shown}"
    if path.is_dir():
        if looks_like_mlruns(path):
            return store_spec(StoreKind.MLFLOW, f"file:{shown}", source, cwd)
        return None
    if not path.is_file():
        return None
    kind = sqlite_store_kind(path)
    if kind is not None:
        return store_spec(kind, f"sqlite:///{shown}", source, cwd)
    if looks_like_journal(path):
        return store_spec(StoreKind.OPTUNA, shown, source, cwd)
    return None


def sqlite_store_kind(path: Path) -> StoreKind | None:
    """Whether a file is an MLflow or an Optuna SQLite database, read-only, or ``None``."""
    try:
        with path.open("rb") as handle:
            if handle.read(16) != SQLITE_MAGIC:
                return None
        conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=2)
        try:
            names = {
                row[0] for row in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        finally:
            conn.close()
    except (OSError, sqlite3.Error):
        return None
    if {"runs", "experiments", "alembic_version"} <= names:
        return StoreKind.MLFLOW
    if {"studies", "trials", "version_info"} <= names:
        return StoreKind.OPTUNA
    return None


def _display(path: Path, cwd: Path) -> str:
    try:
        return str(path.relative_to(cwd))
    except ValueError:
        return str(path)
