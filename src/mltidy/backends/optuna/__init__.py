"""The Optuna family: every way mltidy reads and changes an Optuna storage.

* ``sql.py``: RDB storages at a schema version the fast path knows, through SQLAlchemy Core
  (``sql_studies.py``: its per-study queries).
* ``library.py``: RDB storages at other versions, through ``RDBStorage`` after safety checks.
* ``journal.py``: journal files and redis journals, through ``JournalStorage``.

They share helpers, never classes: ``storage_ops.py`` (what both storage-API backends do),
``tables.py`` (the tables, and the check that runs before either RDB path), ``trials.py``
(trials as records), ``time.py`` (Optuna's naive datetimes), ``retry.py`` (retries as Optuna's
callback makes them). Importing this package imports neither optuna nor SQLAlchemy.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mltidy.backends.lazy_members import lazy_members

if TYPE_CHECKING:
    from mltidy.backends.optuna.journal import OptunaJournalBackend, looks_like_journal
    from mltidy.backends.optuna.library import OptunaSqlLibraryBackend
    from mltidy.backends.optuna.sql import OptunaSqlBackend

#: Each name and the member module that holds it, imported when the name is first read.
__getattr__ = lazy_members(
    __name__,
    {
        "OptunaJournalBackend": "journal",
        "looks_like_journal": "journal",
        "OptunaSqlLibraryBackend": "library",
        "OptunaSqlBackend": "sql",
    },
)


__all__ = [
    "OptunaJournalBackend",
    "OptunaSqlBackend",
    "OptunaSqlLibraryBackend",
    "looks_like_journal",
]
