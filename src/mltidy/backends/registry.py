"""From a store URI to the backend that reads it."""

from __future__ import annotations

from collections.abc import Callable

from mltidy.backends.interface import Backend
from mltidy.errors import UsageError
from mltidy.model import StoreKind
from mltidy.redact import redact

SQL_SCHEMES = frozenset({"sqlite", "postgresql", "postgres", "mysql", "mariadb"})
MLFLOW_CLIENT_SCHEMES = frozenset({"", "file", "http", "https"})
OPTUNA_JOURNAL_SCHEMES = frozenset({"", "file", "journal", "redis", "rediss"})


def scheme_of(uri: str) -> str:
    """The URI scheme without a driver suffix (``postgresql+psycopg2`` -> ``postgresql``)."""
    head, sep, _ = uri.partition(":")
    if not sep or len(head) == 1 or "/" in head:  # a plain path, or a Windows drive letter
        return ""
    return head.split("+", 1)[0].lower()


def backend_factory(kind: StoreKind, uri: str) -> Callable[..., Backend]:
    """The backend class for ``uri``, found without any I/O.

    Raises:
        UsageError: the scheme is not one mltidy reads for this kind of store.
    """
    scheme = scheme_of(uri)
    if kind is StoreKind.MLFLOW:
        if scheme in SQL_SCHEMES:
            from mltidy.backends.mlflow_sql import MlflowSqlBackend

            return MlflowSqlBackend
        if scheme in MLFLOW_CLIENT_SCHEMES:
            from mltidy.backends.mlflow_client import MlflowClientBackend

            return MlflowClientBackend
        raise UsageError(
            f"mltidy cannot read MLflow stores with the {scheme}:// scheme ({redact(uri)})",
            hint="use sqlite:///, postgresql://, mysql://, file:/path/to/mlruns or http(s)://",
        )
    if scheme in SQL_SCHEMES:
        from mltidy.backends.optuna_sql import OptunaSqlBackend

        return OptunaSqlBackend
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
