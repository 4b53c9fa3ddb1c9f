"""``mltidy declutter``: soft-delete the empty runs mltidy closed; report failed trials."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from typing_extensions import assert_never

from mltidy import declutter, plans
from mltidy.backends.session import StoreSession
from mltidy.cli.errors import outcome_code, report_store_failures, translated_errors
from mltidy.cli.options import FormatOption, PlanOption, YesOption
from mltidy.cli.render import (
    OutputFormat,
    print_missing,
    print_tables,
    stderr_console,
    write_json_document,
    write_json_lines,
)
from mltidy.cli.render_changes import declutter_json, runs_table, studies_table
from mltidy.cli.selection import SELECTION, STORES, Given, with_given
from mltidy.declutter import DeclutterReport, RunAction, restore_command
from mltidy.durations import parse_duration
from mltidy.model import utc_now

#: How long ago mltidy must have closed a run before declutter deletes it, by default.
DEFAULT_OLDER_THAN = timedelta(days=7)
#: The selection options but --older-than, which declutter declares as its own (its age is
#: the time since mltidy closed a run).
SELECTION_BUT_AGE = tuple(name for name in SELECTION if name != "older_than")


@with_given(*STORES, *SELECTION_BUT_AGE)
def declutter_command(
    given: Given,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Only runs closed longer ago than this (90s, 30m, 2h, 7d): for declutter, a "
            "run's age is the time since mltidy closed it.",
        ),
    ] = "7d",
    output: FormatOption = OutputFormat.TABLE,
    plan_file: PlanOption = None,
    yes: YesOption = False,
) -> None:
    """Soft-delete the runs mltidy closed that hold nothing (no metrics, params or artifacts).

    Deleted runs go to MLflow's 'deleted' lifecycle stage; `mlflow runs restore --run-id ID`
    brings them back. For Optuna studies, reports failed and zombie trials and the compute they
    cost (Optuna cannot delete trials; nothing is deleted). Dry run unless --yes; to delete
    exactly what you reviewed: mltidy declutter -f json > plan.json, then
    mltidy declutter --plan plan.json --yes.

    Exit codes: 0 ok, 2 usage error, 3 a store could not be read, 4 a deletion failed.
    """
    with translated_errors(json_mode=output.is_machine):
        limit = parse_duration(older_than)
        if plan_file is not None:
            given.refuse_with_plan(("--older-than", limit != DEFAULT_OLDER_THAN))
            planned = plans.load(plan_file, "declutter")
            stores = given.stores()
            with StoreSession(plans.session_specs(planned, stores.specs)) as session:
                report = plans.declutter_report(planned, session, utc_now())
                if yes:
                    report = declutter.apply(session, report)
            _render(report, output)
            raise typer.Exit(outcome_code(report.stores, report.failed))
        resolved = given.resolve()
        with resolved.session() as session:
            report = declutter.plan(session, resolved.selection, now=utc_now(), older_than=limit)
            if yes:
                report = declutter.apply(session, report)
        _render(report, output)
    raise typer.Exit(outcome_code(report.stores, report.failed))


def _render(report: DeclutterReport, output: OutputFormat) -> None:
    report_store_failures(report.stores)
    if output is OutputFormat.JSON:
        write_json_document(declutter_json(report))
        return
    if output is OutputFormat.JSONL:
        payload = declutter_json(report)
        write_json_lines(
            [
                *({"run": run} for run in payload["runs"]),
                *({"study": study} for study in payload["studies"]),
            ]
        )
        return
    if output is OutputFormat.TABLE or output is OutputFormat.MARKDOWN:
        _human(report)
        return
    assert_never(output)


def _human(report: DeclutterReport) -> None:
    print_tables(
        runs_table(report) if report.runs else None,
        studies_table(report) if report.studies else None,
    )
    print_missing(report.missing, "closed run or study")
    err = stderr_console()
    gone = [d for d in report.runs if d.action in (RunAction.DELETE, RunAction.DELETED)]
    if not gone:
        err.print("No empty closed runs to delete.")
        return
    verb = "would be soft-deleted (run again with --yes)" if report.dry_run else "soft-deleted"
    err.print(f"{len(gone)} runs {verb}. To restore one:")
    err.print(f"  {restore_command(gone[0])}", soft_wrap=True)
