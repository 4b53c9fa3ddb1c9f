"""Events: what happened, in words a person reads, and messages that group many events into one.

An event is one thing worth telling someone: a run ended, a run or trial became dead or stale, a
study finished or stopped, an experiment went idle, a store stopped answering, a supervised job
died. Each has a stable ``key``, so ``watch`` sends it once however often it sees it again.

Messages group events: fifty dead trials after a node reboot are one message whose title counts
them, not fifty messages. A trial that died with its MLflow run is folded into the run's entry,
since they are one job.

Nothing here does I/O; delivery lives in :mod:`mltidy.notify`.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from enum import Enum
from typing import Any

from mltidy.durations import format_duration
from mltidy.judge import short_command
from mltidy.links import (
    DEFAULT_DASHBOARD,
    dashboard_study_url,
    dashboard_trial_url,
    mlflow_experiment_url,
    mlflow_run_url,
    mlflow_ui_for,
)
from mltidy.model import JudgedRecord, Record, RecordKind, StoreStatus, StudyProgress, VerdictKind
from mltidy.provenance import facts as keys
from mltidy.provenance.mlflow_keys import STUDY, TRIAL_NUMBER

#: Events shown with all their facts in one message; the rest get one line each.
DETAILED = 10
#: One-line entries after the detailed ones; beyond that, a count.
LISTED = 100
TITLE_LIMIT = 200


class EventKind(str, Enum):
    """What happened. The values are what ``--skip`` takes and what JSON output says."""

    RUN_FINISHED = "run-finished"
    RUN_FAILED = "run-failed"
    RUN_KILLED = "run-killed"
    DEAD = "dead"
    STALE = "stale"
    STUDY_FINISHED = "study-finished"
    STUDY_STOPPED = "study-stopped"
    EXPERIMENT_IDLE = "experiment-idle"
    STORE_FAILING = "store-failing"
    JOB_FAILED = "job-failed"
    JOB_SUCCEEDED = "job-succeeded"


class Severity(str, Enum):
    """How bad it is; the values are apprise's notification types (colours and icons)."""

    INFO = "info"
    SUCCESS = "success"
    WARNING = "warning"
    FAILURE = "failure"

    @property
    def rank(self) -> int:
        """Order for picking a message's overall severity."""
        return list(Severity).index(self)


#: Counting labels, worst news first: the order of a grouped message's title.
_LABELS: Mapping[str, tuple[str, str]] = {
    "dead:run": ("run dead", "runs dead"),
    "dead:trial": ("trial dead", "trials dead"),
    EventKind.JOB_FAILED.value: ("job failed", "jobs failed"),
    EventKind.RUN_FAILED.value: ("run failed", "runs failed"),
    EventKind.RUN_KILLED.value: ("run killed", "runs killed"),
    EventKind.STUDY_STOPPED.value: ("study stopped", "studies stopped"),
    EventKind.STORE_FAILING.value: ("store unreadable", "stores unreadable"),
    "stale:run": ("run stale", "runs stale"),
    "stale:trial": ("trial stale", "trials stale"),
    EventKind.RUN_FINISHED.value: ("run finished", "runs finished"),
    EventKind.STUDY_FINISHED.value: ("study finished", "studies finished"),
    EventKind.JOB_SUCCEEDED.value: ("job finished", "jobs finished"),
    EventKind.EXPERIMENT_IDLE.value: ("experiment idle", "experiments idle"),
}


