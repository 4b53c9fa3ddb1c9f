"""``watch``: poll the stores, turn what changed into events, and notify each event once.

One poll:

1. scan every store (the same verdicts as ``mltidy scan``);
2. per store, gather events: runs that ended since the last poll (finished, failed, killed),
   runs and trials that are dead or stale, or dated in the future (``clock-skew``), studies
   that finished (nothing RUNNING or WAITING, and idle for ``--idle-after`` or their trial
   budget reached), studies whose RUNNING trials are all dead or stale (stopped), experiments
   that went idle, stores that keep failing;
3. optionally close what is dead (``--close``: :mod:`mltidy.close`, the same safety as
   ``mltidy close --yes``);
4. record the events in the state (deduplicated) and send everything still pending to each
   target as one grouped message (the outbox retries what failed).

The first poll of a store only establishes where things stand: finished studies and ended runs
from before it (or before ``--since``) are recorded as known, not sent, and never sent later
(the first poll looks back as far as later polls do, :data:`SLACK`, so nothing it could have
seen turns up as new on the second). Dead and stale records are reported on the first poll:
they need someone now.

What a poll looks at is the command's selection (:mod:`mltidy.scope`): the records of the
named experiments and studies and those linked to them, narrowed by the other filters.

Size: one poll end to end (scan, events per store, close, record, deliver), kept in one file so the
order of its steps, on which deduplication depends, is visible.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from mltidy import close, names
from mltidy.backends.interface import Backend, RunHistory, StudyWatcher
from mltidy.backends.session import StoreSession
from mltidy.durations import format_duration
from mltidy.errors import MltidyError, StoreError
from mltidy.evidence.local import LocalFacts, LocalProbe
from mltidy.judge import Policy
from mltidy.linking.urls import LinkBases
from mltidy.model import (
    Basis,
    HistoryMark,
    JudgedRecord,
    Record,
    RecordKind,
    Selection,
    StoreId,
    StoreKey,
    StoreSpec,
    StoreStatus,
    StudyProgress,
    VerdictKind,
    utc_now,
)
from mltidy.notify.delivery import Delivery, Target, deliver
from mltidy.notify.events import Event, EventKind, when
from mltidy.notify.messages import compose
from mltidy.notify.store_events import (
    clock_skew_event,
    ended_run_event,
    experiment_idle_event,
    store_failing_event,
    study_finished_event,
    study_stopped_event,
    verdict_event,
)
from mltidy.scan import RhythmMemory, ScanEvent, iter_scan
from mltidy.scope import Named, Scope, select_named
from mltidy.watch.state import WatchState

DEFAULT_INTERVAL = timedelta(seconds=60)
DEFAULT_IDLE_AFTER = timedelta(minutes=30)
#: The ended-runs query starts this long before the last successful poll: run end times come
#: from the training machines' clocks, and a run may be written late. Duplicates are dropped.
SLACK = timedelta(minutes=10)
#: A store must fail this many polls in a row before "store unreadable" is sent.
FAILURES_BEFORE_ALERT = 2
GONE = (VerdictKind.DEAD, VerdictKind.STALE)


@dataclass(frozen=True)
class WatchOptions:
    """What ``watch`` looks for and does.

    Attributes:
        stale_after: the judge's silence limit.
        idle_after: a study with nothing running, or an experiment with no live run, for this
            long has finished / gone idle.
        budget: a trial budget for every study without its own ``mltidy.budget`` attribute.
        lookback: on a store's first poll, also report what ended this long before it.
        close: close dead records (``mltidy close --yes`` semantics).
        skip: event kinds not to record or send.
        links: where the MLflow UI and optuna-dashboard live.
    """

    stale_after: timedelta
    idle_after: timedelta = DEFAULT_IDLE_AFTER
    budget: int | None = None
    lookback: timedelta = timedelta(0)
    close: bool = False
    skip: frozenset[EventKind] = frozenset()
    links: LinkBases = field(default_factory=LinkBases)


@dataclass(frozen=True)
class PollResult:
    """What one poll saw, recorded and sent."""

    at: datetime
    stores: tuple[StoreStatus, ...]
    events: tuple[Event, ...]
    known: int
    deliveries: tuple[Delivery, ...]
    given_up: int = 0
    closed: close.CloseReport | None = None

    @property
    def failed_stores(self) -> tuple[StoreStatus, ...]:
        """Stores that could not be read."""
        return tuple(s for s in self.stores if not s.ok)

    @property
    def failed_deliveries(self) -> tuple[Delivery, ...]:
        """Messages that did not reach their target (they stay in the outbox)."""
        return tuple(d for d in self.deliveries if not d.ok)

    @property
    def failed_closes(self) -> tuple[close.Change, ...]:
        """Records ``--close`` could not close."""
        return self.closed.failed if self.closed is not None else ()


@dataclass
class PollMemory:
    """What a ``watch`` daemon carries from one poll to the next (a ``--once`` poll has none):
    each store's :class:`~mltidy.model.HistoryMark`, so that a poll reads only the runs that
    can have ended since the previous one, and the rhythms of RUNNING runs with no new activity
    (:class:`~mltidy.scan.RhythmMemory`)."""

    history: dict[StoreId, HistoryMark] = field(default_factory=dict)
    rhythms: RhythmMemory = field(default_factory=RhythmMemory)


@dataclass
class _Found:
    """Events gathered in one poll, before they are recorded."""

    events: list[Event] = field(default_factory=list)
    known: list[Event] = field(default_factory=list)
    ok: list[StoreId] = field(default_factory=list)


def poll(
    specs: Sequence[StoreSpec],
    selection: Selection,
    state: WatchState,
    targets: Sequence[Target],
    options: WatchOptions,
    *,
    probe: Callable[[], LocalFacts] = LocalProbe,
    now: datetime | None = None,
    session: Callable[[Sequence[StoreSpec]], StoreSession] = StoreSession,
    memory: PollMemory | None = None,
) -> PollResult:
    """One poll over one store session (each store opened once): scan, gather events, close
    what is dead (``--close``, from the same scan), record the events once, deliver.

    Raises:
        UsageError: a store URI has a scheme mltidy cannot read; a selection that names what
            no store holds, or an ambiguous id.
        ChangeRefused: another watch holds this state for too long.
    """
    with state.lock(), session(specs) as stores:
        now = now or utc_now()
        policy = Policy(now=now, stale_after=options.stale_after)
        facts = probe()
        keys = state.targets([(t.url, t.shown) for t in targets], now)
        scope = Scope.of(stores, selection, now)
        rhythms = memory.rhythms if memory is not None else None
        scanned = list(iter_scan(stores, selection, policy, facts, scope=scope, rhythms=rhythms))
        items: dict[StoreKey, list[JudgedRecord]] = defaultdict(list)
        for event in scanned:
            if isinstance(event, JudgedRecord):
                items[event.record.store_key].append(event)
        found = _Found()
        for spec in stores.specs:
            backend = stores.backend(spec.key)
            if backend is None:
                _store_failed(state, stores.status(spec.key), now, found)
                continue
            try:
                _store_events(
                    spec, backend, scope, items[spec.key], (state, memory), now, found, options
                )
            except StoreError as exc:
                if memory is not None:
                    memory.history.pop(spec.id, None)
                stores.fail(spec.key, exc)
                _store_failed(state, stores.status(spec.key), now, found)
        closed = _close(stores, scanned, policy, found) if options.close else None
        statuses = stores.statuses()
        events = state.add([e for e in found.events if e.kind not in options.skip], now)
        known = state.add(found.known, now, baseline=True)
        for store in found.ok:
            state.mark_ok(store, now)
        given_up = sum(state.give_up(key, now) for key in keys)
        deliveries = deliver_pending(state, targets, now)
        state.prune(now)
    return PollResult(
        at=now,
        stores=statuses,
        events=tuple(events),
        known=len(known),
        deliveries=tuple(deliveries),
        given_up=given_up,
        closed=closed,
    )


def deliver_pending(state: WatchState, targets: Sequence[Target], now: datetime) -> list[Delivery]:
    """Send each target everything pending for it, as one grouped message."""
    done: list[Delivery] = []
    for target in targets:
        key = state.target_key(target.url)
        pending = state.pending(key)
        if not pending:
            continue
        (delivery,) = deliver(compose(pending), [target])
        state.delivered([e.key for e in pending], key, delivery.ok, delivery.error, now)
        done.append(delivery)
    return done


def watch_forever(
    run_poll: Callable[[], PollResult],
    interval: timedelta,
    stop: threading.Event,
    on_poll: Callable[[PollResult], None],
    on_error: Callable[[MltidyError], None],
) -> None:
    """Poll every ``interval`` until ``stop`` is set; a failed poll is reported, not fatal."""
    while not stop.is_set():
        started = time.monotonic()
        try:
            on_poll(run_poll())
        except MltidyError as exc:
            on_error(exc)
        stop.wait(max(0.0, interval.total_seconds() - (time.monotonic() - started)))


# -- gathering ----------------------------------------------------------------------------


def _store_failed(state: WatchState, status: StoreStatus, now: datetime, found: _Found) -> None:
    mark = state.mark_failed(status.uri, now)
    if mark.failures >= FAILURES_BEFORE_ALERT and mark.failing_since is not None:
        found.events.append(store_failing_event(status, mark.failing_since, now))


def _store_events(
    spec: StoreSpec,
    backend: Backend,
    scope: Scope,
    items: list[JudgedRecord],
    kept: tuple[WatchState, PollMemory | None],
    now: datetime,
    found: _Found,
    options: WatchOptions,
) -> None:
    """Every event of one store that was read (``kept``: the state, and the daemon's memory).

    Raises:
        StoreError: the store failed while its history or study progress was read.
    """
    state, memory = kept
    shown = spec.id
    mark = state.store_mark(shown)
    first = mark is None or mark.last_ok_at is None
    known_before = now - options.lookback if first else None
    for item in items:
        if item.verdict.kind in GONE:
            found.events.append(verdict_event(item, options.links, now))
        elif item.verdict.basis is Basis.CLOCK:
            found.events.append(clock_skew_event(item, options.links, now))
    selection = scope.selection
    pushed = scope.for_backend(spec.kind)
    if isinstance(backend, RunHistory):
        last_ok = mark.last_ok_at if mark is not None else None
        # The first poll looks back as far as the next one will (SLACK before this one), so
        # that what ended just before it is recorded as known now, not sent by the second.
        since = (now - options.lookback if last_ok is None else last_ok) - SLACK
        previous = memory.history.get(shown) if memory is not None else None
        read, history = backend.ended_runs_after(pushed, since, previous, now)
        if memory is not None and history is not None:
            memory.history[shown] = history
        ended = [run for run in read if scope.wants(run)]
        ended, _ = select_named(ended, selection, lambda run: [Named.of(run)])
        for run in ended:
            event = ended_run_event(run, options.links)
            if known_before is not None and event.at < known_before:
                found.known.append(event)
            else:
                found.events.append(event)
        _experiments(state, shown, items, ended, now, found, options)
    if isinstance(backend, StudyWatcher):
        progress = [p for p in backend.study_progress(pushed) if scope.wants_study(p.study)]
        if selection.names_records:
            named = {t.study for t in selection.trials}
            progress = [p for p in progress if p.study in named]
        _studies(shown, progress, items, now, known_before, found, options)
    found.ok.append(shown)


def _experiments(
    state: WatchState,
    store: StoreId,
    items: list[JudgedRecord],
    ended: list[Record],
    now: datetime,
    found: _Found,
    options: WatchOptions,
) -> None:
    """Track when each experiment was last active; report the ones that went quiet.

    Only runs that are alive (or too young to judge) and runs that ended count as activity:
    a zombie RUNNING run is not work going on.
    """
    live: dict[str, str] = {}
    for item in items:
        record = item.record
        if record.kind is RecordKind.MLFLOW_RUN and item.verdict.kind not in GONE:
            live[record.container_id] = record.container
            state.touch(store, record.container_id, record.container, now)
    for run in ended:
        if run.ended_at is not None:
            state.touch(store, run.container_id, run.container, min(run.ended_at, now))
    for experiment_id, (name, last) in state.activity(store).items():
        if experiment_id in live or now - last < options.idle_after:
            continue
        found.events.append(
            experiment_idle_event(
                store, name, experiment_id, last, options.idle_after, options.links
            )
        )


def _studies(
    store: StoreId,
    progress: list[StudyProgress],
    items: list[JudgedRecord],
    now: datetime,
    known_before: datetime | None,
    found: _Found,
    options: WatchOptions,
) -> None:
    running: dict[str, list[JudgedRecord]] = defaultdict(list)
    names: dict[str, str] = {}
    for item in items:
        if item.record.kind is RecordKind.OPTUNA_TRIAL:
            running[item.record.container_id].append(item)
            names[item.record.container_id] = item.record.container
    by_id = {p.study_id: p for p in progress}
    for p in progress:
        why = _finished_because(p, now, options)
        if why is None:
            continue
        event = study_finished_event(store, p, why, options.links)
        if known_before is not None and event.at < known_before:
            found.known.append(event)
        else:
            found.events.append(event)
    for study_id, trials in running.items():
        if trials and all(t.verdict.kind in GONE for t in trials):
            found.events.append(
                study_stopped_event(
                    store,
                    names[study_id],
                    study_id,
                    trials,
                    options.links,
                    now,
                    by_id.get(study_id),
                )
            )


def _finished_because(p: StudyProgress, now: datetime, options: WatchOptions) -> str | None:
    """Why a study counts as finished, or ``None`` while it does not."""
    if p.trials == 0 or p.running or p.waiting:
        return None
    budget = p.budget or options.budget
    if budget is not None and p.finished >= budget:
        source = names.BUDGET if p.budget else "--budget"
        return f"its trial budget ({source}) of {budget} is reached"
    last = p.last_activity_at
    if last is not None and now - last >= options.idle_after:
        return (
            f"no trial started or ended since {when(last)} "
            f"(--idle-after {format_duration(options.idle_after)})"
        )
    return None


def _close(
    session: StoreSession, scanned: Sequence[ScanEvent], policy: Policy, found: _Found
) -> close.CloseReport:
    """Close what the poll's scan found dead, as ``mltidy close --yes`` would (each record still
    compare-and-set), and say so in the dead events."""
    options = close.CloseOptions()
    report = close.plan_scanned(scanned, policy, options)
    if report.changes:
        report = close.annotate(session, close.apply(session, report, options))
    outcomes = {(c.item.record.store, c.item.record.id): c for c in report.changes}
    for i, event in enumerate(found.events):
        if event.kind is not EventKind.DEAD or not event.subject or event.store is None:
            continue
        change = outcomes.get((event.store, event.subject.split(":", 1)[1]))
        if change is None:
            continue
        if change.outcome is close.Outcome.CLOSED:
            fact = ("closed by mltidy", f"now {change.new_state}, end time {when(change.end_time)}")
        else:
            fact = ("close failed", change.detail or "unknown error")
        found.events[i] = dataclasses.replace(event, facts=(*event.facts, fact))
    return report


__all__ = [
    "DEFAULT_IDLE_AFTER",
    "DEFAULT_INTERVAL",
    "PollMemory",
    "PollResult",
    "WatchOptions",
    "deliver_pending",
    "poll",
    "watch_forever",
]
