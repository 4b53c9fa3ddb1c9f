"""From a store URI to the backend that reads it.

SQL stores have two read paths. The fast path (``mlflow/sql.py``, ``optuna/sql.py``) reads the
tables with SQLAlchemy Core and imports neither mlflow nor optuna; it is chosen when the store's
schema version is one it knows (``schema_versions.py``). Any other version is read through the
library (``mlflow/library.py``, ``optuna/library.py``), and a debug message says so.
``MLTIDY_READ_PATH=fast|library`` forces one path (for tests, benchmarks and a store whose
version check is wrong).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mltidy import names
from mltidy.backends.identity import scheme_of
from mltidy.backends.interface import Backend
from mltidy.backends.sql import is_sqlite_file, with_installed_driver
from mltidy.errors import UsageError
from mltidy.model import StoreKind
from mltidy.redact import redact

if TYPE_CHECKING:
    from mltidy.backends.mlflow.sql import MlflowSqlBackend
    from mltidy.backends.optuna.sql import OptunaSqlBackend

SQL_SCHEMES = frozenset({"sqlite", "postgresql", "postgres", "mysql", "mariadb"})
MLFLOW_CLIENT_SCHEMES = frozenset({"", "file"})
MLFLOW_SERVER_SCHEMES = frozenset({"http", "https"})
OPTUNA_JOURNAL_SCHEMES = frozenset({"", "file", "journal", "redis", "rediss"})
READ_PATH_ENV = names.READ_PATH_ENV
READ_PATHS = ("auto", "fast", "library")


def _debug(message: str, *args: object) -> None:
    """Log on mltidy's logger (``logging`` is imported when something is logged)."""
    import logging

    logging.getLogger(__name__).debug(message, *args)


def read_path() -> str:
    """``auto`` (by schema version), ``fast`` or ``library``, from ``MLTIDY_READ_PATH``.

    Raises:
        UsageError: the variable holds something else.
    """
    value = os.environ.get(READ_PATH_ENV, "").strip().lower() or "auto"
    if value not in READ_PATHS:
        raise UsageError(
            f"{READ_PATH_ENV}={value} is not one of {', '.join(READ_PATHS)}",
            hint="unset it to let mltidy choose the read path by the store's schema version",
        )
    return value


def open_mlflow_sql(uri: str, *, writable: bool = False) -> Backend:
    """An MLflow SQL store on the fast path, or on the library path when its revision is new.

    Raises:
        StoreError: the store cannot be opened on the chosen path.
    """
    from mltidy.backends.mlflow.library import MlflowSqlLibraryBackend
    from mltidy.backends.mlflow.sql import MlflowSqlBackend

    return _open_sql(uri, writable, MlflowSqlBackend, (MlflowSqlLibraryBackend, "MlflowClient"))


def open_optuna_sql(uri: str, *, writable: bool = False) -> Backend:
    """An Optuna RDB storage on the fast path, or on the library path when its version is new.

    Raises:
        StoreError: the storage cannot be opened on the chosen path.
    """
    from mltidy.backends.optuna.library import OptunaSqlLibraryBackend
    from mltidy.backends.optuna.sql import OptunaSqlBackend

    return _open_sql(uri, writable, OptunaSqlBackend, (OptunaSqlLibraryBackend, "RDBStorage"))


def _open_sql(
    uri: str,
    writable: bool,
    fast_path: Callable[..., MlflowSqlBackend | OptunaSqlBackend],
    library_path: tuple[Callable[..., Backend], str],
) -> Backend:
    """The fast path's backend when ``MLTIDY_READ_PATH`` and the store's schema version allow
    it, else the library path's (``library_path``: the class, and what it reads through)."""
    mode = read_path()
    library, through = library_path
    uri = with_installed_driver(uri)  # the library path needs it as much as the fast path
    if mode == "library":
        return library(uri, writable=writable)
    fast = fast_path(uri, writable=writable)
    if mode == "fast" or fast.schema_known:
        return fast
    fast.close()
    _debug(
        "%s: %s is not one the fast path knows; reading it through %s",
        redact(uri),
        fast.schema,
        through,
    )
    return library(uri, writable=writable)


def open_mlflow_server(uri: str, *, writable: bool = False) -> Backend:
    """A tracking server over MLflow's REST API, or through ``MlflowClient`` when asked
    (``MLTIDY_READ_PATH=library``) or when its auth needs MLflow's own client (plugins, SigV4).

    Raises:
        StoreError: the server cannot be reached or read.
    """
    from mltidy.backends.mlflow.rest import MlflowRestBackend, needs_mlflow_client

    reason = f"{READ_PATH_ENV}=library" if read_path() == "library" else needs_mlflow_client()
    if reason is None:
        return MlflowRestBackend(uri, writable=writable)
    _debug("%s: reading through MlflowClient (%s)", redact(uri), reason)
    from mltidy.backends.mlflow.client import MlflowClientBackend

    return MlflowClientBackend(uri, writable=writable)


def recognised_uri(kind: StoreKind, uri: str, cwd: Path | None = None) -> str:
    """A plain path to an SQLite database (``--optuna path/to/optuna.db``) as the
    ``sqlite:///`` URL it is, recognised by its content as discovery recognises stores; every
    other URI as it was given. (Without this, a plain path names a journal file or an ``mlruns``
    folder, and an SQLite file is refused as neither.)"""
    if scheme_of(uri) != "":
        return uri
    path = Path(uri).expanduser()
    if not path.is_absolute():
        path = (cwd or Path.cwd()) / path
    if path.is_file() and is_sqlite_file(path):
        return f"sqlite:///{path}"
    return uri


def backend_factory(kind: StoreKind, uri: str) -> Callable[..., Backend]:
    """The backend class (or, for SQL stores, the function choosing the read path) for
    ``uri``, found without any I/O.

    Raises:
        UsageError: the scheme is not one mltidy reads for this kind of store, or
            ``MLTIDY_READ_PATH`` is invalid.
    """
    scheme = scheme_of(uri)
    if kind is StoreKind.MLFLOW:
        if scheme in SQL_SCHEMES:
            read_path()
            return open_mlflow_sql
        if scheme in MLFLOW_SERVER_SCHEMES:
            read_path()
            return open_mlflow_server
        if scheme in MLFLOW_CLIENT_SCHEMES:
            from mltidy.backends.mlflow.client import MlflowClientBackend

            return MlflowClientBackend
        raise UsageError(
            f"mltidy cannot read MLflow stores with the {scheme}:// scheme ({redact(uri)})",
            hint="use sqlite:///, postgresql://, mysql://, file:/path/to/mlruns or http(s)://",
        )
    if scheme in SQL_SCHEMES:
        read_path()
        return open_optuna_sql
    if scheme in OPTUNA_JOURNAL_SCHEMES:
        from mltidy.backends.optuna.journal import OptunaJournalBackend

        return OptunaJournalBackend
    raise UsageError(
        f"mltidy cannot read Optuna storages with the {scheme}:// scheme ({redact(uri)})",
        hint="use sqlite:///, postgresql://, mysql://, a journal file path or redis://",
    )


def open_backend(kind: StoreKind, uri: str, *, writable: bool = False) -> Backend:
    """Open the backend for ``uri`` (``writable`` for commands that change records).

    Raises:
        UsageError: the scheme is not one mltidy reads for this kind of store.
        StoreError: the store cannot be opened (missing, unreachable, not that kind of store).
    """
    return backend_factory(kind, uri)(uri, writable=writable)
