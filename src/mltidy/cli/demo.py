"""``mltidy demo``: a sandbox with real killed jobs, and the hygiene loop run on it."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer

from mltidy import close
from mltidy.backends.interface import Selection
from mltidy.cli.errors import translated_errors
from mltidy.cli.link import links_table
from mltidy.cli.render import records_table, stdout_console
from mltidy.cli.render_changes import changes_table, runs_table, studies_table
from mltidy.config import StoreSpec
from mltidy.declutter import RunAction, declutter, restore_command
from mltidy.judge import Policy
from mltidy.link import LinkStatus, link
from mltidy.links import LinkBases
from mltidy.model import StoreKind, utc_now
from mltidy.probe import LocalProbe
from mltidy.scan import scan


def demo_command(
    path: Annotated[
        Path,
        typer.Option(
            "--path",
            help="Sandbox folder to create. An earlier demo's sandbox is replaced; "
            "anything else is refused.",
        ),
    ] = Path("mltidy-demo"),
) -> None:
    """Build a sandbox with real training jobs (MLflow runs inside Optuna trials), kill some with
    SIGKILL and SIGTERM, let one finish, keep one training; then scan, close (dry run, then
    applied), declutter and link what they left behind."""
    from mltidy.demo import sandbox as demo

    out = stdout_console()
    with translated_errors():
        out.print(
            f"[bold]1. Building a sandbox in {path}/[/] (MLflow sqlite store, Optuna storage)"
        )
        box = demo.prepare(path)
        out.print(
            "[bold]2. Running tutorial-style training jobs[/] (one Optuna trial each, with an "
            "MLflow run inside; mltidy's MLflow plugin tags each run with its host, boot and pid)"
        )
        _, live = demo.run_jobs(box, lambda line: out.print(f"   {line}"))
        try:
            out.print("[bold]3. mltidy scan[/] (while the live job keeps training)")
            specs = [
                StoreSpec(StoreKind.MLFLOW, box.mlflow_uri, "demo"),
                StoreSpec(StoreKind.OPTUNA, box.optuna_url, "demo"),
            ]
            result = scan(specs, Selection(), Policy(now=utc_now()), LocalProbe())
        finally:
            demo.stop_job(live)
        out.print(records_table(result.records))
        for status in result.stores:
            state = "ok" if status.ok else status.error
            out.print(f"   scanned {status.kind.value} store {status.uri}: {state}")
        out.print(
            "   (the live job was then stopped with Ctrl-C; Optuna and MLflow closed its trial "
            "and run themselves)"
        )
        out.print("[bold]4. mltidy close[/] (dry run: the plan, nothing changes)")
        policy = Policy(now=utc_now())
        planned = close.plan(specs, Selection(), policy, LocalProbe(), close.CloseOptions())
        out.print(changes_table(planned))
        out.print("[bold]5. mltidy close --yes[/] (compare-and-set, true end times, audit tags)")
        done = close.apply(planned, specs, close.CloseOptions())
        closed = [c for c in done.changes if c.outcome is close.Outcome.CLOSED]
        out.print(
            f"   closed {len(closed)} records ({len(done.failed)} failed, {len(done.skipped)} "
            "left alone): runs KILLED and trials FAIL, each ending at its last activity, with "
            "mltidy.closed_* tags saying who, when and why"
        )
        time.sleep(1.1)
        out.print("[bold]6. mltidy declutter --older-than 1s --yes[/] (empty closed runs only)")
        report = declutter(
            specs, Selection(), now=utc_now(), older_than=timedelta(seconds=1), apply=True
        )
        out.print(runs_table(report))
        out.print(studies_table(report))
        gone = [d for d in report.runs if d.action is RunAction.DELETED]
        out.print("[bold]7. mltidy link[/] (trials <-> runs, both ways)")
        linked = link(specs, Selection(), LinkBases())
        out.print(links_table(linked))
        example = next((c for c in linked.changes if c.status is LinkStatus.LINKED), None)
        if example is not None:
            trial = example.pair.trial
            out.print(
                f"   trial {trial.number} in optuna-dashboard: {example.dashboard_url}\n"
                f"   its MLflow run:                {example.run_url}",
                soft_wrap=True,
            )
        out.print("[bold]What next[/]")
        out.print(
            f"   cd {path} && mltidy scan     # finds both stores by their schema; nothing left\n"
            f"   mlflow ui --backend-store-uri {box.mlflow_uri}\n"
            "       # the closed runs show as KILLED, with their true durations and mltidy.* tags\n"
            f"   optuna-dashboard {box.optuna_url}\n"
            "       # each trial's note links to its MLflow run",
            soft_wrap=True,
        )
        if gone:
            out.print(f"   {restore_command(gone[0])}  # undo the declutter", soft_wrap=True)
