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

The config file is looked for in the current directory and its parents, stopping at a folder
with ``.git``, at the home directory and at the edge of the filesystem (:func:`search_folders`).
A file is used only if it belongs to the user (or root) and nobody else may write it
(:func:`untrusted`): a config file chooses which stores mltidy changes and where notifications
go, so one planted in a shared folder must not.

A config file is validated when it is read: an unknown key or a value of the wrong form is a
usage error that names the file, the key and the expected form.

Size: the single precedence path the CLI and library share: every setting's declaration, parsing
and validation of config files sit together so that no option is resolved elsewhere.
"""

from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta, tzinfo
from pathlib import Path
from typing import Any, Generic, TypeVar

from mltidy.backends.identity import store_id, store_spec
from mltidy.backends.optuna.time import parse_zone
from mltidy.durations import parse_duration
from mltidy.errors import UsageError
from mltidy.linking.urls import DEFAULT_DASHBOARD, LinkBases
from mltidy.model import StoreKind, StoreSpec
from mltidy.text import is_utf8

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


def _zone_item(value: str) -> str:
    """``+09:00``, ``Asia/Tokyo``, or ``STORE=+09:00`` (one storage's writer zone)."""
    _, _, zone = value.strip().rpartition("=")
    parse_zone(zone)
    return value.strip()


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
OPTUNA_UTC_OFFSET: Setting[str] = Setting(
    "optuna_utc_offset",
    "MLTIDY_OPTUNA_UTC_OFFSET",
    _zone_item,
    "a UTC offset such as +09:00, a time zone such as Asia/Tokyo, or STORE=OFFSET",
    many=True,
)
SETTINGS: tuple[Setting[Any], ...] = (
    STALE_AFTER,
    IDLE_AFTER,
    MLFLOW_UI,
    DASHBOARD_URL,
    NOTIFY,
    MLFLOW_STORES,
    OPTUNA_STORES,
    OPTUNA_UTC_OFFSET,
)
_BY_KEY = {s.key: s for s in SETTINGS}


@dataclass(frozen=True)
class FileConfig:
    """The ``[tool.mltidy]`` table (or ``mltidy.toml``), validated, and where it came from.

    ``ignored`` lists the config files found on the way that were not trusted, each with why
    (``path: reason``).
    """

    path: Path | None = None
    values: Mapping[str, Any] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()

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


#: A config file larger than this is not a config file.
MAX_CONFIG_BYTES = 1 << 20


def untrusted(info: os.stat_result) -> str | None:
    """Why a config file with this ``stat`` may not be used, or ``None`` when it may: it must
    belong to the user running mltidy (or to root) and be writable by nobody else, since it
    chooses the stores mltidy changes and where notifications go."""
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    if uid is not None and info.st_uid not in (uid, 0):
        return f"owned by uid {info.st_uid}, not by this user or root"
    if info.st_mode & 0o022:
        return "writable by others (group or world)"
    return None


def _read_trusted(candidate: Path) -> str | tuple[str]:
    """The text of a config file, or ``(why,)`` when it is not trusted. The checks and the read
    use one open file, so the file cannot be swapped in between.

    Raises:
        UsageError: the file cannot be read, is too large or is not UTF-8.
    """
    try:
        with candidate.open("rb") as handle:
            why = untrusted(os.fstat(handle.fileno()))
            if why is not None:
                return (why,)
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise UsageError(f"cannot read {candidate} ({exc.strerror})") from exc
    if len(data) > MAX_CONFIG_BYTES:
        raise UsageError(f"{candidate} is larger than a config file can be (1 MiB)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UsageError(f"{candidate} is not valid TOML (not UTF-8: {exc.reason})") from exc


def search_folders(cwd: Path, home: Path | None = None) -> list[Path]:
    """The folders searched for a config file, nearest first: ``cwd`` and its parents, up to
    the first of: a folder with ``.git``, the home directory, the edge of ``cwd``'s filesystem
    (a mount point, as git stops), the root. The ``.git`` stop is applied while searching."""
    try:
        home = (home or Path.home()).resolve()
    except (OSError, RuntimeError, KeyError):
        home = None
    try:
        device = cwd.stat().st_dev
    except OSError:
        return []
    folders: list[Path] = []
    for folder in (cwd, *cwd.parents):
        try:
            if folder.stat().st_dev != device:
                break
        except OSError:
            break
        folders.append(folder)
        if home is not None and folder == home:
            break
    return folders


def load_file_config(cwd: Path, home: Path | None = None) -> FileConfig:
    """Read ``mltidy.toml`` or ``[tool.mltidy]`` of ``pyproject.toml`` in ``cwd`` or a parent
    (:func:`search_folders`), skipping files that are not trusted (:func:`untrusted`).

    Raises:
        UsageError: the file exists but is not valid TOML, or holds unknown keys or bad values.
    """
    ignored: list[str] = []
    for folder in search_folders(cwd, home):
        for name in CONFIG_NAMES:
            candidate = folder / name
            if not candidate.is_file():
                continue
            text = _read_trusted(candidate)
            if isinstance(text, tuple):
                ignored.append(f"{candidate}: {text[0]}")
                continue
            if sys.version_info >= (3, 11):  # imported here: most runs read no config file
                import tomllib
            else:  # pragma: no cover - Python 3.10
                import tomli as tomllib  # type: ignore[import-not-found,unused-ignore]
            try:
                data: Any = tomllib.loads(text)
            except tomllib.TOMLDecodeError as exc:
                raise UsageError(f"{candidate} is not valid TOML ({exc})") from exc
            if name == "pyproject.toml":
                data = data.get("tool", {}).get("mltidy") if isinstance(data, dict) else None
            if isinstance(data, dict):
                return FileConfig(candidate, _check(candidate, data), tuple(ignored))
        if (folder / ".git").exists():
            break
    return FileConfig(ignored=tuple(ignored))


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

    def writer_zones(self, given: Iterable[str] | None = None) -> WriterZones:
        """The writer zones of Optuna storages that keep naive local times (Optuna 4.x):
        ``--optuna-utc-offset``, else ``MLTIDY_OPTUNA_UTC_OFFSET``, else the config file. An
        item ``STORE=OFFSET`` is one storage's (its URI or path); a bare offset, every other's.

        Raises:
            UsageError: an offset or zone that does not parse.
        """
        items = self.values(OPTUNA_UTC_OFFSET, given)
        source = self.source_of(OPTUNA_UTC_OFFSET, list(given or ()))
        zones: dict[str | None, tuple[tzinfo, str]] = {}
        for item in items:
            store, _, text = item.rpartition("=")
            try:
                zone = parse_zone(text)
            except ValueError as exc:
                raise UsageError(
                    f"{source}: {item!r} is not {OPTUNA_UTC_OFFSET.expected} ({exc})"
                ) from None
            key = store_id(StoreKind.OPTUNA, store, self.cwd) if store else None
            zones[key] = (zone, source)
        return zones

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


#: The writer zone of naive local Optuna times, per storage identity (``None``: any storage),
#: with where it was set.
WriterZones = dict[str | None, tuple[tzinfo, str]]


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
    environ = dict(os.environ if env is None else env)
    for setting in SETTINGS:
        value = environ.get(setting.env or "")
        if value is not None and not is_utf8(value):
            raise UsageError(
                f"{setting.env} is not valid UTF-8", hint=f"it must be {setting.expected}"
            )
    return Config(load_file_config(cwd), environ, cwd)


__all__ = [
    "DASHBOARD_URL",
    "IDLE_AFTER",
    "MLFLOW_UI",
    "NOTIFY",
    "OPTUNA_UTC_OFFSET",
    "SETTINGS",
    "STALE_AFTER",
    "Config",
    "FileConfig",
    "Setting",
    "load_config",
    "load_file_config",
]
