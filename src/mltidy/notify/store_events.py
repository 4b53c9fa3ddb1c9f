"""Events about what happened in the stores: a run or trial dead or stale, a run that ended, a
study that finished or stopped, an experiment gone idle, a store that cannot be read."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from mltidy import names
from mltidy.durations import format_duration
from mltidy.linking.urls import LinkBases
from mltidy.model import (
    JudgedRecord,
    Record,
    RecordKind,
    StoreId,
    StoreStatus,
    StudyProgress,
    VerdictKind,
)
from mltidy.notify.events import (
    Event,
    EventKind,
    Severity,
    describe_record,
    number,
    plural,
    process_facts,
    span,
    subject_of,
    trial_of_run,
    when,
)


def verdict_event(item: JudgedRecord, links: LinkBases, now: datetime) -> Event:
    """A run or trial that is dead or stale."""
    record, verdict = item.record, item.verdict
    dead = verdict.kind is VerdictKind.DEAD
    kind = EventKind.DEAD if dead else EventKind.STALE
    facts: list[tuple[str, str]] = [("store", record.store), ("evidence", verdict.reason)]
    if record.started_at is not None:
        facts.append(("started", when(record.started_at)))
    if record.last_activity_at is not None:
        ago = format_duration(max(now - record.last_activity_at, timedelta(0)))
        facts.append(("last activity", f"{when(record.last_activity_at)} ({ago} ago)"))
    facts += process_facts(record)
    links_: list[tuple[str, str]] = []
    parent = None
    if record.kind is RecordKind.MLFLOW_RUN:
        trial = trial_of_run(record)
        if trial:
            facts.append(trial)
        links_.append(("MLflow", links.run(record)))
    elif record.trial_number is not None:
        facts.insert(1, ("Optuna trial", f"{record.container} #{record.trial_number}"))
        links_.append(("optuna-dashboard", links.trial(record.container_id, record.trial_number)))
    if record.kind is RecordKind.OPTUNA_TRIAL and record.evidence_from:
        parent = f"run:{record.evidence_from}"
    said = RecordSaid(
        key="gone" if dead else "stale",
        headline=f"is {'dead' if dead else 'stale'}: {verdict.reason}",
        severity=Severity.FAILURE if dead else Severity.WARNING,
    )
    return _record_event(kind, record, said, facts, links_, now, parent)


def clock_skew_event(item: JudgedRecord, links: LinkBases, now: datetime) -> Event:
    """A run or trial dated in the future: a clock ahead, or a wrong time zone. Such a record is
    never judged alive, and never stale either: someone must look at the clock. Reported once
    per record."""
    record, verdict = item.record, item.verdict
    facts: list[tuple[str, str]] = [("store", record.store), ("finding", verdict.reason)]
    if record.started_at is not None:
        facts.append(("started", when(record.started_at)))
    if record.last_activity_at is not None:
        facts.append(("last activity", when(record.last_activity_at)))
    facts.append(("checked at", when(now)))
    facts += process_facts(record)
    link = (
        ("MLflow", links.run(record))
        if record.kind is RecordKind.MLFLOW_RUN
        else ("optuna-dashboard", links.trial(record.container_id, record.trial_number or 0))
    )
    said = RecordSaid("clock", f"is dated in the future: {verdict.reason}", Severity.WARNING)
    return _record_event(EventKind.CLOCK_SKEW, record, said, facts, [link], now)


@dataclass(frozen=True)
class RecordSaid:
    """What an event says of its record: its key's prefix, the headline after the record's
    description, and how bad it is."""

    key: str
    headline: str
    severity: Severity


def _record_event(
    kind: EventKind,
    record: Record,
    said: RecordSaid,
    facts: list[tuple[str, str]],
    links: list[tuple[str, str]],
    now: datetime,
    parent: str | None = None,
) -> Event:
    """An event about one run or trial, keyed by its store, kind and id (sent once)."""
    noun = "run" if record.kind is RecordKind.MLFLOW_RUN else "trial"
    return Event(
        kind=kind,
        key=f"{said.key}:{record.store}:{noun}:{record.id}",
        at=now,
        headline=f"{describe_record(record)} {said.headline}",
        severity=said.severity,
        facts=tuple(facts),
        links=tuple(links),
        store=record.store,
        subject=subject_of(record),
        parent=parent,
    )


def ended_run_event(record: Record, links: LinkBases) -> Event:
    """An MLflow run that ended: finished, failed or killed (also by ``mltidy close``)."""
    closed = record.tags.get(names.CLOSED_REASON)
    end = record.ended_at
    took = (
        f" after {format_duration(end - record.started_at)}"
        if end is not None and record.started_at is not None and end >= record.started_at
        else ""
    )
    facts: list[tuple[str, str]] = [("store", record.store)]
    ran = span(record.started_at, end)
    if ran:
        facts.append(("ran", ran))
    trial = trial_of_run(record)
    if trial:
        facts.append(trial)
    facts += process_facts(record)
    if closed:
        kind, severity = EventKind.RUN_KILLED, Severity.FAILURE
        headline = f"{describe_record(record)} was closed by mltidy as {record.state}: {closed}"
        key = f"gone:{record.store}:run:{record.id}"
        facts.insert(1, ("closed by", record.tags.get(names.CLOSED_BY, "mltidy")))
    else:
        kind, severity, verb = {
            "FINISHED": (EventKind.RUN_FINISHED, Severity.SUCCESS, "finished"),
            "FAILED": (EventKind.RUN_FAILED, Severity.FAILURE, "failed"),
        }.get(record.state, (EventKind.RUN_KILLED, Severity.FAILURE, "was killed"))
        headline = f"{describe_record(record)} {verb}{took}"
        key = f"run-ended:{record.store}:{record.id}"
    return Event(
        kind=kind,
        key=key,
        at=end or record.started_at or datetime.now(tz=timezone.utc),
        headline=headline,
        severity=severity,
        facts=tuple(facts),
        links=(("MLflow", links.run(record)),),
        store=record.store,
        subject=subject_of(record),
    )


def study_finished_event(
    store: StoreId, progress: StudyProgress, why: str, links: LinkBases
) -> Event:
    """A study with nothing left to run: idle long enough, or its trial budget reached."""
    p = progress
    headline = f"study {p.study} finished: {plural(p.finished, 'trial')}"
    facts: list[tuple[str, str]] = [
        ("store", store),
        ("why", why),
        ("trials", f"{p.complete} complete, {p.pruned} pruned, {p.failed} failed"),
    ]
    links_: list[tuple[str, str]] = [("optuna-dashboard", links.study(p.study_id))]
    if p.best_value is not None and p.best_trial_number is not None:
        headline += f", best value {number(p.best_value)} (trial {p.best_trial_number})"
        direction = p.directions[0].lower() if p.directions else "best"
        facts.append(("best", f"{number(p.best_value)} ({direction}), trial {p.best_trial_number}"))
        links_.append(("best trial", links.trial(p.study_id, p.best_trial_number)))
    elif len(p.directions) > 1:
        facts.append(("objectives", ", ".join(d.lower() for d in p.directions)))
    ran = span(p.first_started_at, p.last_completed_at)
    if ran:
        facts.append(("ran", ran))
    return Event(
        kind=EventKind.STUDY_FINISHED,
        key=f"study-finished:{store}:{p.study_id}:{p.trials}",
        at=p.last_activity_at or datetime.now(tz=timezone.utc),
        headline=headline,
        severity=Severity.SUCCESS,
        facts=tuple(facts),
        links=tuple(links_),
        store=store,
    )


def study_stopped_event(
    store: StoreId,
    study: str,
    study_id: str,
    running: Sequence[JudgedRecord],
    links: LinkBases,
    now: datetime,
    progress: StudyProgress | None = None,
) -> Event:
    """A study whose RUNNING trials are all dead or stale: no worker is left."""
    counts = Counter(item.verdict.kind for item in running)
    dead, stale = counts[VerdictKind.DEAD], counts[VerdictKind.STALE]
    n = len(running)
    verb = "is" if n == 1 else "are"
    if stale == 0:
        state = "dead"
    elif dead == 0:
        state = "stale"
    else:
        state = f"dead ({dead}) or stale ({stale})"
    trials = sorted(running, key=lambda item: item.record.trial_number or 0)
    listed = ", ".join(f"#{i.record.trial_number} ({i.verdict.kind.value})" for i in trials)
    facts: list[tuple[str, str]] = [("store", store), ("running trials", listed)]
    if progress is not None:
        facts.append(
            (
                "trials",
                f"{progress.complete} complete, {progress.pruned} pruned, {progress.failed} "
                f"failed, {progress.waiting} waiting",
            )
        )
        if progress.best_value is not None and progress.best_trial_number is not None:
            best = f"{number(progress.best_value)}, trial {progress.best_trial_number}"
            facts.append(("best so far", best))
    ids = ",".join(sorted(item.record.id for item in running))
    return Event(
        kind=EventKind.STUDY_STOPPED,
        key=f"study-stopped:{store}:{study_id}:{ids}",
        at=now,
        headline=(
            f"study {study} stopped: its {plural(n, 'running trial')} {verb} {state}, "
            "so no worker is left"
        ),
        severity=Severity.FAILURE if dead else Severity.WARNING,
        facts=tuple(facts),
        links=(("optuna-dashboard", links.study(study_id)),),
        store=store,
    )


def experiment_idle_event(
    store: StoreId,
    experiment: str,
    experiment_id: str,
    last_active: datetime,
    idle_after: timedelta,
    links: LinkBases,
) -> Event:
    """An experiment with no live run for ``idle_after``, after mltidy saw it active."""
    return Event(
        kind=EventKind.EXPERIMENT_IDLE,
        key=f"experiment-idle:{store}:{experiment_id}:{last_active.isoformat()}",
        at=last_active + idle_after,
        headline=(
            f"experiment {experiment} went idle: no run active since {when(last_active)} "
            f"(--idle-after {format_duration(idle_after)})"
        ),
        severity=Severity.INFO,
        facts=(("store", store), ("last activity", when(last_active))),
        links=(("MLflow", links.experiment(store, experiment_id)),),
        store=store,
    )


def store_failing_event(status: StoreStatus, since: datetime, now: datetime) -> Event:
    """A store that ``watch`` could not read twice in a row (so its events may be missing)."""
    return Event(
        kind=EventKind.STORE_FAILING,
        key=f"store-failing:{status.uri}:{since.isoformat()}",
        at=now,
        headline=f"mltidy cannot read the {status.kind.value} store {status.uri}: {status.error}",
        severity=Severity.FAILURE,
        facts=(("store", status.uri), ("failing since", when(since))),
        store=status.uri,
    )
