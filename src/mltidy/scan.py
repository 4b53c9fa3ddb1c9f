"""``scan``: read every selected store and judge every unfinished run and trial.

MLflow stores are read first, so that an Optuna trial can inherit the evidence of the MLflow run
it trained in (linked by ``mlflow_run_id``, or by the trial tags mltidy's MLflow plugin wrote).
Records are selected (:mod:`mltidy.scope`) before they are judged.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from mltidy import names
from mltidy.backends.interface import Backend, NaiveTimes, RhythmReader
from mltidy.backends.optuna.time import infer_offset
from mltidy.backends.session import StoreSession
from mltidy.errors import StoreError
from mltidy.evidence.local import LocalFacts
from mltidy.evidence.scheduler import SchedulerSource, ask, default_sources
from mltidy.judge import CERTAIN_HERE, RHYTHM_MATTERS, Policy, Provenance, judge
from mltidy.linking.urls import LinkBases
from mltidy.model import (
    ActivitySource,
    JudgedRecord,
    Record,
    RecordKind,
    Selection,
    StoreKind,
    StoreSpec,
    StoreStatus,
    Verdict,
)
from mltidy.scope import Named, Scope, stream_named


@dataclass(frozen=True)
class ScanResult:
    """Every store's status and every judged record."""

    stores: tuple[StoreStatus, ...]
    records: tuple[JudgedRecord, ...]
    missing: tuple[str, ...] = ()
    """Ids given with ``--run``/``--trial`` that named no unfinished record."""


@dataclass(frozen=True)
class LeftOut:
    """A record the scan did not judge (``--this-host``), and why."""

    record: Record
    why: str


@dataclass(frozen=True)
class NoMatch:
    """An id given with ``--run``/``--trial`` that named no unfinished record."""

    given: str


ScanEvent = StoreStatus | JudgedRecord | LeftOut | NoMatch


def names_of(event: ScanEvent) -> list[Named]:
    """The record an event is about, as ids name it (none for statuses)."""
    if isinstance(event, (JudgedRecord, LeftOut)):
        return [Named.of(event.record)]
    return []


class RunIndex:
    """The MLflow runs seen so far, to lend their evidence to the Optuna trials they trained."""

    def __init__(self, session: StoreSession) -> None:
        self.by_id: dict[str, Record] = {}
        self.by_trial: dict[tuple[str, str], Record] = {}
        self.session = session

    def add(self, run: Record) -> None:
        """Remember a run, and the trial its tags name (the plugin's, or mltidy link's)."""
        self.by_id[run.id] = run
        tags = run.tags
        for study, key, value in (
            (tags.get(names.RUN_STUDY), "id:", tags.get(names.RUN_TRIAL_ID)),
            (tags.get(names.RUN_STUDY), "number:", tags.get(names.RUN_TRIAL_NUMBER)),
            (tags.get(names.LINK_STUDY), "number:", tags.get(names.LINK_TRIAL_NUMBER)),
        ):
            if study and value:
                self.by_trial.setdefault((study, key + value), run)

    def lookup(self, run_id: str) -> Record | None:
        """A run by id: one seen so far, else read from the session's MLflow stores."""
        return self._lookup(run_id)

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

    def enrich(self, trial: Record, run: Record | None) -> Record:
        """A trial takes its run's (:meth:`run_of`) activity when newer than its own, and its
        run's provenance when it has none of its own (the job wrote it on the run only)."""
        if run is None:
            return trial
        own = Provenance.from_tags(trial.tags) is not None
        tags = dict(trial.tags)
        if not own:
            inherited = {
                k: v
                for k, v in run.tags.items()
                if k.startswith(names.PREFIX) and not k.startswith(names.RUN_TRIAL_PREFIX)
            }
            tags = {**inherited, **tags}
        changes: dict[str, object] = {"tags": tags}
        if not own:
            changes["evidence_from"] = run.id
        newer = run.last_activity_at is not None and (
            trial.last_activity_at is None or run.last_activity_at > trial.last_activity_at
        )
        if newer:
            changes.update(
                last_activity_at=run.last_activity_at,
                activity_source=ActivitySource.RUN_METRIC
                if own
                else (run.activity_source or ActivitySource.METRIC),
                longest_pause=run.longest_pause,
                activity_count=run.activity_count,
            )
        return dataclasses.replace(trial, **changes)  # type: ignore[arg-type]


