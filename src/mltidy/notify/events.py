"""Events: what happened, in words a person reads.

An event is one thing worth telling someone: a run ended, a run or trial became dead or stale, a
study finished or stopped, an experiment went idle, a store stopped answering, a supervised job
died. Each has a stable ``key``, so ``watch`` sends it once however often it sees it again.

Nothing here does I/O. What happened in the stores becomes events in
:mod:`mltidy.notify.store_events`; :mod:`mltidy.notify.messages` groups events into messages and
:mod:`mltidy.notify.delivery` sends them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from mltidy import names
from mltidy.durations import format_duration
from mltidy.judge import short_command
from mltidy.model import Record, RecordKind, StoreId


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
    CLOCK_SKEW = "clock-skew"
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
        store: the store's identity, if the event is about one.
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
    store: StoreId | None = None
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
            store=StoreId(data["store"]) if data.get("store") else None,
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


def plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n} {word if n == 1 else (words or word + 's')}"


def describe_record(record: Record) -> str:
    """``run trial-3 (fcd04ace) in experiment tuning`` / ``trial 3 of study tuning``."""
    if record.kind is RecordKind.MLFLOW_RUN:
        return f"run {record.name} ({record.id[:8]}) in experiment {record.container}"
    return f"trial {record.trial_number} of study {record.container}"


def subject_of(record: Record) -> str:
    noun = "run" if record.kind is RecordKind.MLFLOW_RUN else "trial"
    return f"{noun}:{record.id}"


def process_facts(record: Record) -> list[tuple[str, str]]:
    tags = record.tags
    facts: list[tuple[str, str]] = []
    if tags.get(names.HOST):
        where = tags[names.HOST]
        if tags.get(names.PID):
            where = f"pid {tags[names.PID]} on {where}"
        facts.append(("process", where))
    if tags.get(names.CMD):
        facts.append(("command", short_command(tags[names.CMD])))
    user = record.user or tags.get(names.USER)
    if user:
        facts.append(("user", user))
    if tags.get(names.SLURM_JOB_ID):
        facts.append(("SLURM job", tags[names.SLURM_JOB_ID]))
    return facts


def trial_of_run(record: Record) -> tuple[str, str] | None:
    study, trial = record.tags.get(names.RUN_STUDY), record.tags.get(names.RUN_TRIAL_NUMBER)
    if study and trial:
        return ("Optuna trial", f"{study} #{trial}")
    return None


def span(start: datetime | None, end: datetime | None) -> str | None:
    if start is None:
        return None
    text = when(start)
    if end is not None and end >= start:
        text += f" ({format_duration(end - start)} until {when(end)})"
    return text
