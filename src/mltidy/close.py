"""``close``: end dangling runs and trials safely.

Plan from a scan, then (only when asked) apply: each record is closed if and only if it is still
running at the moment of writing (each backend's docstring says how), with its true end time
(last activity, never "now") and an audit trail written on the record itself. A record that is
alive is never touched, whatever the options.
"""

from __future__ import annotations

import dataclasses
import getpass
import socket
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum

from mltidy import names
from mltidy.backends.interface import Backend, BatchCloser, Closer, TrialRetrier
from mltidy.backends.session import StoreSession
from mltidy.errors import StoreError, UsageError
from mltidy.evidence.local import LocalFacts
from mltidy.judge import Policy, heartbeat_at
from mltidy.model import (
    Basis,
    CloseRequest,
    CloseResult,
    CloseStatus,
    JudgedRecord,
    Record,
    RecordKind,
    Selection,
    StoreKey,
    StoreStatus,
    VerdictKind,
    utc_now,
)
from mltidy.scan import LeftOut, ScanEvent, iter_scan

MAX_REASON = 500


class Outcome(str, Enum):
    """What became of one planned change."""

    PLANNED = "planned"
    CLOSED = "closed"
    FAILED = "failed"


@dataclass(frozen=True)
class CloseOptions:
    """What to close and how.

    Attributes:
        include_stale: also close ``stale`` records (default: ``dead`` only).
        rhythm: with ``include_stale``, also close records stale by their own rhythm (silent
            for many times their longest pause) before ``--stale-after``.
        runs: explicit MLflow run ids; only these are considered.
        trials: explicit ``(study, trial number)`` pairs; only these are considered.
        force: close the explicit records whatever their verdict (except ``alive``).
        as_failed: MLflow runs become ``FAILED`` instead of ``KILLED``.
        retry: enqueue a WAITING copy of each closed trial.
        max_retry: stop retrying a trial after this many retries.
    """

    include_stale: bool = False
    rhythm: bool = False
    runs: tuple[str, ...] = ()
    trials: tuple[tuple[str, int], ...] = ()
    force: bool = False
    as_failed: bool = False
    retry: bool = False
    max_retry: int | None = None

    @property
    def explicit(self) -> bool:
        """Whether records were named one by one."""
        return bool(self.runs or self.trials)


@dataclass(frozen=True)
class Change:
    """One record to close: the plan, and after applying, what happened."""

    item: JudgedRecord
    new_state: str
    end_time: datetime
    outcome: Outcome = Outcome.PLANNED
    detail: str | None = None
    retry_trial_number: int | None = None
    forced: bool = False


@dataclass(frozen=True)
class Skip:
    """A record left alone, and why."""

    item: JudgedRecord
    why: str


@dataclass(frozen=True)
class CloseReport:
    """Everything a close did or would do."""

    stores: tuple[StoreStatus, ...]
    changes: tuple[Change, ...]
    skipped: tuple[Skip, ...]
    dry_run: bool
    missing: tuple[str, ...] = field(default=())
    """Explicit ids that matched no unfinished record."""

    @property
    def failed(self) -> tuple[Change, ...]:
        """Changes that could not be made."""
        return tuple(c for c in self.changes if c.outcome is Outcome.FAILED)


def parse_trial_ref(text: str) -> tuple[str, int]:
    """``STUDY:NUMBER`` -> ``(study, number)``.

    Raises:
        UsageError: not of that form.
    """
    study, sep, number = text.rpartition(":")
    if not sep or not study or not number.isdigit():
        raise UsageError(
            f"{text!r} is not a trial reference", hint="write STUDY:NUMBER, e.g. s1:12"
        )
    return study, int(number)


def end_time_of(record: Record, now: datetime) -> datetime:
    """The true end of a record: its last activity (its own, or its run's), never before its
    start and never after now; "now" only when the record knows neither."""
    times = [
        t
        for t in (record.last_activity_at, heartbeat_at(record.tags), record.started_at)
        if t is not None
    ]
    return min(max(times), now) if times else now


