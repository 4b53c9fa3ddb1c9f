"""``mltidy demo``: a sandbox with real killed jobs, and the hygiene loop run on it."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.text import Text

from mltidy import close, declutter
from mltidy.backends.identity import store_spec
from mltidy.backends.session import StoreSession
from mltidy.cli.errors import translated_errors
from mltidy.cli.link import links_table
from mltidy.cli.options import NotifyOption
from mltidy.cli.render import stdout_console
from mltidy.cli.render_changes import runs_table, studies_table
from mltidy.cli.tables import CHANGE_COLUMNS, Screen, change_rows, changes_title, print_records
from mltidy.cli.tables import print_table as print_plain_table
from mltidy.config import Config
from mltidy.declutter import RunAction, restore_command
from mltidy.demo.sandbox import Sandbox
from mltidy.evidence.local import LocalProbe
from mltidy.judge import DEFAULT_STALE_AFTER, Policy
from mltidy.linking import link
from mltidy.linking.link import LinkStatus
from mltidy.linking.urls import LinkBases
from mltidy.model import Selection, StoreKind, StoreSpec, utc_now
from mltidy.notify.delivery import Target, deliver, resolve_targets, validate
from mltidy.notify.events import Message
from mltidy.notify.messages import compose
from mltidy.scan import collect, iter_scan
from mltidy.supervision.cleanup import clean_up
from mltidy.supervision.report import job_event
from mltidy.text import safe
from mltidy.watch.poll import WatchOptions, poll
from mltidy.watch.state import WatchState


def demo_command(
    path: Annotated[
        Path,
        typer.Option(
            "--path",
            help="Sandbox folder to create. An earlier demo's sandbox is replaced; "
            "anything else is refused.",
        ),
    ] = Path("mltidy-demo"),
    notify: NotifyOption = None,
) -> None:
    """Build a sandbox with real training jobs, kill some, and tidy up what they leave.

    The jobs train MLflow runs inside Optuna trials; some are killed with SIGKILL and SIGTERM,
    one finishes, one keeps training. Then scan, close (dry run, then applied), supervise a job
    that gets killed, watch, declutter and link what they left behind. Shows the notifications
    it would send, and sends them to --notify targets."""
    from mltidy.demo import sandbox as demo

    out = stdout_console(markup=True)
    with translated_errors():
        targets = resolve_targets(notify, Config())
        validate(targets)
        out.print(
            f"[bold]1. Building a sandbox in {escape(safe(path))}/[/] (MLflow sqlite store, "
            "Optuna storage)"
        )
        box = demo.prepare(path)
        out.print(
            "[bold]2. Running tutorial-style training jobs[/] (one Optuna trial each, with an "
            "MLflow run inside; mltidy's MLflow plugin tags each run with its host, boot and pid)"
        )
        _, live = demo.run_jobs(box, lambda line: out.print(f"   {line}", markup=False))
        try:
            out.print("[bold]3. mltidy scan[/] (while the live job keeps training)")
            specs = [
                store_spec(StoreKind.MLFLOW, box.mlflow_uri, "demo"),
                store_spec(StoreKind.OPTUNA, box.optuna_url, "demo"),
            ]
            with StoreSession(specs) as session:
                result = collect(
                    iter_scan(session, Selection(), Policy(now=utc_now()), LocalProbe())
                )
        finally:
            demo.stop_job(live)
        print_records(result.records, Screen.of(out), show_all=True)
        for status in result.stores:
            state = "ok" if status.ok else escape(safe(status.error or ""))
            out.print(f"   scanned {status.kind.value} store {escape(safe(status.uri))}: {state}")
        out.print(
            "   (the live job was then stopped with Ctrl-C; Optuna and MLflow closed its trial "
            "and run themselves)"
        )
        out.print("[bold]4. mltidy close[/] (dry run: the plan, nothing changes)")
        policy = Policy(now=utc_now())
        with StoreSession(specs) as session:
            options = close.CloseOptions()
            planned = close.plan(session, Selection(), policy, LocalProbe(), options)
            _changes(out, planned)
            out.print(
                "[bold]5. mltidy close --yes[/] (compare-and-set, true end times, audit tags)"
            )
            done = close.annotate(session, close.apply(session, planned, options))
        closed = [c for c in done.changes if c.outcome is close.Outcome.CLOSED]
        out.print(
            f"   closed {len(closed)} records ({len(done.failed)} failed, {len(done.skipped)} "
            "left alone): runs KILLED and trials FAIL, each ending at its last activity, with "
            "mltidy.closed_* tags saying who, when and why"
        )
        time.sleep(1.1)
        _supervised(box, specs, targets)
        _watch(box, specs, targets)
        out.print("[bold]8. mltidy declutter --older-than 1s --yes[/] (empty closed runs only)")
        with StoreSession(specs) as session:
            planned_deletes = declutter.plan(
                session, Selection(), now=utc_now(), older_than=timedelta(seconds=1)
            )
            report = declutter.apply(session, planned_deletes)
        out.print(runs_table(report))
        out.print(studies_table(report))
        gone = [d for d in report.runs if d.action is RunAction.DELETED]
        out.print("[bold]9. mltidy link[/] (trials <-> runs, both ways)")
        with StoreSession(specs) as session:
            linked = link.apply(session, link.plan(session, Selection(), LinkBases()))
        out.print(links_table(linked))
        example = next((c for c in linked.changes if c.status is LinkStatus.LINKED), None)
        if example is not None:
            trial = example.pair.trial
            out.print(
                f"   trial {trial.number} in optuna-dashboard: {escape(example.dashboard_url)}\n"
                f"   its MLflow run:                {escape(example.run_url)}",
                soft_wrap=True,
            )
        out.print("[bold]What next[/]")
        out.print(
            f"   cd {escape(safe(path))} && mltidy scan     # finds both stores by their schema; "
            "nothing left\n"
            f"   mlflow ui --backend-store-uri {escape(box.mlflow_uri)}\n"
            "       # the closed runs show as KILLED, with their true durations and mltidy.* tags\n"
            f"   optuna-dashboard {escape(box.optuna_url)}\n"
            "       # each trial's note links to its MLflow run",
            soft_wrap=True,
        )
        if gone:
            out.print(f"   {restore_command(gone[0])}  # undo the declutter", soft_wrap=True)
        out.print(
            "   mltidy run -- python train.py      # in job scripts: closes and notifies at once\n"
            "   mltidy watch --notify ntfy://TOPIC     # or --once from cron (see docs/watch.md)",
            soft_wrap=True,
        )


def _changes(out: Console, report: close.CloseReport) -> None:
    screen = Screen.of(out)
    print_plain_table(screen, CHANGE_COLUMNS, change_rows(report.changes), changes_title(report))


def _supervised(box: Sandbox, specs: list[StoreSpec], targets: list[Target]) -> None:
    """Step 6: a job under ``mltidy run``, killed with SIGKILL; closed the moment it dies."""
    from mltidy.demo import sandbox as demo

    out = stdout_console(markup=True)
    out.print(
        "[bold]6. mltidy run -- python worker.py[/] (a supervised job, killed with SIGKILL while "
        "it trains)"
    )
    supervision = demo.supervised_job(box)
    exit_ = supervision.exit
    out.print(f"   the supervisor saw process {exit_.pid} die: {escape(exit_.describe())}")
    if exit_.oom:
        out.print(f"   memory: {escape(exit_.oom)}")
    with StoreSession(specs) as session:
        cleanup = clean_up(supervision, session, Selection())
    _changes(out, cleanup.report)
    _show(compose([job_event(supervision, cleanup, LinkBases())]), targets)


def _watch(box: Sandbox, specs: list[StoreSpec], targets: list[Target]) -> None:
    """Step 7: one ``watch`` poll over everything that happened, as one grouped message."""
    out = stdout_console(markup=True)
    out.print(
        "[bold]7. mltidy watch --once --since 1h --idle-after 1s[/] (what happened, as events; "
        "each is sent once)"
    )
    time.sleep(1.1)
    with WatchState(box.path / ".mltidy-watch.db") as state:
        result = poll(
            specs,
            Selection(),
            state,
            [],
            WatchOptions(
                stale_after=DEFAULT_STALE_AFTER,
                idle_after=timedelta(seconds=1),
                lookback=timedelta(hours=1),
            ),
        )
    for event in result.events:
        out.print(f"   [bold]{event.kind.value}[/]: {escape(safe(event.headline))}", soft_wrap=True)
    if result.events:
        _show(compose(list(result.events)), targets)


def _show(message: Message, targets: list[Target]) -> None:
    """Print a message as it would be sent, and send it to the targets."""
    out = stdout_console(markup=True)
    to = ", ".join(t.shown for t in targets) or "nobody (no --notify given)"
    out.print(f"   [dim]message for {to}:[/]")
    out.print(Text(f"   {safe(message.title)}", style="bold"), soft_wrap=True)
    for line in message.body.rstrip().splitlines():
        out.print(f"   | {line}", soft_wrap=True, markup=False, highlight=False)
    for delivery in deliver(message, targets):
        state = "sent" if delivery.ok else f"[red]not sent[/]: {escape(safe(delivery.error or ''))}"
        out.print(f"   {delivery.target}: {state}")