def iter_scan(
    session: StoreSession,
    selection: Selection,
    policy: Policy,
    facts: LocalFacts,
    *,
    this_host: bool = False,
    bases: LinkBases | None = None,
    schedulers: Sequence[SchedulerSource] | None = None,
    scope: Scope | None = None,
    rhythms: RhythmMemory | None = None,
) -> Iterator[ScanEvent]:
    """Stream the scan: each selected record as soon as it is judged, each store's status after
    it. Records named by id (``--run``, ``--trial``) come at the end, once every id is known to
    name one record; an id that names none yields a :class:`NoMatch`.

    A store that fails yields a failed :class:`StoreStatus` and the scan goes on with the next.
    With ``this_host``, only records whose provenance names this host are judged. Records whose
    provenance names a scheduler job and that this host cannot judge for certain wait until
    every store is read: then each scheduler is asked once about all of them
    (``schedulers``: default, every source mltidy ships; ``()`` asks none). ``rhythms``
    carries the rhythms read from one scan to the next (a ``watch`` daemon's polls).

    Raises:
        UsageError: a named experiment or study no store holds (unless ``scope`` is given:
            then the caller chose whether names are checked), or an id that names several
            records.
    """
    scope = scope or Scope.of(session, selection, policy.now)
    sources = default_sources() if schedulers is None else tuple(schedulers)
    context = _Context(
        session,
        scope,
        policy,
        facts,
        RunIndex(session),
        this_host,
        bases or LinkBases(),
        RhythmMemory() if rhythms is None else rhythms,
    )
    yield from stream_named(
        _scan_stores(context, sources),
        selection,
        names_of,
        lambda missing: (NoMatch(given) for given in missing),
    )


def _scan_stores(context: _Context, sources: Sequence[SchedulerSource]) -> Iterator[ScanEvent]:
    """Every store in turn; then the records that wait for their scheduler, asked once."""
    waiting: list[tuple[Record, str | None]] = []
    for spec in context.session.specs:
        yield from _scan_store(context, spec, sources, waiting)
    if waiting:
        evidence = ask(sources, (record.tags for record, _ in waiting))
        for record, url in waiting:
            told = evidence.evidence_for(record.tags, record.started_at)
            yield JudgedRecord(record, judge(record, context.facts, context.policy, told), url)


@dataclass(frozen=True)
class _Context:
    session: StoreSession
    scope: Scope
    policy: Policy
    facts: LocalFacts
    index: RunIndex
    this_host: bool
    bases: LinkBases
    rhythms: RhythmMemory


#: How many linked trials of a storage are compared with their MLflow runs to infer its
#: writer's UTC offset (their runs are read when the scan has not seen them).
ZONE_SAMPLE = 20


def infer_writer_zone(backend: Backend, index: RunIndex) -> None:
    """Give a storage that keeps naive local times of an unknown zone the zone its own trials
    prove: those linked to MLflow runs (``mlflow_run_id``), whose start times are epoch-based.
    Nothing is set when they are too few or disagree (records then say their age is a guess).

    Raises:
        StoreError: the storage cannot be read.
    """
    if not isinstance(backend, NaiveTimes) or backend.writer_zone_known():
        return
    pairs: list[tuple[datetime, datetime]] = []
    for run_id, naive in backend.linked_starts(ZONE_SAMPLE):
        run = index.lookup(run_id)
        if run is not None and run.started_at is not None:
            pairs.append((naive, run.started_at))
    found = infer_offset(pairs)
    if found.offset is not None:
        backend.set_writer_zone(timezone(found.offset), found.why)


