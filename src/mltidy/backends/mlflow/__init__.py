"""The MLflow family: every way mltidy reads and changes an MLflow tracking store.

* ``sql.py``: SQL stores at a schema revision the fast path knows, through SQLAlchemy Core.
* ``library.py``: SQL stores at other revisions, through ``MlflowClient`` after safety checks.
* ``client.py``: ``mlruns`` file stores (and tracking servers on request), through
  ``MlflowClient``.
* ``rest.py``: tracking servers, through MLflow's REST API (``rest_client.py``).

They share helpers, never classes: ``client_ops.py`` (what both ``MlflowClient`` backends do),
``schema.py`` (the tables, and the check that runs before either SQL path), ``runs.py`` (runs as
records and link candidates). Importing this package imports neither mlflow nor SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mltidy.backends.lazy_members import lazy_members

if TYPE_CHECKING:
    from mltidy.backends.mlflow.client import MlflowClientBackend, looks_like_mlruns
    from mltidy.backends.mlflow.library import MlflowSqlLibraryBackend
    from mltidy.backends.mlflow.sql import MlflowSqlBackend

#: Each name and the member module that holds it, imported when the name is first read.
__getattr__ = lazy_members(
    __name__,
    {
        "MlflowClientBackend": "client",
        "looks_like_mlruns": "client",
        "MlflowSqlLibraryBackend": "library",
        "MlflowSqlBackend": "sql",
    },
)


__all__ = [
    "MlflowClientBackend",
    "MlflowSqlBackend",
    "MlflowSqlLibraryBackend",
    "looks_like_mlruns",
]
