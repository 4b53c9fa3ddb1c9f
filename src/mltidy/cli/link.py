"""``mltidy link``: link Optuna trials and MLflow runs both ways."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text
from typing_extensions import assert_never

from mltidy.cli.errors import print_error, report_store_failures, translated_errors
from mltidy.cli.options import (
    DashboardUrlOption,
    ExperimentOption,
    FormatOption,
    MlflowOption,
    MlflowUiOption,
    OptunaOption,
    StudyOption,
)
from mltidy.cli.render import OutputFormat, add_column, cell, stderr_console, stdout_console
from mltidy.cli.selection import resolve
from mltidy.errors import ExitCode
from mltidy.linking import link
from mltidy.linking.link import LinkChange, LinkReport, LinkStatus
from mltidy.text import md_code, md_escape, md_link, safe

STATUS_STYLE = {
    LinkStatus.PLANNED: "cyan",
    LinkStatus.LINKED: "green",
    LinkStatus.UNCHANGED: "dim",
    LinkStatus.FAILED: "bold red",
}


def link_command(
    mlflow: MlflowOption = None,
    optuna: OptunaOption = None,
    experiment: ExperimentOption = None,
    study: StudyOption = None,
    mlflow_ui: MlflowUiOption = None,
    dashboard_url: DashboardUrlOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be written; change nothing.")
    ] = False,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Link Optuna trials and MLflow runs both ways, so a click in optuna-dashboard opens the run
    and the run points back at its trial.

    Finds pairs from the trial attribute mlflow_run_id (user or system), mltidy's MLflow plugin
    tags, earlier links, and optuna-integration's MLflowCallback runs; reports what it cannot
    match with confidence. Idempotent: a second run changes nothing.

    Exit codes: 0 ok, 2 usage error, 3 a store could not be read, 4 a write failed.
    """
    with translated_errors(json_mode=output.is_machine):
        resolved = resolve(
            mlflow=mlflow,
            optuna=optuna,
            experiments=experiment,
            studies=study,
            stale_after=None,
            mlflow_ui=mlflow_ui,
            dashboard_url=dashboard_url,
        )
        with resolved.session() as session:
            report = link.plan(session, resolved.selection, resolved.bases)
            if not dry_run:
                report = link.apply(session, report)
        _render(report, output)
    if any(not s.ok for s in report.stores):
        raise typer.Exit(int(ExitCode.STORE))
    if report.failed:
        raise typer.Exit(int(ExitCode.CHANGE))


def change_dict(change: LinkChange) -> dict[str, Any]:
    """One pair in JSON."""
    trial, run = change.pair.trial, change.pair.run
    return {
        "study": trial.study,
        "trial_number": trial.number,
        "trial_id": trial.trial_id,
        "optuna_store": trial.store,
        "run_id": run.run_id,
        "experiment": run.experiment,
        "mlflow_store": run.store,
        "how": change.pair.how,
        "mlflow_run_url": change.run_url,
        "dashboard_url": change.dashboard_url,
        "trial_writes": list(change.trial_writes),
        "run_writes": list(change.run_writes),
        "status": change.status.value,
        "detail": change.detail,
    }


def report_dict(report: LinkReport) -> dict[str, Any]:
    """The JSON object ``link --format json`` prints."""
    return {
        "stores": [
            {"uri": s.uri, "kind": s.kind.value, "ok": s.ok, "error": s.error}
            for s in report.stores
        ],
        "dry_run": report.dry_run,
        "pairs": [change_dict(c) for c in report.changes],
        "unmatched": [
            {"study": u.trial.study, "trial_number": u.trial.number, "why": u.why}
            for u in report.unmatched
        ],
        "trials_without_run": report.trials_without_run,
    }


def _render(report: LinkReport, output: OutputFormat) -> None:
    report_store_failures(report.stores)
    for change in report.failed:
        trial = change.pair.trial
        print_error(f"could not link {trial.study} #{trial.number}: {change.detail}")
    if output is OutputFormat.JSON:
        sys.stdout.write(json.dumps(report_dict(report), indent=2) + "\n")
    elif output is OutputFormat.JSONL:
        for change in report.changes:
            sys.stdout.write(json.dumps(change_dict(change)) + "\n")
    elif output is OutputFormat.MARKDOWN:
        lines = [
            "## mltidy link",
            "",
            "| study | trial | run | how | status |",
            "| --- | --- | --- | --- | --- |",
        ]
        for c in report.changes:
            t, r = c.pair.trial, c.pair.run
            lines.append(
                f"| {md_code(t.study, table=True)} | {md_link(f'#{t.number}', c.dashboard_url)} | "
                f"{md_link(md_code(r.name, table=True), c.run_url)} | {md_escape(c.pair.how)} | "
                f"{c.status.value} |"
            )
        sys.stdout.write("\n".join(lines) + "\n")
    elif output is OutputFormat.TABLE:
        _human(report)
    else:
        assert_never(output)


def links_table(report: LinkReport) -> Table:
    """The pairs and what was written on them."""
    title = "Links (dry run: nothing written)" if report.dry_run else "Links"
    table = Table(title=title, title_justify="left", header_style="bold", pad_edge=False)
    for name in ("status", "study", "trial", "run", "found by"):
        add_column(table, name)
    table.add_column("written", overflow="fold", ratio=1)
    for c in report.changes:
        parts = []
        if c.trial_writes:
            parts.append("trial: " + ", ".join(c.trial_writes))
        if c.run_writes:
            described = "description" if "mlflow.note.content" in c.run_writes else ""
            tags = [w for w in c.run_writes if w != "mlflow.note.content"]
            what = [f"{len(tags)} tags"] if tags else []
            parts.append("run: " + ", ".join([*what, *([described] if described else [])]))
        written = "; ".join(parts) or "-"
        if c.detail:
            written += f" ({c.detail})"
        table.add_row(
            Text(c.status.value, style=STATUS_STYLE[c.status]),
            cell(c.pair.trial.study),
            f"#{c.pair.trial.number}",
            cell(f"{c.pair.run.name} ({c.pair.run.run_id[:8]})"),
            cell(c.pair.how),
            cell(written),
        )
    return table


def _human(report: LinkReport) -> None:
    out, err = stdout_console(), stderr_console()
    if report.changes:
        out.print(links_table(report))
    for u in report.unmatched:
        err.print(
            f"  not linked: {safe(u.trial.study)} #{u.trial.number}: {safe(u.why)}", soft_wrap=True
        )
    counts = {status: 0 for status in LinkStatus}
    for c in report.changes:
        counts[c.status] += 1
    parts = [f"{n} {status.value}" for status, n in counts.items() if n]
    summary = ", ".join(parts) if parts else "no pairs found"
    err.print(
        f"{summary}; {len(report.unmatched)} unclear; "
        f"{report.trials_without_run} trials without a run.",
        soft_wrap=True,
    )
    example = next((c for c in report.changes if c.status is not LinkStatus.FAILED), None)
    if example is not None:
        err.print(
            f"  e.g. {safe(example.dashboard_url)}\n    <-> {safe(example.run_url)}",
            soft_wrap=True,
        )
