"""``scan``: read every selected store and judge every unfinished run and trial.

MLflow stores are read first, so that an Optuna trial can inherit the evidence of the MLflow run
it trained in (linked by ``mlflow_run_id``, or by the trial tags mltidy's MLflow plugin wrote).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from mltidy import names
from mltidy.backends.session import StoreSession
from mltidy.errors import StoreError
from mltidy.judge import Policy, Provenance, judge
from mltidy.linking.urls import LinkBases
from mltidy.model import (
    JudgedRecord,
    Record,
    RecordKind,
    Selection,
    StoreKind,
    StoreSpec,
    StoreStatus,
)
from mltidy.probe import LocalFacts


@dataclass(frozen=True)
class ScanResult:
    """Every store's status and every judged record."""

    stores: tuple[StoreStatus, ...]
    records: tuple[JudgedRecord, ...]


ScanEvent = StoreStatus | JudgedRecord


class RunIndex:
    """The MLflow runs seen so far, to lend their evidence to the Optuna trials they trained."""

    def __init__(self, session: StoreSession) -> None:
        self.by_id: dict[str, Record] = {}
        self.by_trial: dict[tuple[str, str], Record] = {}
        self.session = session

    def add(self, run: Record) -> None:
        """Remember a run (and the trial it names, if the plugin tagged it)."""
        self.by_id[run.id] = run
        study = run.tags.get(names.RUN_STUDY)
        if study:
            if run.tags.get(names.RUN_TRIAL_ID):
                self.by_trial[(study, "id:" + run.tags[names.RUN_TRIAL_ID])] = run
            if run.tags.get(names.RUN_TRIAL_NUMBER):
                self.by_trial[(study, "number:" + run.tags[names.RUN_TRIAL_NUMBER])] = run

    def _lookup(self, run_id: str) -> Record | None:
        if run_id in self.by_id:
            return self.by_id[run_id]
        for _, backend in self.session.backends(StoreKind.MLFLOW):
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
        run_id = trial.tags.get(names.MLFLOW_RUN_ID)
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
            if k.startswith(names.PREFIX) and not k.startswith(names.RUN_TRIAL_PREFIX)
        }
        activity = [t for t in (trial.last_activity_at, run.last_activity_at) if t is not None]
        return dataclasses.replace(
            trial,
            tags={**inherited, **trial.tags},
            last_activity_at=max(activity) if activity else None,
            evidence_from=run.id,
        )


def iter_scan(
    session: StoreSession,
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
    """
    index = RunIndex(session)
    for spec in session.specs:
        yield from _scan_store(session, spec, selection, policy, facts, index, this_host, bases)


def _scan_store(
    session: StoreSession,
    spec: StoreSpec,
    selection: Selection,
    policy: Policy,
    facts: LocalFacts,
    index: RunIndex,
    this_host: bool,
    bases: LinkBases | None,
) -> Iterator[ScanEvent]:
    backend = session.backend(spec.key)
    if backend is None:
        yield session.status(spec.key)
        return
    bases = bases or LinkBases()
    try:
        for record in backend.iter_active(selection):
            if record.kind is RecordKind.MLFLOW_RUN:
                index.add(record)
            else:
                record = index.enrich(record)
            if this_host and record.tags.get(names.HOST) != facts.host:
                continue
            verdict = judge(record, facts, policy)
            yield JudgedRecord(record, verdict, bases.record(record))
    except StoreError as exc:
        session.fail(spec.key, exc)
    yield session.status(spec.key)


def scan(
    session: StoreSession,
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
    for event in iter_scan(session, selection, policy, facts, this_host=this_host, bases=bases):
        if on_event is not None:
            on_event(event)
        if isinstance(event, StoreStatus):
            stores.append(event)
        else:
            records.append(event)
    return ScanResult(tuple(stores), tuple(records))
