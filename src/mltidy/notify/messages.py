"""Messages: many events grouped into one notification.

Fifty dead trials after a node reboot are one message whose title counts them, not fifty
messages; a trial that died with its MLflow run is folded into the run's entry, since they are
one job. Pure: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

from mltidy.notify.events import Event, EventKind, Message
from mltidy.text import md_escape, md_link, safe

#: Events shown with all their facts in one message; the rest get one line each.
DETAILED = 10
#: One-line entries after the detailed ones; beyond that, a count.
LISTED = 100
TITLE_LIMIT = 200

#: Counting labels, worst news first: the order of a grouped message's title.
_LABELS: Mapping[str, str] = {
    "dead:run": "run dead",
    "dead:trial": "trial dead",
    EventKind.JOB_FAILED.value: "job failed",
    EventKind.RUN_FAILED.value: "run failed",
    EventKind.RUN_KILLED.value: "run killed",
    EventKind.STUDY_STOPPED.value: "study stopped",
    EventKind.STORE_FAILING.value: "store unreadable",
    EventKind.CLOCK_SKEW.value: "record dated in the future",
    "stale:run": "run stale",
    "stale:trial": "trial stale",
    EventKind.RUN_FINISHED.value: "run finished",
    EventKind.STUDY_FINISHED.value: "study finished",
    EventKind.JOB_SUCCEEDED.value: "job finished",
    EventKind.EXPERIMENT_IDLE.value: "experiment idle",
}


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
        said = _LABELS.get(label)
        if said is None:
            parts.append(f"{n} {label}")
        else:
            parts.append(f"{n} {said if n == 1 else _plural(said)}")
    return ", ".join(parts)


def _plural(label: str) -> str:
    """A counting label for more than one: its first word, the noun, in the plural."""
    noun, _, rest = label.partition(" ")
    many = noun[:-1] + "ies" if noun.endswith("y") else noun + "s"
    return f"{many} {rest}".rstrip()


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
    """One event as text: the headline, then indented facts and links. Names inside are
    someone else's text: each line is :func:`~mltidy.text.safe` (no controls, no bidi)."""
    lines = [safe(event.headline)]
    lines += [f"  {safe(label)}: {safe(value)}" for label, value in event.facts]
    lines += [f"  {safe(label)}: {safe(url)}" for label, url in event.links]
    return "\n".join(lines)


def markdown_event(event: Event) -> str:
    """One event as a Markdown list item: literal text, links only to the http(s) pages mltidy
    built."""
    lines = [f"- **{event.kind.value}**: {md_escape(event.headline)}"]
    lines += [f"  - {md_escape(label)}: {md_escape(value)}" for label, value in event.facts]
    lines += [f"  - {md_link(md_escape(label), url)}" for label, url in event.links]
    return "\n".join(lines) + "\n"


def compose(events: Sequence[Event], *, detailed: int = DETAILED, listed: int = LISTED) -> Message:
    """One message for many events: a counting title, then each event (the first ``detailed``
    with their facts and links, the next ``listed`` as one line, then a count)."""
    if not events:
        raise ValueError("compose needs at least one event")
    entries = sorted(fold(events), key=lambda e: -e.severity.rank)
    severity = max((e.severity for e in events), key=lambda s: s.rank)
    title = "mltidy: " + safe(entries[0].headline if len(entries) == 1 else summary(events))
    if len(title) > TITLE_LIMIT:
        title = title[: TITLE_LIMIT - 3] + "..."
    blocks = [render_event(e) for e in entries[:detailed]]
    rest = entries[detailed:]
    if rest:
        lines = [f"And {len(rest)} more:"]
        lines += [f"- {safe(e.headline)}" for e in rest[:listed]]
        if len(rest) > listed:
            lines.append(
                f"- ... and {len(rest) - listed} more (mltidy watch --once -f json lists them all)"
            )
        blocks.append("\n".join(lines))
    return Message(title, "\n\n".join(blocks) + "\n", severity, len(events))
