"""``scan``: read every selected store and judge every unfinished run and trial.

MLflow stores are read first, so that an Optuna trial can inherit the evidence of the MLflow run
it trained in (linked by ``mlflow_run_id``, or by the trial tags mltidy's MLflow plugin wrote).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from mltidy.backends.identity import store_id
from mltidy.backends.interface import Backend
from mltidy.backends.registry import backend_factory, open_backend
from mltidy.config import StoreSpec
from mltidy.errors import StoreError
from mltidy.judge import Policy, Provenance, judge
from mltidy.links import LinkBases, record_url
from mltidy.model import (
    JudgedRecord,
    Record,
    RecordKind,
    Selection,
    StoreId,
    StoreKind,
    StoreStatus,
    VerdictKind,
)
from mltidy.probe import LocalFacts
from mltidy.provenance import facts as keys
from mltidy.provenance.mlflow_keys import STUDY, TRIAL_ID, TRIAL_NUMBER


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


class RunIndex:
    """The MLflow runs seen so far, to lend their evidence to the Optuna trials they trained."""

    def __init__(self) -> None:
        self.by_id: dict[str, Record] = {}
        self.by_trial: dict[tuple[str, str], Record] = {}
        self.backends: list[Backend] = []

    def add(self, run: Record) -> None:
        """Remember a run (and the trial it names, if the plugin tagged it)."""
        self.by_id[run.id] = run
        study = run.tags.get(STUDY)
        if study:
            if run.tags.get(TRIAL_ID):
                self.by_trial[(study, "id:" + run.tags[TRIAL_ID])] = run
            if run.tags.get(TRIAL_NUMBER):
                self.by_trial[(study, "number:" + run.tags[TRIAL_NUMBER])] = run

    def _lookup(self, run_id: str) -> Record | None:
        if run_id in self.by_id:
            return self.by_id[run_id]
        for backend in self.backends:
            try:
                found = backend.read(run_id)
            except StoreError:
                continue
            if found is not None:
                self.by_id[run_id] = found
                return found
        return None

    def run_of(self, trial: Record) -> Record | None:
        """The MLflow run a trial trained in, if one is known."""
        run_id = trial.tags.get("mlflow_run_id")
        if run_id:
            found = self._lookup(run_id)
            if found is not None:
                return found
        by_id = self.by_trial.get((trial.container, "id:" + trial.id))
        if by_id is not None:
            return by_id
        return self.by_trial.get((trial.container, f"number:{trial.trial_number}"))

    def enrich(self, trial: Record) -> Record:
        """A trial without provenance of its own inherits its run's provenance and activity."""
        if Provenance.from_tags(trial.tags) is not None:
            return trial
        run = self.run_of(trial)
        if run is None:
            return trial
        inherited = {
            k: v
            for k, v in run.tags.items()
            if k.startswith(keys.PREFIX) and not k.startswith(keys.PREFIX + "optuna.")
        }
        activity = [t for t in (trial.last_activity_at, run.last_activity_at) if t is not None]
        return dataclasses.replace(
            trial,
            tags={**inherited, **trial.tags},
            last_activity_at=max(activity) if activity else None,
            evidence_from=run.id,
        )


def iter_scan(
    specs: Iterable[StoreSpec],
    selection: Selection,
    policy: Policy,
    facts: LocalFacts,
    *,
    this_host: bool = False,
    bases: LinkBases | None = None,
) -> Iterator[ScanEvent]:
    """Stream the scan: each record as soon as it is judged, and each store's status after it.

    A store that fails yields a failed :class:`StoreStatus` and the scan goes on with the next.
    With ``this_host``, only records whose provenance names this host are judged.

    Raises:
        UsageError: a store URI has a scheme mltidy cannot read (checked before any store is read).
    """
    ordered = sorted(specs, key=lambda s: s.kind is StoreKind.OPTUNA)
    for spec in ordered:
        backend_factory(spec.kind, spec.uri)
    index = RunIndex()
    try:
        for spec in ordered:
            yield from _scan_store(spec, selection, policy, facts, index, this_host, bases)
    finally:
        for backend in index.backends:
            backend.close()


def _scan_store(
    spec: StoreSpec,
    selection: Selection,
    policy: Policy,
    facts: LocalFacts,
    index: RunIndex,
    this_host: bool,
    bases: LinkBases | None,
) -> Iterator[ScanEvent]:
    shown = store_id(spec.kind, spec.uri)
    tracking = spec.uri if spec.uri.startswith("http") else None
    try:
        backend = open_backend(spec.kind, spec.uri)
    except StoreError as exc:
        yield _failed(spec, shown, exc)
        return
    keep_open = spec.kind is StoreKind.MLFLOW
    if keep_open:
        index.backends.append(backend)
    try:
        detail = backend.describe()
        for record in backend.iter_active(selection):
            if record.kind is RecordKind.MLFLOW_RUN:
                index.add(record)
            else:
                record = index.enrich(record)
            if this_host and record.tags.get(keys.HOST) != facts.host:
                continue
            verdict = judge(record, facts, policy)
            yield JudgedRecord(record, verdict, record_url(record, tracking, bases))
    except StoreError as exc:
        yield _failed(spec, shown, exc)
        return
    finally:
        if not keep_open:
            backend.close()
    yield StoreStatus(shown, spec.kind, ok=True, source=spec.source, detail=detail)


def _failed(spec: StoreSpec, shown: StoreId, exc: StoreError) -> StoreStatus:
    message = exc.message + (f" (hint: {exc.hint})" if exc.hint else "")
    return StoreStatus(shown, spec.kind, ok=False, error=message, source=spec.source)


def scan(
    specs: Iterable[StoreSpec],
    selection: Selection,
    policy: Policy,
    facts: LocalFacts,
    *,
    this_host: bool = False,
    bases: LinkBases | None = None,
    on_event: Callable[[ScanEvent], None] | None = None,
) -> ScanResult:
    """Read every store and judge its unfinished records."""
    stores: list[StoreStatus] = []
    records: list[JudgedRecord] = []
    for event in iter_scan(specs, selection, policy, facts, this_host=this_host, bases=bases):
        if on_event is not None:
            on_event(event)
        if isinstance(event, StoreStatus):
            stores.append(event)
        else:
            records.append(event)
    return ScanResult(tuple(stores), tuple(records))
