"""The contract every store backend keeps.

A backend adapts one MLflow tracking store or one Optuna storage to mltidy. The rules:

* **Reading never creates, migrates or locks a store for long.** Opening a backend on a path that
  does not exist raises :class:`~mltidy.errors.StoreNotFound` and leaves no file behind; a store
  with a schema the backend does not understand raises :class:`~mltidy.errors.UnsupportedSchema`
  instead of being upgraded.
* **Errors are translated at the boundary.** Every method raises only subclasses of
  :class:`~mltidy.errors.StoreError`; library exceptions (SQLAlchemy, MLflow, Optuna, requests)
  never escape. Messages never contain secrets.
* **Values are immutable and in UTC.** Methods return frozen :class:`~mltidy.model.Record`
  objects whose datetimes are timezone-aware UTC, whatever the store keeps.
* **Heavy imports are lazy.** Importing a backend module must not import mlflow, optuna or
  sqlalchemy; that happens when a backend is opened.
* **Never trust a server to filter.** Backends check states themselves before returning records.
* A backend is used from one thread at a time.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass

from mltidy.model import Record, StoreKind


@dataclass(frozen=True)
class Selection:
    """Which containers to read. Empty tuples mean all of them."""

    experiments: tuple[str, ...] = ()
    studies: tuple[str, ...] = ()

    def wants_experiment(self, name: str, experiment_id: str) -> bool:
        """Whether an experiment (by name or id) is selected."""
        return not self.experiments or name in self.experiments or experiment_id in self.experiments

    def wants_study(self, name: str) -> bool:
        """Whether a study is selected."""
        return not self.studies or name in self.studies


class Backend(abc.ABC):
    """One store, opened. Use it as a context manager, or call :meth:`close` when done.

    Attributes:
        kind: which kind of store this is.
        uri: the store's URI for display, with secrets redacted.
    """

    kind: StoreKind
    uri: str

    @abc.abstractmethod
    def describe(self) -> str:
        """One line about the store (backend type, schema version) for ``--verbose`` and doctor.

        Raises:
            StoreError: the store cannot be read.
        """

    @abc.abstractmethod
    def iter_active(self, selection: Selection) -> Iterator[Record]:
        """Every record still in the running state (MLflow ``RUNNING``, Optuna ``RUNNING``).

        Args:
            selection: which experiments or studies to read.

        Returns:
            Records in no particular order, streamed where the store allows it.

        Raises:
            StoreError: the store cannot be read.
        """

    @abc.abstractmethod
    def read(self, record_id: str) -> Record | None:
        """Read one record fresh from the store, whatever its state.

        Args:
            record_id: a run id, or a trial id as a string.

        Returns:
            The record, or ``None`` when the store has no such record.

        Raises:
            StoreError: the store cannot be read.
        """

    def close(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections. Safe to call twice."""

    def __enter__(self) -> Backend:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
