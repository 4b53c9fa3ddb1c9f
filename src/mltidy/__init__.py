"""mltidy: experiment-tracking hygiene for MLflow and Optuna.

The package root stays import-light: importing :mod:`mltidy` must not import mlflow, optuna or
sqlalchemy, so that ``mltidy --help`` is instant.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