def _decide(item: JudgedRecord, options: CloseOptions) -> str | None:
    """``None`` to close the record, else why it is left alone."""
    verdict = item.verdict
    kind = verdict.kind
    if kind is VerdictKind.ALIVE:
        return f"alive: {verdict.reason}"
    if kind is VerdictKind.DEAD:
        return None
    if options.explicit and options.force:
        return None
    if kind is VerdictKind.STALE:
        if verdict.basis is Basis.RHYTHM and not options.rhythm:
            return (
                "stale by its own rhythm only: pass --include-stale --rhythm to close records "
                "silent much longer than their longest pause"
            )
        if options.include_stale:
            return None
        return "stale, not certainly dead: pass --include-stale to close stale records"
    if kind is VerdictKind.ACTIVE:
        return (
            "active: recent activity, but no proof either way; name it with --run/--trial and "
            "pass --force if you know its job is gone"
        )
    return "unknown: not enough evidence; name it with --run/--trial and pass --force"


def _matches(record: Record, options: CloseOptions) -> bool:
    if not options.explicit:
        return True
    if record.kind is RecordKind.MLFLOW_RUN:
        return record.id in options.runs
    return (record.container, record.trial_number) in options.trials


def plan(
    session: StoreSession,
    selection: Selection,
    policy: Policy,
    facts: LocalFacts,
    options: CloseOptions,
    *,
    this_host: bool = False,
) -> CloseReport:
    """Scan and decide what to close; changes nothing."""
    events = iter_scan(session, selection, policy, facts, this_host=this_host)
    return plan_scanned(events, policy, options)


def plan_scanned(events: Iterable[ScanEvent], policy: Policy, options: CloseOptions) -> CloseReport:
    """Decide what to close from a scan already made (``watch`` reuses its poll's scan)."""
    stores: list[StoreStatus] = []
    changes: list[Change] = []
    skipped: list[Skip] = []
    seen_runs: set[str] = set()
    seen_trials: set[tuple[str, int]] = set()
    for event in events:
        if isinstance(event, StoreStatus):
            stores.append(event)
            continue
        if isinstance(event, LeftOut):
            continue
        record = event.record
        if not _matches(record, options):
            continue
        if record.kind is RecordKind.MLFLOW_RUN:
            seen_runs.add(record.id)
        elif record.trial_number is not None:
            seen_trials.add((record.container, record.trial_number))
        why = _decide(event, options)
        if why is not None:
            skipped.append(Skip(event, why))
            continue
        change = planned_change(event, options, policy.now)
        if options.force and event.verdict.kind is not VerdictKind.DEAD:
            change = dataclasses.replace(change, forced=True)
        changes.append(change)
    missing = [r for r in options.runs if r not in seen_runs]
    missing += [f"{s}:{n}" for s, n in options.trials if (s, n) not in seen_trials]
    return CloseReport(tuple(stores), tuple(changes), tuple(skipped), True, tuple(missing))


def planned_change(item: JudgedRecord, options: CloseOptions, now: datetime) -> Change:
    """The change that closes ``item``: runs become ``KILLED`` (``FAILED`` with ``--as
    failed``), trials ``FAIL``; the end time is the record's last activity."""
    record = item.record
    if record.kind is RecordKind.MLFLOW_RUN:
        state = "FAILED" if options.as_failed else "KILLED"
    else:
        state = "FAIL"
    return Change(item, state, end_time_of(record, now))


