"""``mltidy declutter``: soft-delete the empty runs mltidy closed; report failed trials."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from typing import Annotated

import typer
from typing_extensions import assert_never

from mltidy import declutter, plans
from mltidy.backends.session import StoreSession
from mltidy.cli.errors import report_store_failures, translated_errors
from mltidy.cli.options import (
    ExperimentOption,
    FormatOption,
    HostOption,
    MlflowOption,
    OptunaOption,
    PlanOption,
    RunOption,
    SilentForOption,
    StudyOption,
    TrialOption,
    UserOption,
    YesOption,
)
from mltidy.cli.render import OutputFormat, stderr_console, stdout_console
from mltidy.cli.render_changes import declutter_json, runs_table, studies_table
from mltidy.cli.selection import resolve
from mltidy.declutter import DeclutterReport, RunAction, restore_command
from mltidy.durations import parse_duration
from mltidy.errors import ExitCode, UsageError
from mltidy.model import utc_now

#: How long ago mltidy must have closed a run before declutter deletes it, by default.
DEFAULT_OLDER_THAN = timedelta(days=7)


def declutter_command(
    mlflow: MlflowOption = None,
    optuna: OptunaOption = None,
    experiment: ExperimentOption = None,
    study: StudyOption = None,
    run: RunOption = None,
    trial: TrialOption = None,
    older_than: Annotated[
        str,
        typer.Option(
            "--older-than",
            metavar="DURATION",
            help="Only runs closed longer ago than this (90s, 30m, 2h, 7d): for declutter, a "
            "run's age is the time since mltidy closed it.",
        ),
    ] = "7d",
    silent_for: SilentForOption = None,
    user: UserOption = None,
    host: HostOption = None,
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
            given = plans.given_options(
                [
                    ("-e/--experiment", bool(experiment)),
                    ("-s/--study", bool(study)),
                    ("--run", bool(run)),
                    ("--trial", bool(trial)),
                    ("--older-than", limit != DEFAULT_OLDER_THAN),
                    ("--silent-for", silent_for is not None),
                    ("--user", bool(user)),
                    ("--host", bool(host)),
                ]
            )
            if given:
                raise UsageError(
                    f"--plan applies the plan as it was reviewed; it takes no {', '.join(given)}",
                    hint="make a new plan with those options instead",
                )
            planned = plans.load(plan_file, "declutter")
            stores = resolve(mlflow=mlflow, optuna=optuna, experiments=None, studies=None)
            with StoreSession(plans.session_specs(planned, stores.specs)) as session:
                report = plans.declutter_report(planned, session, utc_now())
                if yes:
                    report = declutter.apply(session, report)
            _render(report, output)
            raise typer.Exit(_exit_code(report))
        resolved = resolve(
            mlflow=mlflow,
            optuna=optuna,
            experiments=experiment,
            studies=study,
            runs=run,
            trials=trial,
            silent_for=silent_for,
            users=user,
            hosts=host,
        )
        with resolved.session() as session:
            report = declutter.plan(session, resolved.selection, now=utc_now(), older_than=limit)
            if yes:
                report = declutter.apply(session, report)
        _render(report, output)
    raise typer.Exit(_exit_code(report))


def _exit_code(report: DeclutterReport) -> int:
    if any(not s.ok for s in report.stores):
        return int(ExitCode.STORE)
    if report.failed:
        return int(ExitCode.CHANGE)
    return int(ExitCode.OK)


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
    for given in report.missing:
        err.print(f"  {given}: no closed run or study of the selection has this id")
    gone = [d for d in report.runs if d.action in (RunAction.DELETE, RunAction.DELETED)]
    if not gone:
        err.print("No empty closed runs to delete.")
        return
    verb = "would be soft-deleted (run again with --yes)" if report.dry_run else "soft-deleted"
    err.print(f"{len(gone)} runs {verb}. To restore one:")
    err.print(f"  {restore_command(gone[0])}", soft_wrap=True)
