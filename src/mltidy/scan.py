"""``scan``: read every selected store and judge every unfinished run and trial."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from mltidy.backends.interface import Selection
from mltidy.backends.registry import backend_factory, open_backend
from mltidy.config import StoreSpec
from mltidy.errors import StoreError
from mltidy.judge import Policy, judge
from mltidy.links import record_url
from mltidy.model import JudgedRecord, StoreStatus, VerdictKind
from mltidy.redact import redact


@dataclass(frozen=True)
class ScanResult:
    """Every store's status and every judged record."""

    stores: tuple[StoreStatus, ...]
    records: tuple[JudgedRecord, ...]

    @property
    def failed_stores(self) -> tuple[StoreStatus, ...]:
        """Stores that could not be read."""
        return tuple(s for s in self.stores if not s.ok)

    def count(self, *kinds: VerdictKind) -> int:
        """How many records have one of these verdicts."""
        return sum(1 for r in self.records if r.verdict.kind in kinds)


ScanEvent = StoreStatus | JudgedRecord


def iter_scan(
    specs: Iterable[StoreSpec], selection: Selection, policy: Policy
) -> Iterator[ScanEvent]:
    """Stream the scan: each record as soon as it is judged, then its store's status.

    A store that fails yields a failed :class:`StoreStatus` and the scan goes on with the next.

    Raises:
        UsageError: a store URI has a scheme mltidy cannot read (checked before any store is read).
    """
    specs = list(specs)
    for spec in specs:
        backend_factory(spec.kind, spec.uri)
    for spec in specs:
        shown = redact(spec.uri)
        try:
            with open_backend(spec.kind, spec.uri) as backend:
                detail = backend.describe()
                tracking = spec.uri if spec.uri.startswith("http") else None
                for record in backend.iter_active(selection):
                    yield JudgedRecord(record, judge(record, policy), record_url(record, tracking))
        except StoreError as exc:
            message = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
            yield StoreStatus(shown, spec.kind, ok=False, error=message, source=spec.source)
            continue
        yield StoreStatus(shown, spec.kind, ok=True, source=spec.source, detail=detail)


def scan(
    specs: Iterable[StoreSpec],
    selection: Selection,
    policy: Policy,
    on_event: Callable[[ScanEvent], None] | None = None,
) -> ScanResult:
    """Read every store and judge its unfinished records."""
    stores: list[StoreStatus] = []
    records: list[JudgedRecord] = []
    for event in iter_scan(specs, selection, policy):
        if on_event is not None:
            on_event(event)
        if isinstance(event, StoreStatus):
            stores.append(event)
        else:
            records.append(event)
    return ScanResult(tuple(stores), tuple(records))
