"""``close``: end dangling runs and trials safely.

Plan from a scan, then (only when asked) apply: each record is closed if and only if it is still
running at the moment of writing (each backend's docstring says how), with its true end time
(last activity, never "now") and an audit trail written on the record itself. A record that is
alive is never touched, whatever the options.

Size: plan, apply, end times, audit attributes and the notes written after a close are one verb;
its safety rules (compare-and-set, true end times) read best together.
"""

from __future__ import annotations

import dataclasses
import getpass
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from mltidy import names
from mltidy.backends.interface import (
    Backend,
    BatchCloser,
    Closer,
    RunLinker,
    TrialLinker,
    TrialRetrier,
)
from mltidy.backends.session import StoreSession
from mltidy.errors import StoreError
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
    TrialRef,
    VerdictKind,
    iso,
    utc_now,
)
from mltidy.provenance.facts import host_name
from mltidy.scan import NoMatch, ScanEvent, iter_scan

MAX_REASON = 500
#: Activity less than this apart is the same activity (times in plans have milliseconds).
SAME_TIME = timedelta(milliseconds=1)
#: What a dry run says of a trial ``--retry`` would enqueue a copy of.
RETRY_PLANNED = "a retry would be enqueued"


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
        explicit: the records were named one by one (``--run``/``--trial``); :func:`plan` sets
            it when its selection names records.
        force: close the explicit records whatever their verdict (except ``alive``).
        as_failed: MLflow runs become ``FAILED`` instead of ``KILLED``.
        retry: enqueue a WAITING copy of each closed trial.
        max_retry: stop retrying a trial after this many retries.
    """

    include_stale: bool = False
    rhythm: bool = False
    explicit: bool = False
    force: bool = False
    as_failed: bool = False
    retry: bool = False
    max_retry: int | None = None


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
    retry: bool = False
    """Whether applying also enqueues a retry of the trial (``--retry``)."""


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


def end_time_of(record: Record, now: datetime, ended_at: datetime | None = None) -> datetime:
    """The true end of a record: when the evidence says its process ended (a scheduler's end
    time), else its last activity (its own, or its run's); never before its start or its last
    activity, never after now; "now" only when the record knows none of these."""
    times = [
        t
        for t in (
            ended_at,
            record.last_activity_at,
            heartbeat_at(record.tags),
            record.started_at,
        )
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


def plan(
    session: StoreSession,
    selection: Selection,
    policy: Policy,
    facts: LocalFacts,
    options: CloseOptions,
    *,
    this_host: bool = False,
) -> CloseReport:
    """Scan and decide what to close; changes nothing.

    Raises:
        UsageError: a selection that names what no store holds, or an ambiguous id.
    """
    if selection.names_records:
        options = dataclasses.replace(options, explicit=True)
    events = iter_scan(session, selection, policy, facts, this_host=this_host)
    return plan_scanned(events, policy, options)


def plan_scanned(events: Iterable[ScanEvent], policy: Policy, options: CloseOptions) -> CloseReport:
    """Decide what to close from a scan already made (``watch`` reuses its poll's scan)."""
    stores: list[StoreStatus] = []
    changes: list[Change] = []
    skipped: list[Skip] = []
    missing: list[str] = []
    for event in events:
        if isinstance(event, StoreStatus):
            stores.append(event)
            continue
        if isinstance(event, NoMatch):
            missing.append(event.given)
            continue
        if not isinstance(event, JudgedRecord):
            continue
        why = _decide(event, options)
        if why is not None:
            skipped.append(Skip(event, why))
            continue
        change = planned_change(event, options, policy.now)
        if options.force and event.verdict.kind is not VerdictKind.DEAD:
            change = dataclasses.replace(change, forced=True)
        changes.append(change)
    return CloseReport(tuple(stores), tuple(changes), tuple(skipped), True, tuple(missing))


def planned_change(item: JudgedRecord, options: CloseOptions, now: datetime) -> Change:
    """The change that closes ``item``: runs become ``KILLED`` (``FAILED`` with ``--as
    failed``), trials ``FAIL``; the end time is the record's last activity."""
    record = item.record
    if record.kind is RecordKind.MLFLOW_RUN:
        state = "FAILED" if options.as_failed else "KILLED"
    else:
        state = "FAIL"
    detail = None
    if options.retry and record.kind is RecordKind.OPTUNA_TRIAL:
        # A dry run shows everything --yes would do; apply() replaces this with what it did.
        detail = RETRY_PLANNED
        if options.max_retry is not None:
            detail += f" (unless --max-retry {options.max_retry} is reached)"
    return Change(
        item,
        state,
        end_time_of(record, now, item.verdict.ended_at),
        detail=detail,
        retry=detail is not None,
    )


def closed_by() -> str:
    """``user@host`` of the process making the change."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{host_name()}"


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
        # Batches of neighbouring ids (numbers by value, run ids as text): each transaction
        # then changes fewer pages of the indexes on those ids (SQLite journals every page it
        # changes); the report keeps the plan's order.
        indexes.sort(key=lambda i: _id_order(report.changes[i].item.record.id))
        for start in range(0, len(indexes), size):
            batch = [(i, report.changes[i]) for i in indexes[start : start + size]]
            outcomes.update(_apply_batch(backend, batch, options, now, by))
    done = [o for _, o in sorted(outcomes.items()) if isinstance(o, Change)]
    skipped = [*report.skipped, *(o for _, o in sorted(outcomes.items()) if isinstance(o, Skip))]
    return CloseReport(report.stores, tuple(done), tuple(skipped), False, report.missing)


def _id_order(record_id: str) -> tuple[int, str]:
    return len(record_id), record_id


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
        if record is not None and newer_activity(record, change.item.record):
            yield index, Skip(change.item, "new activity since it was planned; left alone")
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
    if change.retry and record.kind is RecordKind.OPTUNA_TRIAL:
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
    return dataclasses.replace(
        change, outcome=Outcome.CLOSED, detail=detail or None, retry_trial_number=retry_number
    )


def newer_activity(fresh: Record, planned: Record) -> bool:
    """Whether ``fresh`` shows activity (a metric, a heartbeat) newer than ``planned`` had.

    Within a millisecond is the same activity: reports and plan files keep times to the
    millisecond (docs/json.md), heartbeats are written to the microsecond.
    """

    def last(record: Record) -> datetime | None:
        times = [t for t in (record.last_activity_at, heartbeat_at(record.tags)) if t]
        return max(times) if times else None

    before, after = last(planned), last(fresh)
    return after is not None and (before is None or after - before >= SAME_TIME)


# -- why, where people look ---------------------------------------------------------------------
#: The section of a trial's optuna-dashboard note, and of a run's MLflow description, that says
#: why mltidy closed it (``dashboard_notes.with_section``; the user's text is kept).
CLOSE_SECTION = "close"


def closed_note(change: Change, by: str | None = None) -> str:
    """Why a record was closed, as Markdown for optuna-dashboard's note or MLflow's
    description (the full reason: a tag is cut at :data:`MAX_REASON` characters); ``by`` is
    :func:`closed_by`, asked once by a caller writing many notes."""
    from mltidy.dashboard_notes import markdown_text

    verdict = change.item.verdict
    forced = " (forced: named with --force)" if change.forced else ""
    return (
        f"**Closed by mltidy** as {change.new_state}{forced}, by "
        f"{markdown_text(by or closed_by())}: "
        f"{verdict.kind.value}: {markdown_text(verdict.reason)}\n\n"
        f"End time {iso(change.end_time)}, its last known activity. The audit trail is in "
        f"`{names.CLOSED_AT}`, `{names.CLOSED_REASON}` and `{names.PREVIOUS_STATE}`."
    )


def annotate(session: StoreSession, report: CloseReport) -> CloseReport:
    """After :func:`apply`: say why, where people look. A closed trial gets the reason in its
    optuna-dashboard note (mltidy's ``close`` section, through :class:`TrialLinker`), a closed
    run in its MLflow description (through :class:`RunLinker`); the user's text is kept. A
    note that cannot be written is added to the change's detail; the close itself stands."""
    from mltidy.dashboard_notes import with_section

    by = closed_by()
    runs: dict[StoreKey, list[int]] = {}
    trials: dict[StoreKey, list[int]] = {}
    changes = list(report.changes)
    for index, change in enumerate(changes):
        record = change.item.record
        if change.outcome is not Outcome.CLOSED:
            continue
        if record.kind is RecordKind.OPTUNA_TRIAL:
            trials.setdefault(record.store_key, []).append(index)
        else:
            runs.setdefault(record.store_key, []).append(index)
    for store, indexes in runs.items():
        backend = session.writable(store)
        if backend is None or not isinstance(backend, RunLinker):
            continue
        try:
            current = backend.run_notes({changes[i].item.record.id for i in indexes})
            notes = {}
            for index in indexes:
                run_id = changes[index].item.record.id
                note = with_section(
                    current.get(run_id, ""), closed_note(changes[index], by), CLOSE_SECTION
                )
                notes[run_id] = {names.MLFLOW_NOTE: note}
            backend.write_runs_tags(notes)
        except StoreError as exc:
            for index in indexes:
                changes[index] = _noted(
                    changes[index], f"the run description failed: {exc.message}"
                )
    for store, indexes in trials.items():
        backend = session.writable(store)
        if backend is None or not isinstance(backend, TrialLinker):
            continue
        try:
            # One read of the trials concerned, their notes written study by study.
            studies = sorted({changes[i].item.record.container for i in indexes})
            ids = {changes[i].item.record.id for i in indexes}
            refs = {t.trial_id: t for t in backend.link_trials(ids, studies)}
            wanted: list[tuple[TrialRef, str]] = []
            at: dict[str, int] = {}
            for index in indexes:
                ref = refs.get(changes[index].item.record.id)
                if ref is not None:
                    note = closed_note(changes[index], by)
                    wanted.append((ref, with_section(ref.note, note, CLOSE_SECTION)))
                    at[ref.trial_id] = index
            for trial_id, remark in backend.write_trial_notes(wanted).items():
                changes[at[trial_id]] = _noted(changes[at[trial_id]], remark)
        except StoreError as exc:
            for index in indexes:
                changes[index] = _noted(changes[index], f"the dashboard note failed: {exc.message}")
    return dataclasses.replace(report, changes=tuple(changes))


def _noted(change: Change, remark: str) -> Change:
    detail = f"{change.detail}; {remark}" if change.detail else remark
    return dataclasses.replace(change, detail=detail)