def _scan_store(
    context: _Context,
    spec: StoreSpec,
    sources: Sequence[SchedulerSource],
    waiting: list[tuple[Record, str | None]],
) -> Iterator[ScanEvent]:
    session, facts = context.session, context.facts
    backend = session.backend(spec.key)
    if backend is None:
        yield session.status(spec.key)
        return
    rhythmless: list[Record] = []
    try:
        if spec.kind is StoreKind.OPTUNA:
            infer_writer_zone(backend, context.index)
        for record in backend.iter_active(context.scope.for_backend(spec.kind)):
            run: Record | None = None
            if record.kind is RecordKind.MLFLOW_RUN:
                context.index.add(record)
            else:
                run = context.index.run_of(record)
                record = context.index.enrich(record, run)
            if not context.scope.wants(record, run):
                continue
            if context.this_host and record.tags.get(names.HOST) != facts.host:
                host = record.tags.get(names.HOST)
                yield LeftOut(record, f"started on {host}" if host else "no provenance")
                continue
            verdict = judge(record, facts, context.policy)
            if isinstance(backend, RhythmReader) and verdict.basis in RHYTHM_MATTERS:
                rhythmless.append(record)
                continue
            yield from _settle(context, record, verdict, sources, waiting)
        # The rhythms a store reads on demand, for the runs whose verdict they can change, in
        # batches (those a previous scan read, of runs with no activity since, are known); the
        # run index gets them too, for the trials these runs trained.
        known, unread = context.rhythms.split(spec.id, rhythmless)
        for start in range(0, len(unread), RHYTHM_BATCH):
            assert isinstance(backend, RhythmReader)
            known += backend.with_rhythms(unread[start : start + RHYTHM_BATCH])
        context.rhythms.keep(spec.id, known)
        for record in known:
            context.index.add(record)
            verdict = judge(record, facts, context.policy)
            yield from _settle(context, record, verdict, sources, waiting)
    except StoreError as exc:
        session.fail(spec.key, exc)
    yield session.status(spec.key)


#: Runs whose rhythms are read together.
RHYTHM_BATCH = 500


@dataclass
class RhythmMemory:
    """The rhythms (longest pause, activity count) a scan read, per store and run, kept for
    the next scan of a ``watch`` daemon: a run with no new activity has the same history, so
    its rhythm is not read again. Only the runs of the latest scan of each store (by its
    ``StoreId``) are kept."""

    by_store: dict[str, dict[str, Record]] = dataclasses.field(default_factory=dict)

    def split(self, store: str, runs: Sequence[Record]) -> tuple[list[Record], list[Record]]:
        """The runs whose rhythm is known (with it), and those whose rhythm must be read."""
        seen = self.by_store.get(store, {})
        known: list[Record] = []
        unread: list[Record] = []
        for run in runs:
            before = seen.get(run.id)
            if before is not None and before.last_activity_at == run.last_activity_at:
                known.append(
                    dataclasses.replace(
                        run,
                        longest_pause=before.longest_pause,
                        activity_count=before.activity_count,
                    )
                )
            else:
                unread.append(run)
        return known, unread

    def keep(self, store: str, runs: Sequence[Record]) -> None:
        """Remember these runs' rhythms (in place of the store's previous ones)."""
        self.by_store[store] = {run.id: run for run in runs}


def _settle(
    context: _Context,
    record: Record,
    verdict: Verdict,
    sources: Sequence[SchedulerSource],
    waiting: list[tuple[Record, str | None]],
) -> Iterator[JudgedRecord]:
    """A judged record, or, when a scheduler may know better, the record set aside to be
    judged again once every scheduler has been asked."""
    url = context.bases.record(record)
    if verdict.basis not in CERTAIN_HERE and any(s.job_of(record.tags) for s in sources):
        waiting.append((record, url))
        return
    yield JudgedRecord(record, verdict, url)


def collect(
    events: Iterable[ScanEvent], on_event: Callable[[ScanEvent], None] | None = None
) -> ScanResult:
    """A scan's events (:func:`iter_scan`) gathered into one result, each also handed to
    ``on_event`` as it comes."""
    stores: list[StoreStatus] = []
    records: list[JudgedRecord] = []
    missing: list[str] = []
    for event in events:
        if on_event is not None:
            on_event(event)
        if isinstance(event, StoreStatus):
            stores.append(event)
        elif isinstance(event, JudgedRecord):
            records.append(event)
        elif isinstance(event, NoMatch):
            missing.append(event.given)
    return ScanResult(tuple(stores), tuple(records), tuple(missing))
