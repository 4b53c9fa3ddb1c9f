"""A SQL store's engine, shared by the MLflow and Optuna SQL backends by composition."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mltidy.backends.sql import create_reader_engine

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine


class LazyEngine:
    """SQLAlchemy's engine for one store: made on first use (a store read through ``sqlite3``
    may never need it), read-only until :meth:`make_writable`, disposed by :meth:`close`.

    Attributes:
        url: the store's URL, credentials included (a secret: never shown).
        writable: whether the engine (made now, or next) may write.
    """

    def __init__(self, url: str, *, writable: bool = False) -> None:
        self.url = url
        self.writable = writable
        self._made: Engine | None = None

    @property
    def engine(self) -> Engine:
        """The engine, made now if it was not yet."""
        if self._made is None:
            self._made = create_reader_engine(self.url, writable=self.writable)
        return self._made

    @property
    def writer(self) -> Engine | None:
        """The engine when it may write, else ``None``."""
        return self.engine if self.writable else None

    def make_writable(self) -> None:
        """From now on the engine is a writable one (a read-only one made before is disposed)."""
        self.writable = True
        self.close()

    def dialect(self, sqlite: bool) -> str:
        """The database's kind, in words (``sqlite`` without making an engine)."""
        return "sqlite" if sqlite else self.engine.dialect.name

    def close(self) -> None:
        """Dispose of the engine, if one was made (a later use makes another)."""
        if self._made is not None:
            self._made.dispose()
            self._made = None


__all__ = ["LazyEngine"]
