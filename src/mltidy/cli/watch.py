"""``mltidy watch``: poll the stores and notify each event once (as a daemon, or ``--once``)."""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer
from typing_extensions import assert_never

from mltidy.backends.session import StoreSession
from mltidy.cli.errors import print_error, report_store_failure, translated_errors
from mltidy.cli.options import FormatOption, NotifyOption
from mltidy.cli.render import OutputFormat, store_dict, write_json_document, write_json_lines
from mltidy.cli.render_changes import change_dict
from mltidy.cli.selection import JUDGING, STORES, Given, with_given
from mltidy.close import Outcome
from mltidy.config import IDLE_AFTER
from mltidy.durations import format_duration, parse_duration
from mltidy.errors import ExitCode, MltidyError, UsageError
from mltidy.model import iso
from mltidy.notify.delivery import Target, resolve_targets, validate
from mltidy.notify.events import EventKind
from mltidy.notify.messages import markdown_event
from mltidy.scope import check_names
from mltidy.text import safe
from mltidy.watch import poll as watch
from mltidy.watch.poll import PollResult
from mltidy.watch.state import WatchState, default_state_path


@with_given(*STORES, *JUDGING)
def watch_command(
    given: Given,
    notify: NotifyOption = None,
    once: Annotated[
        bool,
        typer.Option("--once", help="Poll once and exit (for cron and systemd timers)."),
    ] = False,
    interval: Annotated[
        str,
        typer.Option(
            "--interval",
            metavar="DURATION",
            envvar="MLTIDY_WATCH_INTERVAL",
            help="Time between polls when running as a daemon (90s, 5m, 1h).",
        ),
    ] = "60s",
    idle_after: Annotated[
        str | None,
        typer.Option(
            "--idle-after",
            metavar="DURATION",
            help="A study with nothing RUNNING or WAITING and no trial started or ended for this "
            "long has finished; an experiment with no live run for this long went idle. "
            "Default: MLTIDY_IDLE_AFTER, else idle_after from the config file, else 30m.",
            show_default=False,
        ),
    ] = None,
    budget: Annotated[
        int | None,
        typer.Option(
            "--budget",
            metavar="N",
            min=1,
            help="A study has finished once N trials ended, without waiting --idle-after "
            "(a study's own mltidy.budget user attribute takes precedence).",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DURATION",
            help="On the first poll of a store, also report runs that ended and studies that "
            "finished this long before it (default: only what happens from now on).",
        ),
    ] = None,
    close_dead: Annotated[
        bool,
        typer.Option(
            "--close",
            help="Close dead runs and trials as they are found, with the same safety as "
            "mltidy close --yes.",
        ),
    ] = False,
    skip: Annotated[
        list[EventKind] | None,
        typer.Option(
            "--skip",
            metavar="KIND",
            help="Do not report this kind of event (e.g. run-finished). Repeatable. Kinds: "
            + ", ".join(k.value for k in EventKind if not k.value.startswith("job-"))
            + ".",
            case_sensitive=False,
            show_default=False,
        ),
    ] = None,
    state: Annotated[
        Path | None,
        typer.Option(
            "--state",
            metavar="PATH",
            envvar="MLTIDY_WATCH_STATE",
            help="The state file (SQLite) that remembers what was sent. Default: one file per "
            "set of stores under $XDG_STATE_HOME/mltidy (~/.local/state/mltidy).",
            show_default=False,
        ),
    ] = None,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Watch the stores and notify: runs finished, failed or killed; runs and trials dead or
    stale; studies finished or stopped; experiments gone idle.

    Each event is sent once, grouped with the others of the same poll into one message; a
    message that could not be delivered is retried on the next poll. The first poll of a store
    only notes what already ended (see --since); dead and stale records are reported at once.

    Exit codes (--once): 0 ok, 2 usage error, 3 a store could not be read, 4 a message could
    not be delivered (it stays queued) or a --close failed.
    """
    with translated_errors(json_mode=output.is_machine):
        resolved = given.resolve()
        if not resolved.specs:
            raise UsageError(
                "no stores to watch",
                hint="pass --mlflow URI / --optuna URL, set MLFLOW_TRACKING_URI / "
                "OPTUNA_STORAGE, or run in a folder that holds them",
            )
        with resolved.session() as session:  # a URI no backend reads fails now, not in the loop
            if not once and resolved.selection.by_container:
                check_names(session, resolved.selection)  # and so does a name no store holds
        config = resolved.config
        options = watch.WatchOptions(
            stale_after=resolved.policy.stale_after,
            idle_after=config.value(IDLE_AFTER, idle_after) or watch.DEFAULT_IDLE_AFTER,
            budget=budget,
            lookback=parse_duration(since) if since else watch.WatchOptions.lookback,
            close=close_dead,
            skip=frozenset(skip or ()),
            links=resolved.bases,
        )
        every = parse_duration(interval)
        targets = resolve_targets(notify, config)
        validate(targets)
        path = state or default_state_path(
            (s.id for s in resolved.specs),
            resolved.selection.experiments,
            resolved.selection.studies,
            os.environ,
            resolved.selection.narrowing(),
        )
        store = WatchState(path)

    memory = watch.PollMemory()

    def run_poll() -> PollResult:
        return watch.poll(
            resolved.specs,
            resolved.selection,
            store,
            targets,
            options,
            session=lambda specs: StoreSession(specs, zones=resolved.zones),
            memory=memory,
        )

    try:
        if once:
            with translated_errors(json_mode=output.is_machine):
                result = run_poll()
                _report(result, output)
            raise typer.Exit(_exit_code(result))
        _daemon(run_poll, every, output, path, targets, len(resolved.specs))
    finally:
        store.close()


def _exit_code(result: PollResult) -> int:
    if result.failed_stores:
        return int(ExitCode.STORE)
    if result.failed_deliveries or result.failed_closes:
        return int(ExitCode.CHANGE)
    return int(ExitCode.OK)


def _daemon(
    run_poll: Callable[[], PollResult],
    every: timedelta,
    output: OutputFormat,
    path: Path,
    targets: list[Target],
    stores: int,
) -> None:
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        sys.stderr.write(f"mltidy: {signal.Signals(signum).name}: stopping after this poll\n")
        stop.set()
        signal.signal(signum, signal.SIG_DFL)  # a second one stops at once

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    to = ", ".join(t.shown for t in targets) or "nobody (no --notify)"
    sys.stderr.write(
        f"mltidy: watching {stores} store(s) every {format_duration(every)}; notifying {to}; "
        f"state {safe(path)}\n"
    )
    sys.stderr.flush()

    def on_error(exc: MltidyError) -> None:
        print_error(exc.message, exc.hint)

    try:
        watch.watch_forever(run_poll, every, stop, lambda r: _report(r, output), on_error)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report(result: PollResult, output: OutputFormat) -> None:
    """The poll's new events on stdout; stores, deliveries and closes in one line each on stderr."""
    for status in result.failed_stores:
        report_store_failure(status)
    for delivery in result.failed_deliveries:
        print_error(
            f"could not notify {delivery.target}: {delivery.error} (kept; retried on the next poll)"
        )
    for change in result.failed_closes:
        record = change.item.record
        print_error(f"could not close {record.name} ({record.id}): {change.detail}")
    if output is OutputFormat.JSON:
        write_json_document(poll_json(result))
    elif output is OutputFormat.JSONL:
        payload = poll_json(result)
        write_json_lines(
            [
                *({"event": event} for event in payload["events"]),
                *({"delivery": delivery} for delivery in payload["deliveries"]),
            ]
        )
    elif output is OutputFormat.MARKDOWN:
        if result.events:
            sys.stdout.write(f"## mltidy watch, {iso(result.at)}\n\n")
            for event in result.events:
                sys.stdout.write(markdown_event(event))
            sys.stdout.write("\n")
    elif output is OutputFormat.TABLE:
        stamp = result.at.strftime("%Y-%m-%d %H:%M:%S")
        for event in result.events:
            sys.stdout.write(f"{stamp}  {event.kind.value:<16} {safe(event.headline)}\n")
        _summary(result)
    else:
        assert_never(output)
    sys.stdout.flush()
    sys.stderr.flush()


def _summary(result: PollResult) -> None:
    parts = [f"{len(result.events)} new event(s)"]
    if result.known:
        parts.append(f"{result.known} already past on this first poll (not sent)")
    sent = [d for d in result.deliveries if d.ok]
    for delivery in sent:
        parts.append(f"sent {delivery.events} event(s) to {delivery.target}")
    if result.given_up:
        parts.append(f"gave up {result.given_up} event(s) undeliverable for a week")
    if result.closed is not None:
        closed = sum(1 for c in result.closed.changes if c.outcome is Outcome.CLOSED)
        parts.append(f"closed {closed}")
    ok = sum(1 for s in result.stores if s.ok)
    sys.stderr.write(
        safe(f"mltidy: polled {ok}/{len(result.stores)} store(s): " + "; ".join(parts)) + "\n"
    )


def poll_json(result: PollResult) -> dict[str, Any]:
    """One poll as the JSON object ``watch --format json`` prints."""
    return {
        "at": iso(result.at),
        "stores": [store_dict(s) for s in result.stores],
        "events": [e.to_dict() for e in result.events],
        "known": result.known,
        "deliveries": [
            {"target": d.target, "ok": d.ok, "events": d.events, "error": d.error}
            for d in result.deliveries
        ],
        "given_up": result.given_up,
        "closed": [change_dict(c) for c in result.closed.changes] if result.closed else [],
    }