@dataclass(frozen=True)
class Event:
    """One thing worth telling someone.

    Attributes:
        kind: what happened.
        key: stable identity, for sending each event once (never holds a secret).
        at: when it happened (aware UTC).
        headline: one sentence saying what happened.
        severity: how bad it is.
        facts: ``(label, value)`` lines under the headline.
        links: ``(label, url)`` lines: MLflow UI, optuna-dashboard.
        store: the store's display URI (redacted), if the event is about one.
        subject: ``run:<id>`` or ``trial:<id>``, so that a trial can fold into its run.
        parent: for a trial, ``run:<id>`` of the MLflow run it trained in.
    """

    kind: EventKind
    key: str
    at: datetime
    headline: str
    severity: Severity
    facts: tuple[tuple[str, str], ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    store: str | None = None
    subject: str | None = None
    parent: str | None = None

    @property
    def label(self) -> str:
        """The counting label's key: the kind, and for dead/stale whether run or trial."""
        if self.kind in (EventKind.DEAD, EventKind.STALE) and self.subject:
            return f"{self.kind.value}:{self.subject.split(':', 1)[0]}"
        return self.kind.value

    def to_dict(self) -> dict[str, Any]:
        """JSON form: the watch state's outbox and ``--format json`` (a stable shape)."""
        return {
            "kind": self.kind.value,
            "key": self.key,
            "at": self.at.astimezone(timezone.utc).isoformat(timespec="seconds"),
            "headline": self.headline,
            "severity": self.severity.value,
            "store": self.store,
            "facts": {label: value for label, value in self.facts},
            "links": {label: url for label, url in self.links},
            "subject": self.subject,
            "parent": self.parent,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Event:
        """The inverse of :meth:`to_dict`."""
        return cls(
            kind=EventKind(data["kind"]),
            key=str(data["key"]),
            at=datetime.fromisoformat(str(data["at"])),
            headline=str(data["headline"]),
            severity=Severity(data["severity"]),
            facts=tuple((str(k), str(v)) for k, v in dict(data.get("facts") or {}).items()),
            links=tuple((str(k), str(v)) for k, v in dict(data.get("links") or {}).items()),
            store=data.get("store"),
            subject=data.get("subject"),
            parent=data.get("parent"),
        )


@dataclass(frozen=True)
class Message:
    """One notification: a title, a plain-text body, and the worst severity in it."""

    title: str
    body: str
    severity: Severity
    events: int


# -- formatting ---------------------------------------------------------------------------


def when(value: datetime | None) -> str:
    """A time people read in a message: ``2026-01-01 10:42:05 UTC``."""
    if value is None:
        return "unknown"
    return value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def number(value: float) -> str:
    """An objective value, short."""
    return f"{value:.6g}"


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


@dataclass(frozen=True)
class LinkSettings:
    """Where the UIs live: ``mlflow_ui`` and ``dashboard_url`` from the config file, else the
    defaults of :mod:`mltidy.links` (a tracking server is its own UI)."""

    mlflow_ui: str | None = None
    dashboard: str | None = None

    def run(self, record: Record) -> str:
        """The MLflow UI page of a run."""
        return mlflow_run_url(self._ui(record.store), record.container_id, record.id)

    def experiment(self, store: str, experiment_id: str) -> str:
        """The MLflow UI page of an experiment."""
        return mlflow_experiment_url(self._ui(store), experiment_id)

    def trial(self, study_id: str, trial_number: int) -> str:
        """The optuna-dashboard page of a trial."""
        return dashboard_trial_url(self.dashboard or DEFAULT_DASHBOARD, study_id, trial_number)

    def study(self, study_id: str) -> str:
        """The optuna-dashboard page of a study."""
        return dashboard_study_url(self.dashboard or DEFAULT_DASHBOARD, study_id)

    def _ui(self, store: str) -> str:
        served = store if store.startswith(("http://", "https://")) and "***" not in store else None
        return mlflow_ui_for(served, self.mlflow_ui)


def describe_record(record: Record) -> str:
    """``run trial-3 (fcd04ace) in experiment tuning`` / ``trial 3 of study tuning``."""
    if record.kind is RecordKind.MLFLOW_RUN:
        return f"run {record.name} ({record.id[:8]}) in experiment {record.container}"
    return f"trial {record.trial_number} of study {record.container}"


def _subject(record: Record) -> str:
    noun = "run" if record.kind is RecordKind.MLFLOW_RUN else "trial"
    return f"{noun}:{record.id}"


def _process_facts(record: Record) -> list[tuple[str, str]]:
    tags = record.tags
    facts: list[tuple[str, str]] = []
    if tags.get(keys.HOST):
        where = tags[keys.HOST]
        if tags.get(keys.PID):
            where = f"pid {tags[keys.PID]} on {where}"
        facts.append(("process", where))
    if tags.get(keys.CMD):
        facts.append(("command", short_command(tags[keys.CMD])))
    user = record.user or tags.get(keys.USER)
    if user:
        facts.append(("user", user))
    if tags.get(keys.SLURM_JOB_ID):
        facts.append(("SLURM job", tags[keys.SLURM_JOB_ID]))
    return facts


def _trial_of_run(record: Record) -> tuple[str, str] | None:
    study, trial = record.tags.get(STUDY), record.tags.get(TRIAL_NUMBER)
    if study and trial:
        return ("Optuna trial", f"{study} #{trial}")
    return None


def _span(start: datetime | None, end: datetime | None) -> str | None:
    if start is None:
        return None
    text = when(start)
    if end is not None and end >= start:
        text += f" ({format_duration(end - start)} until {when(end)})"
    return text


# -- builders -----------------------------------------------------------------------------


def verdict_event(item: JudgedRecord, links: LinkSettings, now: datetime) -> Event:
    """A run or trial that is dead or stale."""
    record, verdict = item.record, item.verdict
    dead = verdict.kind is VerdictKind.DEAD
    kind = EventKind.DEAD if dead else EventKind.STALE
    noun = "run" if record.kind is RecordKind.MLFLOW_RUN else "trial"
    facts: list[tuple[str, str]] = [("store", record.store), ("evidence", verdict.reason)]
    if record.started_at is not None:
        facts.append(("started", when(record.started_at)))
    if record.last_activity_at is not None:
        ago = format_duration(max(now - record.last_activity_at, timedelta(0)))
        facts.append(("last activity", f"{when(record.last_activity_at)} ({ago} ago)"))
    facts += _process_facts(record)
    links_: list[tuple[str, str]] = []
    parent = None
    if record.kind is RecordKind.MLFLOW_RUN:
        trial = _trial_of_run(record)
        if trial:
            facts.append(trial)
        links_.append(("MLflow", links.run(record)))
    elif record.trial_number is not None:
        facts.insert(1, ("Optuna trial", f"{record.container} #{record.trial_number}"))
        links_.append(("optuna-dashboard", links.trial(record.container_id, record.trial_number)))
    if record.kind is RecordKind.OPTUNA_TRIAL and record.evidence_from:
        parent = f"run:{record.evidence_from}"
    what = "dead" if dead else "stale"
    prefix = "gone" if dead else "stale"
    return Event(
        kind=kind,
        key=f"{prefix}:{record.store}:{noun}:{record.id}",
        at=now,
        headline=f"{describe_record(record)} is {what}: {verdict.reason}",
        severity=Severity.FAILURE if dead else Severity.WARNING,
        facts=tuple(facts),
        links=tuple(links_),
        store=record.store,
        subject=_subject(record),
        parent=parent,
    )


CLOSED_REASON = keys.PREFIX + "closed_reason"


def ended_run_event(record: Record, links: LinkSettings) -> Event:
    """An MLflow run that ended: finished, failed or killed (also by ``mltidy close``)."""
    closed = record.tags.get(CLOSED_REASON)
    end = record.ended_at
    took = (
        f" after {format_duration(end - record.started_at)}"
        if end is not None and record.started_at is not None and end >= record.started_at
        else ""
    )
    facts: list[tuple[str, str]] = [("store", record.store)]
    span = _span(record.started_at, end)
    if span:
        facts.append(("ran", span))
    trial = _trial_of_run(record)
    if trial:
        facts.append(trial)
    facts += _process_facts(record)
    if closed:
        kind, severity = EventKind.RUN_KILLED, Severity.FAILURE
        headline = f"{describe_record(record)} was closed by mltidy as {record.state}: {closed}"
        key = f"gone:{record.store}:run:{record.id}"
        facts.insert(1, ("closed by", record.tags.get(keys.PREFIX + "closed_by", "mltidy")))
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
        subject=_subject(record),
    )


def study_finished_event(
    store: str, progress: StudyProgress, why: str, links: LinkSettings
) -> Event:
    """A study with nothing left to run: idle long enough, or its trial budget reached."""
    p = progress
    headline = f"study {p.study} finished: {_plural(p.finished, 'trial')}"
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
    span = _span(p.first_started_at, p.last_completed_at)
    if span:
        facts.append(("ran", span))
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
    store: str,
    study: str,
    study_id: str,
    running: Sequence[JudgedRecord],
    links: LinkSettings,
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
            f"study {study} stopped: its {_plural(n, 'running trial')} {verb} {state}, "
            "so no worker is left"
        ),
        severity=Severity.FAILURE if dead else Severity.WARNING,
        facts=tuple(facts),
        links=(("optuna-dashboard", links.study(study_id)),),
        store=store,
    )


