"""The worlds the hostile suite works in: templates built once, sandboxes copied per test."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Template:
    """A folder of stores written by killed jobs, and the ids the jobs reported."""

    root: Path
    run_id: str
    empty_run_id: str
    mlflow: str
    optuna: str


@dataclass(frozen=True)
class Sandbox:
    """One test's world: a copy of a template (``root``, the working folder), a home and a
    state folder of its own, inside ``top`` (everything the test may look at)."""

    top: Path
    root: Path
    home: Path
    state: Path
    template: Template | None

    @property
    def mlflow_db(self) -> Path:
        return self.root / "mlflow.db"

    @property
    def optuna_db(self) -> Path:
        return self.root / "optuna.db"
