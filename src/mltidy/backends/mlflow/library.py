"""MLflow SQL stores read through ``MlflowClient``: the library path.

The fast path (``sql.py``) reads MLflow's tables directly and so only trusts schema
revisions someone has checked (``schema_versions.py``). A store at any other revision is read
through MLflow itself, which knows its own schema: slower (importing mlflow costs seconds, and
``search_runs`` builds full ``Run`` objects), but right by construction.

MLflow's ``SqlAlchemyStore`` is not a reader, though: opened on a database that lacks any of its
tables it creates them and runs every migration, it refuses a schema that is not exactly its
head revision, and it inserts the Default experiment when that is missing. So before MLflow sees
the URL this module checks, on a read-only engine, that none of that can happen:

* the database is an MLflow store at all (the fast path's own table check runs first);
* its revision is the installed mlflow's head revision (else: which upgrade to run);
* every table of the installed mlflow's models exists (else MLflow would create them);
* the Default experiment (id 0) exists (else MLflow would insert it).

Only then is ``MlflowClient`` opened. For PostgreSQL the reading session is also made read-only
(``default_transaction_read_only``), so even a change in MLflow's start-up could not write.
Everything after opening is :class:`~mltidy.backends.mlflow.client_ops.ClientOps`: the same
code that reads file stores and tracking servers, with its re-read-then-write close.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mltidy import names
from mltidy.backends.identity import store_id
from mltidy.backends.mlflow.client_ops import ClientOps, ClientOpsBackend, quiet_mlflow
from mltidy.backends.mlflow.schema import inspect_store
from mltidy.backends.schema_versions import MLFLOW_REVISIONS
from mltidy.backends.sql import (
    PG_READ_ONLY_OPTIONS,
    create_reader_engine,
    takes_libpq_options,
    translate_sql_error,
)
from mltidy.errors import StoreError, UnsupportedSchema
from mltidy.model import (
    StoreKind,
)

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class MlflowSqlLibraryBackend(ClientOpsBackend):
    """An MLflow SQL store read through ``MlflowClient``, after checks that opening it is safe.

    Closing re-reads the run right before the write and skips it unless RUNNING (the client's
    API has no compare-and-set).
    """

    kind = StoreKind.MLFLOW

    def __init__(self, url: str, *, writable: bool = False) -> None:
        self.url = url
        self.uri = store_id(self.kind, url)
        url = "postgresql://" + url[len("postgres://") :] if url.startswith("postgres://") else url
        self.revision: str = _check_safe_to_open(url, self.uri)
        self.tracking_uri = url if writable else _read_only_url(url)
        self._ops = ClientOps(self.tracking_uri, self.uri)

    def describe(self) -> str:
        return (
            f"MLflow SQL store read through MlflowClient, schema revision {self.revision}, "
            f"{len(self._ops.experiments)} active experiments"
        )


def _check_safe_to_open(url: str, uri: str) -> str:
    """The store's revision, once it is certain that ``SqlAlchemyStore`` will not write to it.

    Raises:
        StoreNotFound, NotAStore: as the fast path raises them, before mlflow is imported.
        UnsupportedSchema: opening the store with the installed mlflow would change it.
        StoreError: the store cannot be read.
    """
    engine = create_reader_engine(url)
    try:
        revision, _ = inspect_store(engine, uri)
        head, version = _installed_mlflow_head(uri)
        if revision != head:
            raise UnsupportedSchema(
                f"{uri}: schema revision {revision or 'none'} is not the one the installed "
                f"mlflow {version} reads ({head})",
                hint=_upgrade_hint(revision, head),
            )
        _check_nothing_to_create(engine, uri)
    finally:
        engine.dispose()
    return head


def _installed_mlflow_head(uri: str) -> tuple[str, str]:
    quiet_mlflow()
    try:
        import mlflow
        from mlflow.store.db.utils import _get_latest_schema_revision

        head = _get_latest_schema_revision()  # type: ignore[no-untyped-call]
        return str(head), str(mlflow.__version__)
    except Exception as exc:
        raise StoreError(f"{uri}: mlflow cannot read this store's schema ({exc})") from exc


def _check_nothing_to_create(engine: Engine, uri: str) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        from mlflow.store.db.utils import _all_tables_exist

        complete = bool(_all_tables_exist(engine))  # type: ignore[no-untyped-call]
    except SQLAlchemyError as exc:
        raise translate_sql_error(exc, uri) from exc
    except Exception as exc:
        raise StoreError(f"{uri}: mlflow cannot read this store's schema ({exc})") from exc
    if not complete:
        raise UnsupportedSchema(
            f"{uri}: tables of the installed mlflow are missing, and mlflow would create them "
            "when opening the store",
            hint="mltidy never changes a store to read it; 'mlflow db upgrade' completes it",
        )
    try:
        with engine.connect() as conn:
            default = conn.execute(
                text("SELECT 1 FROM experiments WHERE experiment_id = 0")
            ).scalar()
    except SQLAlchemyError as exc:
        raise translate_sql_error(exc, uri) from exc
    if default is None:
        raise UnsupportedSchema(
            f"{uri} has no Default experiment (id 0), and mlflow would insert one when opening "
            "the store",
            hint=f"{names.READ_PATH_ENV}=fast reads it without mlflow",
        )


def _upgrade_hint(revision: str | None, head: str) -> str:
    known = list(MLFLOW_REVISIONS)
    if revision in known and head in known and known.index(revision) < known.index(head):
        return "the store is older than the installed mlflow: back it up, then 'mlflow db upgrade'"
    return "the store was written by a newer mlflow: pip install -U mlflow mltidy"


def _read_only_url(url: str) -> str:
    """``url`` with read-only sessions, for PostgreSQL drivers that take libpq options."""
    from sqlalchemy.engine import make_url

    if not takes_libpq_options(url):
        return url
    parsed = make_url(url)
    if "options" in parsed.query:
        return url
    return parsed.update_query_dict({"options": PG_READ_ONLY_OPTIONS}).render_as_string(
        hide_password=False
    )


__all__ = ["MlflowSqlLibraryBackend"]
