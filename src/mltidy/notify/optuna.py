"""Notify from inside the tuning process when ``study.optimize`` completes or raises.

::

    from mltidy.notify.optuna import notify_when_done

    with notify_when_done(study):                 # targets: MLTIDY_NOTIFY, or the config file
        study.optimize(objective, n_trials=100)

    with notify_when_done(study, "ntfy://my-topic", on="failure"):
        study.optimize(objective, n_trials=100)

The message names the study, how optimize ended (completed, interrupted, or the exception), the
trial counts, the best trial and value, and the optuna-dashboard links. A failed delivery is
logged (with the target's scheme only) and never hides the exception optimize raised, nor
raises one of its own. optuna is not imported here: the study object is enough.
"""

from __future__ import annotations

import contextlib
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any, Literal

from mltidy.config import load_config
from mltidy.durations import format_duration
from mltidy.linking.urls import LinkBases
from mltidy.model import utc_now
from mltidy.notify.delivery import Target, deliver, resolve_targets
from mltidy.notify.events import Event, EventKind, Severity, number, when
from mltidy.notify.messages import compose

_log = logging.getLogger("mltidy")
When = Literal["always", "failure", "success"]


def _targets(notify: str | Sequence[str] | None) -> list[Target]:
    if isinstance(notify, str):
        notify = [notify]
    if notify:
        return [Target(url, "notify_when_done") for u in notify for url in u.split()]
    return resolve_targets(None, load_config())


def _links() -> LinkBases:
    with contextlib.suppress(Exception):
        return load_config().link_bases()
    return LinkBases()


def optimize_event(
    study: Any, started: datetime, error: BaseException | None, links: LinkBases
) -> Event:
    """The event for an optimize that ended, from the study object itself."""
    name = str(study.study_name)
    study_id = str(getattr(study, "_study_id", ""))
    trials = list(study.get_trials(deepcopy=False))
    states = Counter(t.state.name for t in trials)
    ended = utc_now()
    took = format_duration(ended - started)
    counts = ", ".join(
        f"{states[s]} {s.lower()}" for s in ("COMPLETE", "PRUNED", "FAIL", "RUNNING") if states[s]
    )
    facts: list[tuple[str, str]] = [
        ("study", name),
        ("trials", f"{len(trials)} in the study ({counts or 'none'})"),
        ("optimize", f"{when(started)} ({took} until {when(ended)})"),
    ]
    links_: list[tuple[str, str]] = []
    if study_id:
        links_.append(("optuna-dashboard", links.study(study_id)))
    best = None
    if len(getattr(study, "directions", ())) == 1:
        with contextlib.suppress(Exception):  # no completed trial yet
            best = study.best_trial
    if best is not None and best.value is not None:
        facts.append(("best", f"{number(best.value)}, trial {best.number}"))
        if best.params:
            facts.append(("best params", ", ".join(f"{k}={v}" for k, v in best.params.items())))
        if study_id:
            links_.append(("best trial", links.trial(study_id, best.number)))
    best_text = (
        f", best value {number(best.value)} (trial {best.number})"
        if best is not None and best.value is not None
        else ""
    )
    if error is None:
        kind, severity = EventKind.STUDY_FINISHED, Severity.SUCCESS
        headline = f"study {name}: optimize completed after {took}{best_text}"
    else:
        kind, severity = EventKind.STUDY_STOPPED, Severity.FAILURE
        if isinstance(error, KeyboardInterrupt):
            what = "was interrupted (KeyboardInterrupt)"
        else:
            text = str(error).strip().splitlines()[0][:200] if str(error).strip() else ""
            what = f"raised {type(error).__name__}" + (f": {text}" if text else "")
        headline = f"study {name}: optimize {what} after {took}{best_text}"
        facts.append(("error", f"{type(error).__name__}: {error}"[:500]))
    return Event(
        kind=kind,
        key=f"optimize:{name}:{started.timestamp():.3f}",
        at=ended,
        headline=headline,
        severity=severity,
        facts=tuple(facts),
        links=tuple(links_),
    )


@contextlib.contextmanager
def notify_when_done(
    study: Any,
    notify: str | Sequence[str] | None = None,
    *,
    on: When = "always",
    links: LinkBases | None = None,
) -> Iterator[None]:
    """Send one message when the block (``study.optimize``) ends: completed, or raised.

    Args:
        study: the ``optuna.Study``.
        notify: apprise URL(s); default ``MLTIDY_NOTIFY``, else ``notify`` in the config file.
        on: ``always``, or only on ``failure`` (an exception) or ``success``.
        links: where optuna-dashboard lives (default: ``dashboard_url`` of the config file).
    """
    targets = _targets(notify)
    started = utc_now()
    try:
        yield
    except BaseException as exc:
        if on in ("always", "failure"):
            _send(optimize_event(study, started, exc, links or _links()), targets)
        raise
    if on in ("always", "success"):
        _send(optimize_event(study, started, None, links or _links()), targets)


def _send(event: Event, targets: list[Target]) -> None:
    try:
        for delivery in deliver(compose([event]), targets):
            if not delivery.ok:
                _log.warning("mltidy could not notify %s: %s", delivery.target, delivery.error)
    except Exception:  # never let a notification hide what optimize did
        _log.warning("mltidy could not send the optimize notification", exc_info=True)


__all__ = ["notify_when_done", "optimize_event"]
