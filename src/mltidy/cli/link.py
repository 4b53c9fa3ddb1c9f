"""``mltidy link``: link Optuna trials and MLflow runs both ways."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text
from typing_extensions import assert_never

from mltidy import plans
from mltidy.backends.session import StoreSession
from mltidy.cli.errors import (
    outcome_code,
    print_error,
    report_store_failures,
    translated_errors,
)
from mltidy.cli.options import DashboardUrlOption, FormatOption, MlflowUiOption, PlanOption
from mltidy.cli.render import (
    JSON_VERSION,
    OutputFormat,
    add_column,
    cell,
    print_missing,
    print_tables,
    stderr_console,
    write_json_document,
    write_json_lines,
)
from mltidy.cli.selection import SELECTION, STORES, Given, with_given
from mltidy.linking import link
from mltidy.linking.link import LinkChange, LinkReport, LinkStatus
from mltidy.model import Selection
from mltidy.text import md_code, md_escape, md_link, safe

STATUS_STYLE = {
    LinkStatus.PLANNED: "cyan",
    LinkStatus.LINKED: "green",
    LinkStatus.UNCHANGED: "dim",
    LinkStatus.FAILED: "bold red",
}


@with_given(*STORES, *SELECTION)
def link_command(
    given: Given,
    mlflow_ui: MlflowUiOption = None,
    dashboard_url: DashboardUrlOption = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be written; change nothing.")
    ] = False,
    output: FormatOption = OutputFormat.TABLE,
    plan_file: PlanOption = None,
) -> None:
    """Link Optuna trials and MLflow runs both ways, so a click in optuna-dashboard opens the run
    and the run points back at its trial.

    Finds pairs from the trial attribute mlflow_run_id (user or system), mltidy's MLflow plugin
    tags, earlier links, and optuna-integration's MLflowCallback runs; reports what it cannot
    match with confidence. Idempotent: a second run changes nothing. To write exactly what you
    reviewed: mltidy link --dry-run -f json > plan.json, then mltidy link --plan plan.json.

    Exit codes: 0 ok, 2 usage error, 3 a store could not be read, 4 a write failed.
    """
    with translated_errors(json_mode=output.is_machine):
        if plan_file is not None:
            report = _from_plan(plan_file, given, mlflow_ui, dashboard_url, dry_run)
            _render(report, output)
            raise typer.Exit(outcome_code(report.stores, report.failed))
        resolved = given.resolve(mlflow_ui=mlflow_ui, dashboard_url=dashboard_url)
        with resolved.session() as session:
            report = link.plan(session, resolved.selection, resolved.bases)
            if not dry_run:
                report = link.apply(session, report)
        _render(report, output)
    raise typer.Exit(outcome_code(report.stores, report.failed))


def _from_plan(
    path: Path,
    given: Given,
    mlflow_ui: str | None,
    dashboard_url: str | None,
    dry_run: bool,
) -> LinkReport:
    """The pairs of a link plan, each as it stands now, written unless ``dry_run``."""
    given.refuse_with_plan()
    planned = plans.load(path, "link")
    wanted = plans.link_plan(planned)
    resolved = given.stores(mlflow_ui=mlflow_ui, dashboard_url=dashboard_url)
    with StoreSession(plans.session_specs(planned, resolved.specs)) as session:
        if not wanted.pairs:
            return LinkReport(session.statuses(), (), (), (), dry_run=True)
        report = link.plan(session, Selection(studies=wanted.studies), resolved.bases)
        report = plans.keep_planned(report, wanted)
        if not dry_run:
            report = link.apply(session, report)
    return report


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
    """The JSON object ``link --format json`` prints; a dry run's is a plan file."""
    return {
        "version": JSON_VERSION,
        "command": "link",
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
        "without_run": [
            {"study": t.study, "trial_number": t.number, "trial_id": t.trial_id, "state": t.state}
            for t in report.without_run
        ],
        "missing": list(report.missing),
    }


def _render(report: LinkReport, output: OutputFormat) -> None:
    report_store_failures(report.stores)
    for failed in report.failed:
        print_error(
            f"could not link {failed.pair.trial.study} #{failed.pair.trial.number}: {failed.detail}"
        )
    if output is OutputFormat.JSON:
        write_json_document(report_dict(report))
    elif output is OutputFormat.JSONL:
        write_json_lines(change_dict(change) for change in report.changes)
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


def without_run_table(report: LinkReport) -> Table:
    """The trials no run was found for, per study (numbers as tables show them)."""
    table = Table(
        title="Trials without a run", title_justify="left", header_style="bold", pad_edge=False
    )
    table.add_column("study", no_wrap=True)
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("trials", overflow="fold", ratio=1)
    by_study: dict[str, list[str]] = {}
    for trial in sorted(report.without_run, key=lambda t: (t.study, t.number)):
        by_study.setdefault(trial.study, []).append(f"#{trial.number} {trial.state.lower()}")
    for study, trials in by_study.items():
        table.add_row(study, str(len(trials)), ", ".join(trials))
    return table


def _human(report: LinkReport) -> None:
    print_tables(
        links_table(report) if report.changes else None,
        without_run_table(report) if report.without_run else None,
    )
    err = stderr_console()
    for u in report.unmatched:
        err.print(
            f"  not linked: {safe(u.trial.study)} #{u.trial.number}: {safe(u.why)}", soft_wrap=True
        )
    print_missing(report.missing, "trial or run")
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
