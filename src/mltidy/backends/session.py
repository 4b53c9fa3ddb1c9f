"""A store session: the stores one command works on, each checked once, opened once, closed once.

Every command (scan, close, declutter, link, watch, run, doctor) works on a session instead of
opening stores itself:

* the URIs are checked when the session is made (a scheme no backend reads is a usage error,
  before any store is touched);
* each store is opened the first time it is needed, read-only, and kept open; a store that
  cannot be opened, or fails while it is read, is recorded as a failed :class:`StoreStatus`
  and the command goes on with the others;
* a store is made writable in place when a change is applied (:meth:`StoreSession.writable`);
* everything is closed at the end (the session is a context manager).

Stores are identified by their kind and :data:`~mltidy.model.StoreId` (secret-free, absolute;
one database may hold an MLflow store and an Optuna storage), never by redacted text; the secret
URI stays inside the session's :class:`~mltidy.model.StoreSpec`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo

from mltidy.backends.interface import Backend, MakesWritable, NaiveTimes
from mltidy.backends.registry import backend_factory, open_backend
from mltidy.errors import StoreError
from mltidy.model import StoreKey, StoreKind, StoreSpec, StoreStatus

Opener = Callable[..., Backend]


@dataclass
class _Slot:
    """One store of the session and how far it got."""

    spec: StoreSpec
    backend: Backend | None = None
    writable: bool = False
    error: StoreError | None = None
    detail: str | None = None
    opens: int = 0
    tried: bool = False
    notes: list[str] = field(default_factory=list)


class StoreSession:
    """The stores of one command. Use as a context manager.

    Args:
        specs: the stores, in the order they were given (duplicates by identity are dropped).
        opener: how a backend is opened (tests count opens through it).
        zones: the writer zone of Optuna storages that keep naive local times, by storage
            identity (``None``: every other storage), with where it was set; given to each such
            backend when it is opened.

    Raises:
        UsageError: a URI has a scheme no backend reads (nothing has been opened).
    """

    def __init__(
        self,
        specs: Sequence[StoreSpec],
        *,
        opener: Opener = open_backend,
        zones: Mapping[str | None, tuple[tzinfo, str]] | None = None,
    ) -> None:
        slots: dict[StoreKey, _Slot] = {}
        for spec in specs:
            backend_factory(spec.kind, spec.uri)
            slots.setdefault(spec.key, _Slot(spec))
        self._slots = slots
        self._opener = opener
        self._zones = dict(zones or {})

    # -- what the session holds ---------------------------------------------------------
    @property
    def specs(self) -> list[StoreSpec]:
        """The stores, MLflow first (trials borrow evidence from runs), each once."""
        return sorted((s.spec for s in self._slots.values()), key=_mlflow_first)

    def spec(self, store: StoreKey) -> StoreSpec:
        """The spec of a store in this session.

        Raises:
            KeyError: the store is not part of the session.
        """
        return self._slots[store].spec

    def __contains__(self, store: object) -> bool:
        return store in self._slots

    def __len__(self) -> int:
        return len(self._slots)

    def opens(self, store: StoreKey) -> int:
        """How often the store was opened (once, unless a writable re-open was needed)."""
        return self._slots[store].opens

    # -- opening ----------------------------------------------------------------------
    def backend(self, store: StoreKey) -> Backend | None:
        """The store's backend, opened on first use; ``None`` when it failed (recorded)."""
        slot = self._slots[store]
        if slot.backend is None and not slot.tried:
            slot.tried = True
            try:
                slot.backend = self._open(slot, writable=False)
                slot.detail = slot.backend.describe()
            except StoreError as exc:
                self._drop(slot, exc)
        return None if slot.error is not None else slot.backend

    def backends(self, kind: StoreKind | None = None) -> Iterator[tuple[StoreSpec, Backend]]:
        """Every store that opens, MLflow first (or of one kind), with its backend."""
        for spec in self.specs:
            if kind is not None and spec.kind is not kind:
                continue
            backend = self.backend(spec.key)
            if backend is not None:
                yield spec, backend

    def writable(self, store: StoreKey) -> Backend | None:
        """The store's backend, made writable in place; ``None`` when that failed (recorded)."""
        slot = self._slots[store]
        backend = self.backend(store)
        if backend is None or slot.writable:
            return backend
        try:
            if isinstance(backend, MakesWritable):
                backend.make_writable()
            else:
                backend.close()
                slot.backend = None
                slot.backend = self._open(slot, writable=True)
        except StoreError as exc:
            self._drop(slot, exc)
            return None
        slot.writable = True
        return slot.backend

    def _open(self, slot: _Slot, *, writable: bool) -> Backend:
        slot.opens += 1
        backend = self._opener(slot.spec.kind, slot.spec.uri, writable=writable)
        given = self._zones.get(slot.spec.id) or self._zones.get(None)
        if given is not None and isinstance(backend, NaiveTimes):
            backend.set_writer_zone(*given)
        return backend

    # -- what happened ----------------------------------------------------------------
    def fail(self, store: StoreKey, exc: StoreError) -> None:
        """Record that a store failed while it was read; it is not used again."""
        self._drop(self._slots[store], exc)

    def failed(self, store: StoreKey) -> bool:
        """Whether the store could not be opened or read."""
        return self._slots[store].error is not None

    def status(self, store: StoreKey) -> StoreStatus:
        """How the store fared so far (``ok`` unless it failed)."""
        slot = self._slots[store]
        spec = slot.spec
        if slot.error is not None:
            hint = f" (hint: {slot.error.hint})" if slot.error.hint else ""
            return StoreStatus(
                spec.id, spec.kind, ok=False, error=slot.error.message + hint, source=spec.source
            )
        return StoreStatus(spec.id, spec.kind, ok=True, source=spec.source, detail=slot.detail)

    def statuses(self) -> tuple[StoreStatus, ...]:
        """Every store's status, MLflow first, for the ones that were used."""
        return tuple(self.status(s.key) for s in self.specs if self._slots[s.key].tried)

    def _drop(self, slot: _Slot, exc: StoreError) -> None:
        slot.error = exc
        if slot.backend is not None:
            slot.backend.close()
            slot.backend = None

    # -- the end ----------------------------------------------------------------------
    def close(self) -> None:
        """Close every open store. Safe to call twice."""
        for slot in self._slots.values():
            if slot.backend is not None:
                slot.backend.close()
                slot.backend = None

    def __enter__(self) -> StoreSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _mlflow_first(spec: StoreSpec) -> bool:
    return spec.kind is StoreKind.OPTUNA


__all__ = ["StoreSession"]
