"""Where the stores are: options, environment, ``[tool.mltidy]``, then discovery by schema.

Order, for each kind of store (MLflow, Optuna) on its own:

1. ``--mlflow`` / ``--optuna`` options (when any is given, only those are read);
2. ``MLFLOW_TRACKING_URI`` / ``OPTUNA_STORAGE``;
3. ``mlflow`` / ``optuna`` keys of ``[tool.mltidy]`` in ``pyproject.toml`` or of ``mltidy.toml``;
4. stores found in the current directory and one level below, recognised by their content
   (SQLite schema, journal format, ``mlruns`` layout), never by file name.
"""

from __future__ import annotations

import sqlite3
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from mltidy.errors import UsageError
from mltidy.model import StoreKind

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

SKIP_DIRS = frozenset(
    {"node_modules", "__pycache__", "site-packages", "venv", "env", "build", "dist", "artifacts"}
)
SQLITE_MAGIC = b"SQLite format 3\x00"


@dataclass(frozen=True)
class StoreSpec:
    """A store to read and how mltidy came to it (shown to the user)."""

    kind: StoreKind
    uri: str
    source: str


@dataclass(frozen=True)
class FileConfig:
    """The ``[tool.mltidy]`` table (or ``mltidy.toml``) and where it came from."""

    path: Path | None = None
    values: Mapping[str, Any] = field(default_factory=dict)

    def get_list(self, key: str) -> list[str]:
        """A key that may be one string or a list of strings."""
        value = self.values.get(key)
        if value is None:
            return []
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return list(value)
        raise UsageError(f"{self.path}: '{key}' must be a string or a list of strings")

    def get_str(self, key: str) -> str | None:
        """A key that must be a string, if present."""
        value = self.values.get(key)
        if value is None or isinstance(value, str):
            return value
        raise UsageError(f"{self.path}: '{key}' must be a string")


def load_file_config(cwd: Path) -> FileConfig:
    """Read ``mltidy.toml`` or ``[tool.mltidy]`` of ``pyproject.toml`` in ``cwd`` or a parent.

    Raises:
        UsageError: the file exists but is not valid TOML.
    """
    for folder in (cwd, *cwd.parents):
        for name, table_path in (("mltidy.toml", ()), ("pyproject.toml", ("tool", "mltidy"))):
            candidate = folder / name
            if not candidate.is_file():
                continue
            try:
                data: Any = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise UsageError(f"{candidate} is not valid TOML ({exc})") from exc
            for key in table_path:
                data = data.get(key) if isinstance(data, dict) else None
            if isinstance(data, dict):
                return FileConfig(candidate, data)
        if (folder / ".git").exists():
            break
    return FileConfig()


def resolve_stores(
    *,
    mlflow: Iterable[str] = (),
    optuna: Iterable[str] = (),
    env: Mapping[str, str],
    cwd: Path,
    config: FileConfig | None = None,
) -> list[StoreSpec]:
    """The stores a command reads, in the documented order of precedence."""
    explicit = [StoreSpec(StoreKind.MLFLOW, uri, "--mlflow") for uri in mlflow]
    explicit += [StoreSpec(StoreKind.OPTUNA, uri, "--optuna") for uri in optuna]
    if explicit:
        return explicit
    config = config if config is not None else load_file_config(cwd)
    found: list[StoreSpec] | None = None
    specs: list[StoreSpec] = []
    for kind, variable in (
        (StoreKind.MLFLOW, "MLFLOW_TRACKING_URI"),
        (StoreKind.OPTUNA, "OPTUNA_STORAGE"),
    ):
        if env.get(variable):
            specs.append(StoreSpec(kind, env[variable], variable))
        elif config.get_list(kind.value):
            name = config.path.name if config.path else "config"
            specs += [StoreSpec(kind, uri, name) for uri in config.get_list(kind.value)]
        else:
            if found is None:
                found = discover(cwd)
            specs += [spec for spec in found if spec.kind is kind]
    return specs


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
            return StoreSpec(StoreKind.MLFLOW, f"file:{shown}", source)
        return None
    if not path.is_file():
        return None
    kind = sqlite_store_kind(path)
    if kind is not None:
        return StoreSpec(kind, f"sqlite:///{shown}", source)
    if looks_like_journal(path):
        return StoreSpec(StoreKind.OPTUNA, shown, source)
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
