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

from mltidy.backends.mlflow.client import MlflowClientBackend, looks_like_mlruns
from mltidy.backends.mlflow.library import MlflowSqlLibraryBackend
from mltidy.backends.mlflow.sql import MlflowSqlBackend

__all__ = [
    "MlflowClientBackend",
    "MlflowSqlBackend",
    "MlflowSqlLibraryBackend",
    "looks_like_mlruns",
]