def closed_by() -> str:
    """``user@host`` of the process making the change."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def audit_attributes(change: Change, now: datetime, by: str | None = None) -> dict[str, str]:
    """What mltidy writes on the record it closes, so a person can see it and revert."""
    verdict = change.item.verdict
    return {
        names.CLOSED_AT: now.isoformat(timespec="seconds"),
        names.CLOSED_REASON: f"{verdict.kind.value}: {verdict.reason}"[:MAX_REASON],
        names.CLOSED_BY: by or closed_by(),
        names.PREVIOUS_STATE: change.item.record.state,
        names.END_TIME_SOURCE: "last activity"
        if change.item.record.last_activity_at
        else "start time",
        **({names.CLOSED_FORCED: "true"} if change.forced else {}),
    }


#: Records re-read and closed together in one transaction by a store that can
#: (:class:`~mltidy.backends.interface.BatchCloser`); other stores take one record at a time.
BATCH = 500


def apply(session: StoreSession, report: CloseReport, options: CloseOptions) -> CloseReport:
    """Make the planned changes; failures are recorded, the rest goes on.

    Each store's changes are made in batches: a batch is read again (a record that logged new
    activity since the scan is left alone), then closed, each record only if it is still
    running at the moment of writing (a compare-and-set, in one transaction per batch where the
    store allows it). The report keeps the plan's order.
    """
    outcomes: dict[int, Change | Skip] = {}
    now, by = utc_now(), closed_by()
    by_store: dict[StoreKey, list[int]] = {}
    for index, change in enumerate(report.changes):
        by_store.setdefault(change.item.record.store_key, []).append(index)
    for store, indexes in by_store.items():
        backend = session.writable(store)
        if backend is None:
            error = session.status(store).error or "cannot be opened"
            outcomes.update((i, _failed(report.changes[i], error)) for i in indexes)
            continue
        size = BATCH if isinstance(backend, BatchCloser) else 1
        for start in range(0, len(indexes), size):
            batch = [(i, report.changes[i]) for i in indexes[start : start + size]]
            outcomes.update(_apply_batch(backend, batch, options, now, by))
    done = [o for _, o in sorted(outcomes.items()) if isinstance(o, Change)]
    skipped = [*report.skipped, *(o for _, o in sorted(outcomes.items()) if isinstance(o, Skip))]
    return CloseReport(report.stores, tuple(done), tuple(skipped), False, report.missing)


def _failed(change: Change, detail: str) -> Change:
    return dataclasses.replace(change, outcome=Outcome.FAILED, detail=detail)


def _apply_batch(
    backend: Backend,
    batch: list[tuple[int, Change]],
    options: CloseOptions,
    now: datetime,
    by: str,
) -> Iterator[tuple[int, Change | Skip]]:
    """Re-read a batch, close what is still to close, enqueue retries; each change's outcome
    by its index in the plan."""
    if not isinstance(backend, Closer):
        for index, change in batch:
            yield index, _failed(change, f"{backend.uri} cannot close records")
        return
    try:
        fresh = backend.read_many([change.item.record.id for _, change in batch])
    except StoreError as exc:
        for index, change in batch:
            yield index, _failed(change, exc.message)
        return
    to_close: list[tuple[int, Change]] = []
    for index, change in batch:
        record = fresh.get(change.item.record.id)
        if record is not None and _newer_activity(record, change.item.record):
            yield index, Skip(change.item, "new activity since the scan; left alone")
        else:
            to_close.append((index, change))
    requests = [
        CloseRequest(
            change.item.record.id,
            change.new_state,
            change.end_time,
            audit_attributes(change, now, by),
        )
        for _, change in to_close
    ]
    for (index, change), result in zip(to_close, _close(backend, requests), strict=True):
        if isinstance(result, StoreError):
            yield index, _failed(change, result.message)
        else:
            yield index, _outcome(backend, change, result, options)


def _close(backend: Closer, requests: list[CloseRequest]) -> list[CloseResult | StoreError]:
    """Close the records, in one transaction when the backend can (a failure then fails them
    all, and none is changed), else one by one (a failure fails that record only)."""
    if not requests:
        return []
    if isinstance(backend, BatchCloser):
        try:
            return list(backend.close_records(requests))
        except StoreError as exc:
            return [exc] * len(requests)
    results: list[CloseResult | StoreError] = []
    for request in requests:
        try:
            results.append(backend.close_record(request))
        except StoreError as exc:
            results.append(exc)
    return results


def _outcome(
    backend: Backend, change: Change, result: CloseResult, options: CloseOptions
) -> Change | Skip:
    """What a close result means for the change, and the retry of a closed trial."""
    record = change.item.record
    if result.status is CloseStatus.MISSING:
        return Skip(change.item, "gone from the store by the time of writing")
    if result.status is CloseStatus.NOT_RUNNING:
        return Skip(change.item, f"already {result.state} by the time of writing; left alone")
    retry_number: int | None = None
    detail = ""
    if options.retry and record.kind is RecordKind.OPTUNA_TRIAL:
        if not isinstance(backend, TrialRetrier):
            detail = "this storage cannot enqueue retries"
        else:
            try:
                retry_number = backend.enqueue_retry(record.id, options.max_retry)
            except StoreError as exc:
                return _failed(change, f"closed, but the retry failed: {exc.message}")
            if retry_number is None:
                detail = f"not retried (--max-retry {options.max_retry} reached)"
            else:
                detail = f"retry enqueued as trial {retry_number}"
    return Change(
        change.item,
        change.new_state,
        change.end_time,
        Outcome.CLOSED,
        detail or None,
        retry_number,
        change.forced,
    )


def _newer_activity(fresh: Record, planned: Record) -> bool:
    def last(record: Record) -> datetime | None:
        times = [t for t in (record.last_activity_at, heartbeat_at(record.tags)) if t]
        return max(times) if times else None

    before, after = last(planned), last(fresh)
    return after is not None and (before is None or after > before)