def experiment_idle_event(
    store: str,
    experiment: str,
    experiment_id: str,
    last_active: datetime,
    idle_after: timedelta,
    links: LinkSettings,
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


# -- messages -----------------------------------------------------------------------------


def summary(events: Iterable[Event]) -> str:
    """``3 runs dead, 3 trials dead, 1 study finished``: worst news first."""
    counts: Counter[str] = Counter()
    for event in events:
        counts[event.label] += 1
    order = list(_LABELS)
    parts = []
    for label, n in sorted(
        counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)
    ):
        one, many = _LABELS.get(label, (label, label))
        parts.append(f"{n} {one if n == 1 else many}")
    return ", ".join(parts)


def fold(events: Sequence[Event]) -> list[Event]:
    """Fold each trial event into its MLflow run's event of the same kind, when both are here.

    The trial keeps its dashboard link and names itself under the run; the run's entry then
    speaks for both (they are one job).
    """
    runs = {e.subject: i for i, e in enumerate(events) if (e.subject or "").startswith("run:")}
    merged: dict[int, Event] = {}
    out: list[Event | None] = list(events)
    for i, event in enumerate(events):
        target = runs.get(event.parent) if event.parent else None
        if target is None or events[target].kind is not event.kind:
            continue
        run = merged.get(target, events[target])
        known = dict(run.facts)
        extra = [
            (label, value)
            for label, value in event.facts
            if label == "Optuna trial" and known.get(label) != value
        ]
        if event.store and event.store != run.store:
            extra.append(("trial store", event.store))
        merged[target] = dataclasses.replace(
            run, facts=(*run.facts, *extra), links=(*run.links, *event.links)
        )
        out[i] = None
    for i, event in merged.items():
        out[i] = event
    return [e for e in out if e is not None]


