"""Settings, and the one order in which mltidy looks for each: option, environment, config file,
default.

Every setting is declared once (:class:`Setting`: its config key, its environment variable, how
to parse it, what a valid value looks like) and resolved by one function,
:meth:`Config.value`. Stores follow the same order per kind (MLflow, Optuna), with discovery by
content as the last step:

1. ``--mlflow`` / ``--optuna`` options (when any is given, only those are read);
2. ``MLFLOW_TRACKING_URI`` / ``OPTUNA_STORAGE``;
3. ``mlflow`` / ``optuna`` in ``mltidy.toml`` or ``[tool.mltidy]`` of ``pyproject.toml``;
4. stores found in the current directory and one level below (:mod:`mltidy.discovery`).

A config file is validated when it is read: an unknown key or a value of the wrong form is a
usage error that names the file, the key and the expected form.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Generic, TypeVar

from mltidy.backends.identity import store_spec
from mltidy.durations import parse_duration
from mltidy.errors import UsageError
from mltidy.linking.urls import DEFAULT_DASHBOARD, LinkBases
from mltidy.model import StoreKind, StoreSpec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]

T = TypeVar("T")

CONFIG_NAMES = ("mltidy.toml", "pyproject.toml")


def _text(value: str) -> str:
    if not value.strip():
        raise ValueError("empty")
    return value.strip()


def _url(value: str) -> str:
    value = value.strip()
    if not value.startswith(("http://", "https://")):
        raise ValueError("not an http(s) URL")
    return value


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One setting: where it is looked for, and what a valid value is.

    Attributes:
        key: its key in the config file.
        env: its environment variable (``None``: the command line and the file only).
        parse: turns the text into the value; raises ``ValueError`` or ``UsageError``.
        expected: what a valid value looks like, for error messages.
        many: a list of strings in the file (a string with spaces in the environment).
    """

    key: str
    env: str | None
    parse: Callable[[str], T]
    expected: str
    many: bool = False


DURATION = "a duration such as 90s, 30m, 2h or 7d"
STALE_AFTER: Setting[timedelta] = Setting(
    "stale_after", "MLTIDY_STALE_AFTER", parse_duration, DURATION
)
IDLE_AFTER: Setting[timedelta] = Setting(
    "idle_after", "MLTIDY_IDLE_AFTER", parse_duration, DURATION
)
MLFLOW_UI: Setting[str] = Setting("mlflow_ui", "MLTIDY_MLFLOW_UI", _url, "an http(s) URL")
DASHBOARD_URL: Setting[str] = Setting(
    "dashboard_url", "MLTIDY_DASHBOARD_URL", _url, "an http(s) URL"
)
NOTIFY: Setting[str] = Setting(
    "notify", "MLTIDY_NOTIFY", _text, "an apprise URL or a list of them", many=True
)
MLFLOW_STORES: Setting[str] = Setting(
    "mlflow", "MLFLOW_TRACKING_URI", _text, "a tracking URI or a list of them", many=True
)
OPTUNA_STORES: Setting[str] = Setting(
    "optuna", "OPTUNA_STORAGE", _text, "a storage URL or a list of them", many=True
)
SETTINGS: tuple[Setting[Any], ...] = (
    STALE_AFTER,
    IDLE_AFTER,
    MLFLOW_UI,
    DASHBOARD_URL,
    NOTIFY,
    MLFLOW_STORES,
    OPTUNA_STORES,
)
_BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class FileConfig:
    """The ``[tool.mltidy]`` table (or ``mltidy.toml``), validated, and where it came from."""

    path: Path | None = None
    values: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """How messages call the file."""
        return str(self.path) if self.path else "config"


def _check(path: Path, table: Mapping[str, Any]) -> dict[str, Any]:
    """The table with every key known and every value of the right form.

    Raises:
        UsageError: an unknown key (with the closest known ones) or a bad value.
    """
    checked: dict[str, Any] = {}
    where = f"[tool.mltidy] in {path}" if path.name == "pyproject.toml" else str(path)
    for key, value in table.items():
        setting = _BY_KEY.get(key)
        if setting is None:
            close = difflib.get_close_matches(key, list(_BY_KEY), n=3)
            hint = f"did you mean {' or '.join(close)}?" if close else None
            known = ", ".join(_BY_KEY)
            raise UsageError(f"{where}: unknown key {key!r}", hint=hint or f"known keys: {known}")
        values = value if setting.many and isinstance(value, list) else [value]
        if not all(isinstance(v, str) for v in values):
            raise UsageError(f"{where}: {key} must be {setting.expected}, not {value!r}")
        for text in values:
            try:
                setting.parse(text)
            except (ValueError, UsageError):
                raise UsageError(f"{where}: {key} = {text!r} is not {setting.expected}") from None
        checked[key] = values if setting.many else value
    return checked


