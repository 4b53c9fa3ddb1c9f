"""The shared adapter layer over MLflow tracking stores and Optuna storages.

Importing this package imports no database or ML library; backends import them when opened.
"""

from mltidy.backends.interface import Backend
from mltidy.backends.registry import open_backend
from mltidy.model import Selection

__all__ = ["Backend", "Selection", "open_backend"]
