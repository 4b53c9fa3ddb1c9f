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

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mltidy.backends.mlflow.client import MlflowClientBackend, looks_like_mlruns
    from mltidy.backends.mlflow.library import MlflowSqlLibraryBackend
    from mltidy.backends.mlflow.sql import MlflowSqlBackend

#: Each name and the module that holds it, imported when the name is first read: a store opens
#: one backend, and importing every family member costs it milliseconds.
_WHERE = {
    "MlflowClientBackend": "client",
    "looks_like_mlruns": "client",
    "MlflowSqlLibraryBackend": "library",
    "MlflowSqlBackend": "sql",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{module}"), name)


__all__ = [
    "MlflowClientBackend",
    "MlflowSqlBackend",
    "MlflowSqlLibraryBackend",
    "looks_like_mlruns",
]
