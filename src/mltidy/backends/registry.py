"""From a store URI to the backend that reads it.

SQL stores have two read paths. The fast path (``mlflow_sql.py``, ``optuna_sql.py``) reads the
tables with SQLAlchemy Core and imports neither mlflow nor optuna; it is chosen when the store's
schema version is one it knows (``schema_versions.py``). Any other version is read through the
library (``mlflow_sql_library.py``, ``optuna_sql_library.py``), and a debug message says so.
``MLTIDY_READ_PATH=fast|library`` forces one path (for tests, benchmarks and a store whose
version check is wrong).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from mltidy.backends.identity import scheme_of
from mltidy.backends.interface import Backend
from mltidy.errors import UsageError
from mltidy.model import StoreKind
from mltidy.redact import redact

SQL_SCHEMES = frozenset({"sqlite", "postgresql", "postgres", "mysql", "mariadb"})
MLFLOW_CLIENT_SCHEMES = frozenset({"", "file", "http", "https"})
OPTUNA_JOURNAL_SCHEMES = frozenset({"", "file", "journal", "redis", "rediss"})
READ_PATH_ENV = "MLTIDY_READ_PATH"
READ_PATHS = ("auto", "fast", "library")

_log = logging.getLogger(__name__)


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
    from mltidy.backends.mlflow_sql import MlflowSqlBackend

    mode = read_path()
    if mode == "library":
        from mltidy.backends.mlflow_sql_library import MlflowSqlLibraryBackend

        return MlflowSqlLibraryBackend(uri, writable=writable)
    fast = MlflowSqlBackend(uri, writable=writable)
    if mode == "fast" or fast.schema_known:
        return fast
    fast.close()
    _log.debug(
        "%s: MLflow schema revision %s is not one the fast path knows; reading it through "
        "MlflowClient",
        redact(uri),
        fast.revision,
    )
    from mltidy.backends.mlflow_sql_library import MlflowSqlLibraryBackend

    return MlflowSqlLibraryBackend(uri, writable=writable)


def open_optuna_sql(uri: str, *, writable: bool = False) -> Backend:
    """An Optuna RDB storage on the fast path, or on the library path when its version is new.

    Raises:
        StoreError: the storage cannot be opened on the chosen path.
    """
    from mltidy.backends.optuna_sql import OptunaSqlBackend

    mode = read_path()
    if mode == "library":
        from mltidy.backends.optuna_sql_library import OptunaSqlLibraryBackend

        return OptunaSqlLibraryBackend(uri, writable=writable)
    fast = OptunaSqlBackend(uri, writable=writable)
    if mode == "fast" or fast.schema_known:
        return fast
    fast.close()
    _log.debug(
        "%s: Optuna schema %s/%s is not one the fast path knows; reading it through RDBStorage",
        redact(uri),
        fast.version.schema_version,
        fast.version.revision,
    )
    from mltidy.backends.optuna_sql_library import OptunaSqlLibraryBackend

    return OptunaSqlLibraryBackend(uri, writable=writable)


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
        if scheme in MLFLOW_CLIENT_SCHEMES:
            from mltidy.backends.mlflow_client import MlflowClientBackend

            return MlflowClientBackend
        raise UsageError(
            f"mltidy cannot read MLflow stores with the {scheme}:// scheme ({redact(uri)})",
            hint="use sqlite:///, postgresql://, mysql://, file:/path/to/mlruns or http(s)://",
        )
    if scheme in SQL_SCHEMES:
        read_path()
        return open_optuna_sql
    if scheme in OPTUNA_JOURNAL_SCHEMES:
        from mltidy.backends.optuna_journal import OptunaJournalBackend

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
