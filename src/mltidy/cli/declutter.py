"""``mltidy declutter``: soft-delete the empty runs mltidy closed; report failed trials."""

from __future__ import annotations

import json
import sys
from typing import Annotated

import typer
from typing_extensions import assert_never

from mltidy import declutter
from mltidy.cli.errors import report_store_failures, translated_errors
from mltidy.cli.options import (
    ExperimentOption,
    FormatOption,
    MlflowOption,
    OptunaOption,
    StudyOption,
    YesOption,
)
from mltidy.cli.render import OutputFormat, stderr_console, stdout_console
from mltidy.cli.render_changes import declutter_json, runs_table, studies_table
from mltidy.cli.selection import resolve
from mltidy.declutter import DeclutterReport, RunAction, restore_command
from mltidy.durations import parse_duration
from mltidy.errors import ExitCode
from mltidy.model import utc_now


def declutter_command(
    mlflow: MlflowOption = None,
    optuna: OptunaOption = None,
    experiment: ExperimentOption = None,
    study: StudyOption = None,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Only runs closed longer ago than this (90s, 30m, 2h, 7d).",
        ),
    ] = "7d",
    output: FormatOption = OutputFormat.TABLE,
    yes: YesOption = False,
) -> None:
    """Soft-delete the runs mltidy closed that hold nothing (no metrics, params or artifacts).

    Deleted runs go to MLflow's 'deleted' lifecycle stage; `mlflow runs restore --run-id ID`
    brings them back. For Optuna studies, reports failed and zombie trials and the compute they
    cost (Optuna cannot delete trials; nothing is deleted). Dry run unless --yes.

    Exit codes: 0 ok, 2 usage error, 3 a store could not be read, 4 a deletion failed.
    """
    with translated_errors(json_mode=output.is_machine):
        limit = parse_duration(older_than)
        resolved = resolve(
            mlflow=mlflow, optuna=optuna, experiments=experiment, studies=study, stale_after=None
        )
        with resolved.session() as session:
            report = declutter.plan(session, resolved.selection, now=utc_now(), older_than=limit)
            if yes:
                report = declutter.apply(session, report)
        _render(report, output)
    if any(not s.ok for s in report.stores):
        raise typer.Exit(int(ExitCode.STORE))
    if report.failed:
        raise typer.Exit(int(ExitCode.CHANGE))


def _render(report: DeclutterReport, output: OutputFormat) -> None:
    report_store_failures(report.stores)
    if output is OutputFormat.JSON or output is OutputFormat.JSONL:
        payload = declutter_json(report)
        if output is OutputFormat.JSON:
            sys.stdout.write(json.dumps(payload, indent=2) + "\n")
        else:
            for run in payload["runs"]:
                sys.stdout.write(json.dumps({"run": run}) + "\n")
            for study in payload["studies"]:
                sys.stdout.write(json.dumps({"study": study}) + "\n")
        return
    if output is OutputFormat.TABLE or output is OutputFormat.MARKDOWN:
        _human(report)
        return
    assert_never(output)


def _human(report: DeclutterReport) -> None:
    out, err = stdout_console(), stderr_console()
    if report.runs:
        out.print(runs_table(report))
    if report.studies:
        out.print(studies_table(report))
    gone = [d for d in report.runs if d.action in (RunAction.DELETE, RunAction.DELETED)]
    if not gone:
        err.print("No empty closed runs to delete.")
        return
    verb = "would be soft-deleted (run again with --yes)" if report.dry_run else "soft-deleted"
    err.print(f"{len(gone)} runs {verb}. To restore one:")
    err.print(f"  {restore_command(gone[0])}", soft_wrap=True)