def load_file_config(cwd: Path) -> FileConfig:
    """Read ``mltidy.toml`` or ``[tool.mltidy]`` of ``pyproject.toml`` in ``cwd`` or a parent.

    Raises:
        UsageError: the file exists but is not valid TOML, or holds unknown keys or bad values.
    """
    for folder in (cwd, *cwd.parents):
        for name in CONFIG_NAMES:
            candidate = folder / name
            if not candidate.is_file():
                continue
            try:
                data: Any = tomllib.loads(candidate.read_text(encoding="utf-8"))
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
                raise UsageError(f"{candidate} is not valid TOML ({exc})") from exc
            if name == "pyproject.toml":
                data = data.get("tool", {}).get("mltidy") if isinstance(data, dict) else None
            if isinstance(data, dict):
                return FileConfig(candidate, _check(candidate, data))
        if (folder / ".git").exists():
            break
    return FileConfig()


@dataclass(frozen=True)
class Config:
    """Everything a command's settings come from, besides its own options."""

    file: FileConfig = field(default_factory=FileConfig)
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path = field(default_factory=Path.cwd)

    def value(self, setting: Setting[T], given: str | None = None) -> T | None:
        """The setting's value: ``given`` (the command-line option), else its environment
        variable, else the config file, else ``None`` (the caller's default).

        Raises:
            UsageError: the value does not parse; the message names where it came from.
        """
        for text, source in self._sources(setting, given):
            try:
                return setting.parse(text)
            except (ValueError, UsageError) as exc:
                detail = f" ({exc.message})" if isinstance(exc, UsageError) else ""
                raise UsageError(f"{source}: {text!r} is not {setting.expected}{detail}") from None
        return None

    def values(self, setting: Setting[str], given: Iterable[str] | None = None) -> list[str]:
        """A setting that takes several values (URLs): the first source that has any."""
        listed = [v for item in given or () for v in item.split()]
        if listed:
            return listed
        if setting.env and self.env.get(setting.env, "").strip():
            return self.env[setting.env].split()
        found = self.file.values.get(setting.key, [])
        return [v for item in found for v in item.split()]

    def source_of(self, setting: Setting[Any], given: object = None) -> str:
        """Where the setting's value comes from, for messages (``--notify``, ``MLTIDY_NOTIFY``,
        the config file)."""
        if given:
            return f"--{setting.key.replace('_', '-')}"
        if setting.env and self.env.get(setting.env, "").strip():
            return setting.env
        return self.file.path.name if self.file.path else "config"

    def _sources(self, setting: Setting[Any], given: str | None) -> Iterable[tuple[str, str]]:
        if given is not None:
            yield given, f"--{setting.key.replace('_', '-')}"
            return
        if setting.env and self.env.get(setting.env, "").strip():
            yield self.env[setting.env], setting.env
            return
        if setting.key in self.file.values:
            yield str(self.file.values[setting.key]), f"{self.file.name}: {setting.key}"

    def link_bases(self, mlflow_ui: str | None = None, dashboard: str | None = None) -> LinkBases:
        """Where people open runs and trials: options, else environment, else the file."""
        return LinkBases(
            mlflow_ui=self.value(MLFLOW_UI, mlflow_ui),
            dashboard=self.value(DASHBOARD_URL, dashboard) or DEFAULT_DASHBOARD,
        )

    def stores(self, mlflow: Iterable[str] = (), optuna: Iterable[str] = ()) -> list[StoreSpec]:
        """The stores a command works on, in the documented order of precedence."""
        explicit = [_spec(StoreKind.MLFLOW, u, "--mlflow", self.cwd) for u in mlflow]
        explicit += [_spec(StoreKind.OPTUNA, u, "--optuna", self.cwd) for u in optuna]
        if explicit:
            return explicit
        found: list[StoreSpec] | None = None
        specs: list[StoreSpec] = []
        for kind, setting in ((StoreKind.MLFLOW, MLFLOW_STORES), (StoreKind.OPTUNA, OPTUNA_STORES)):
            if setting.env and self.env.get(setting.env, "").strip():
                specs.append(_spec(kind, self.env[setting.env], setting.env, self.cwd))
            elif self.file.values.get(setting.key):
                base = self.file.path.parent if self.file.path else self.cwd
                name = self.file.path.name if self.file.path else "config"
                specs += [_spec(kind, uri, name, base) for uri in self.file.values[setting.key]]
            else:
                if found is None:
                    from mltidy.discovery import discover

                    found = discover(self.cwd)
                specs += [spec for spec in found if spec.kind is kind]
        return specs


def _spec(kind: StoreKind, uri: str, source: str, cwd: Path) -> StoreSpec:
    """A store given by a person: a plain path to an SQLite database is the database it is."""
    from mltidy.backends.registry import recognised_uri

    return store_spec(kind, recognised_uri(kind, uri, cwd), source, cwd)


def load_config(cwd: Path | None = None, env: Mapping[str, str] | None = None) -> Config:
    """The configuration in force for a command started in ``cwd`` (default: here).

    Raises:
        UsageError: a config file that is invalid.
    """
    cwd = cwd or Path.cwd()
    return Config(load_file_config(cwd), dict(os.environ if env is None else env), cwd)


__all__ = [
    "DASHBOARD_URL",
    "IDLE_AFTER",
    "MLFLOW_UI",
    "NOTIFY",
    "SETTINGS",
    "STALE_AFTER",
    "Config",
    "FileConfig",
    "Setting",
    "load_config",
    "load_file_config",
]