def render_event(event: Event) -> str:
    """One event as text: the headline, then indented facts and links."""
    lines = [event.headline]
    lines += [f"  {label}: {value}" for label, value in event.facts]
    lines += [f"  {label}: {url}" for label, url in event.links]
    return "\n".join(lines)


def compose(events: Sequence[Event], *, detailed: int = DETAILED, listed: int = LISTED) -> Message:
    """One message for many events: a counting title, then each event (the first ``detailed``
    with their facts and links, the next ``listed`` as one line, then a count)."""
    if not events:
        raise ValueError("compose needs at least one event")
    entries = sorted(fold(events), key=lambda e: -e.severity.rank)
    severity = max((e.severity for e in events), key=lambda s: s.rank)
    title = "mltidy: " + (entries[0].headline if len(entries) == 1 else summary(events))
    if len(title) > TITLE_LIMIT:
        title = title[: TITLE_LIMIT - 3] + "..."
    blocks = [render_event(e) for e in entries[:detailed]]
    rest = entries[detailed:]
    if rest:
        lines = [f"And {len(rest)} more:"]
        lines += [f"- {e.headline}" for e in rest[:listed]]
        if len(rest) > listed:
            lines.append(
                f"- ... and {len(rest) - listed} more (mltidy watch --once -f json lists them all)"
            )
        blocks.append("\n".join(lines))
    return Message(title, "\n\n".join(blocks) + "\n", severity, len(events))
