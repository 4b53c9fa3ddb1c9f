"""A store's one canonical identity: what reports, links and the watch state call it.

The URI a person typed is relative to a folder and may hold a password; the identity is neither.
Files become absolute (symlinks resolved, so two paths to one store are one store); servers
lose their credentials, driver suffix and query string, and get a lower-case host. The identity
is secret-free by construction, so it is safe to print, to store in a tag and to key state by.
Computing it does no I/O beyond resolving a path.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote, unquote

from mltidy.model import StoreId, StoreKind, StoreSpec
from mltidy.redact import register_secret, split_credentials

_SCHEME_ALIASES = {"postgres": "postgresql", "mariadb": "mysql"}
#: What may stand before the path of an ``mlruns`` folder, and of a journal file.
FILE_STORE_PREFIXES = ("file://", "file:")
JOURNAL_PREFIXES = ("journal://", "journal:", "file://", "file:")


def scheme_of(uri: str) -> str:
    """The URI scheme without a driver suffix (``postgresql+psycopg2`` -> ``postgresql``)."""
    head, sep, _ = uri.partition(":")
    if not sep or len(head) == 1 or "/" in head:  # a plain path, or a Windows drive letter
        return ""
    return head.split("+", 1)[0].lower()


def sqlite_file(uri: str) -> Path | None:
    """The file behind a ``sqlite:///`` URL, or ``None`` for other URLs and in-memory databases."""
    if not uri.startswith("sqlite:"):
        return None
    rest = uri.split(":", 1)[1]
    if rest.startswith("////"):
        return Path(rest[3:])
    if rest.startswith("///"):
        path = rest[3:].split("?", 1)[0]
        return None if path in ("", ":memory:") else Path(path)
    return None


def local_path(kind: StoreKind, uri: str) -> Path | None:
    """The file or folder a local store lives in (sqlite file, ``mlruns`` folder, journal file),
    or ``None`` for server stores."""
    scheme = scheme_of(uri)
    if scheme == "sqlite":
        return sqlite_file(uri)
    if kind is StoreKind.MLFLOW and scheme in ("", "file"):
        return strip_scheme(uri, FILE_STORE_PREFIXES)
    if kind is StoreKind.OPTUNA and scheme in ("", "file", "journal"):
        return strip_scheme(uri, JOURNAL_PREFIXES)
    return None


def strip_scheme(uri: str, prefixes: tuple[str, ...]) -> Path:
    """The path in ``uri`` after the first of ``prefixes`` it starts with (``file://``, ...)."""
    for prefix in prefixes:
        if uri.startswith(prefix):
            return Path(uri[len(prefix) :])
    return Path(uri)


def absolute(path: Path, cwd: Path | None = None) -> Path:
    """``path`` made absolute against ``cwd`` (default: the current folder), symlinks resolved."""
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    try:
        return path.resolve(strict=False)
    except (OSError, RuntimeError):
        return path


def store_id(kind: StoreKind, uri: str, cwd: Path | None = None) -> StoreId:
    """The canonical identity of the store ``uri`` names (no secrets, no relative paths)."""
    path = local_path(kind, uri)
    scheme = scheme_of(uri)
    if path is not None:
        where = absolute(path, cwd)
        if scheme == "sqlite":
            return StoreId(f"sqlite:///{where}")
        if kind is StoreKind.MLFLOW:
            return StoreId(f"file://{where}")
        return StoreId(str(where))
    parts = split_credentials(uri)
    if not parts.scheme:
        return StoreId(uri)
    base = _SCHEME_ALIASES.get(scheme, scheme)
    rest = parts.rest.split("?", 1)[0].split("#", 1)[0]
    host, slash, tail = rest.partition("/")
    user = f"{parts.user}@" if parts.user else ""
    normalised = f"{base}://{user}{host.lower()}{slash}{tail}"
    if base in ("http", "https"):
        normalised = normalised.rstrip("/")
    return StoreId(normalised)


def store_spec(kind: StoreKind, uri: str, source: str, cwd: Path | None = None) -> StoreSpec:
    """A store to work on: its identity computed once, its password registered as a secret (so
    that no message can print it, whatever characters it holds)."""
    parts = split_credentials(uri)
    if parts.password:
        register_secret(parts.password)
        if parts.scheme and parts.user is not None:
            # A password may hold a raw "@", "/", "%" or a space (split at the last "@"):
            # percent-encoded, every driver reads the credentials the user meant, and none
            # echoes a piece of the password as a host name in its error.
            user = quote(unquote(parts.user), safe="")
            password = quote(unquote(parts.password), safe="")
            register_secret(password)
            uri = f"{parts.scheme}{user}:{password}@{parts.rest}"
    identity = store_id(kind, uri, cwd)
    if local_path(kind, uri) is not None:
        # A relative path means one thing here and another in the next folder: from now on the
        # store is named by its absolute path (query options of a sqlite URL are kept).
        _, question, query = uri.partition("?")
        uri = identity + (question + query if scheme_of(uri) == "sqlite" else "")
    return StoreSpec(kind, uri, source, identity)


__all__ = [
    "FILE_STORE_PREFIXES",
    "JOURNAL_PREFIXES",
    "StoreId",
    "absolute",
    "local_path",
    "scheme_of",
    "sqlite_file",
    "store_id",
    "store_spec",
    "strip_scheme",
]
