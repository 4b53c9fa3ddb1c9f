"""``mltidy close``: end dangling runs and trials, with the true end time and an audit trail."""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from typing_extensions import assert_never

from mltidy import plans
from mltidy.backends.session import StoreSession
from mltidy.cli.errors import report_store_failure, translated_errors
from mltidy.cli.options import (
    ExperimentOption,
    FormatOption,
    HostOption,
    MlflowOption,
    OlderThanOption,
    OptunaOption,
    OptunaUtcOffsetOption,
    PlanOption,
    RunOption,
    SilentForOption,
    StaleAfterOption,
    StudyOption,
    ThisHostOption,
    TrialOption,
    UserOption,
    YesOption,
)
from mltidy.cli.render import OutputFormat, stderr_console, stdout_console
from mltidy.cli.render_changes import close_markdown, write_close_json, write_close_jsonl
from mltidy.cli.selection import resolve
from mltidy.cli.tables import AllOption, Screen, failure_lines, grouped_hint, print_close_report
from mltidy.close import CloseOptions, CloseReport, Outcome, annotate, apply, plan
from mltidy.errors import ExitCode, UsageError
from mltidy.evidence.local import LocalProbe

#: Failed records listed one by one on stderr; past this, one line per store and cause.
FAILURE_LINES = 20


class EndState(str, Enum):
    """The state a closed MLflow run gets."""

    KILLED = "killed"
    FAILED = "failed"


def close_command(
    mlflow: MlflowOption = None,
    optuna: OptunaOption = None,
    optuna_utc_offset: OptunaUtcOffsetOption = None,
    experiment: ExperimentOption = None,
    study: StudyOption = None,
    run: RunOption = None,
    trial: TrialOption = None,
    older_than: OlderThanOption = None,
    silent_for: SilentForOption = None,
    user: UserOption = None,
    host: HostOption = None,
    stale_after: StaleAfterOption = None,
    output: FormatOption = OutputFormat.TABLE,
    this_host: ThisHostOption = False,
    include_stale: Annotated[
        bool, typer.Option("--include-stale", help="Also close stale records (default: dead only).")
    ] = False,
    rhythm: Annotated[
        bool,
        typer.Option(
            "--rhythm",
            help="With --include-stale, also close records stale by their own rhythm: silent "
            "for many times their longest pause, though not yet for --stale-after.",
        ),
    ] = False,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Close the records named by --run/--trial whatever their verdict, except alive.",
        ),
    ] = False,
    end_state: Annotated[
        EndState,
        typer.Option("--as", help="State of closed MLflow runs (trials always become FAIL)."),
    ] = EndState.KILLED,
    retry: Annotated[
        bool,
        typer.Option("--retry", help="Enqueue a WAITING copy of each closed trial (same params)."),
    ] = False,
    max_retry: Annotated[
        int | None,
        typer.Option("--max-retry", metavar="N", min=0, help="Retry a trial at most N times."),
    ] = None,
    plan_file: PlanOption = None,
    yes: YesOption = False,
    show_all: AllOption = False,
) -> None:
    """Close dead runs and trials: MLflow runs become KILLED, Optuna trials FAIL.

    Dry run by default: prints the plan and changes nothing; --yes applies. A record is changed
    only if it is still RUNNING at the moment of writing; its end time is its last activity, and
    mltidy.closed_* tags (system attributes on trials) record what was done. Alive records are
    never touched, not even with --force; a record named with --run/--trial and --force is
    closed whatever else its verdict, and its audit tags say it was forced.

    To apply exactly what you reviewed: mltidy close -f json > plan.json, then
    mltidy close --plan plan.json --yes.

    Exit codes: 0 ok, 2 usage error, 3 a store could not be read, 4 a change failed.
    """
    with translated_errors(json_mode=output.is_machine):
        if plan_file is not None:
            given = plans.given_options(
                [
                    ("-e/--experiment", bool(experiment)),
                    ("-s/--study", bool(study)),
                    ("--run", bool(run)),
                    ("--trial", bool(trial)),
                    ("--older-than", older_than is not None),
                    ("--silent-for", silent_for is not None),
                    ("--user", bool(user)),
                    ("--host", bool(host)),
                    ("--stale-after", stale_after is not None),
                    ("--this-host", this_host),
                    ("--include-stale", include_stale),
                    ("--rhythm", rhythm),
                    ("--force", force),
                    ("--as", end_state is not EndState.KILLED),
                    ("--retry", retry),
                    ("--max-retry", max_retry is not None),
                    ("--optuna-utc-offset", bool(optuna_utc_offset)),
                ]
            )
            if given:
                raise UsageError(
                    f"--plan applies the plan as it was reviewed; it takes no {', '.join(given)}",
                    hint="make a new plan with those options instead",
                )
            report, max_retry = _from_plan(plan_file, mlflow, optuna, yes)
            _render(report, output, max_retry, show_all)
        else:
            if force and not (run or trial):
                raise UsageError("--force applies only to records named with --run or --trial")
            if rhythm and not include_stale:
                raise UsageError("--rhythm applies only with --include-stale")
            options = CloseOptions(
                include_stale=include_stale,
                rhythm=rhythm,
                force=force,
                as_failed=end_state is EndState.FAILED,
                retry=retry,
                max_retry=max_retry,
            )
            resolved = resolve(
                mlflow=mlflow,
                optuna=optuna,
                experiments=experiment,
                studies=study,
                stale_after=stale_after,
                runs=run,
                trials=trial,
                older_than=older_than,
                silent_for=silent_for,
                users=user,
                hosts=host,
                optuna_utc_offset=optuna_utc_offset,
            )
            with resolved.session() as session:
                report = plan(
                    session,
                    resolved.selection,
                    resolved.policy,
                    LocalProbe(),
                    options,
                    this_host=this_host,
                )
                if yes:
                    report = annotate(session, apply(session, report, options))
            _render(report, output, max_retry, show_all)
    if any(not s.ok for s in report.stores):
        raise typer.Exit(int(ExitCode.STORE))
    if report.failed:
        raise typer.Exit(int(ExitCode.CHANGE))


def _from_plan(
    path: Path, mlflow: list[str] | None, optuna: list[str] | None, yes: bool
) -> tuple[CloseReport, int | None]:
    """The plan of a plan file as it stands now, applied with ``yes``."""
    planned = plans.load(path, "close")
    resolved = resolve(mlflow=mlflow, optuna=optuna, experiments=None, studies=None)
    report, options = plans.close_report(planned)
    with StoreSession(plans.session_specs(planned, resolved.specs)) as session:
        report = plans.recheck(session, report)
        if yes:
            report = annotate(session, apply(session, report, options))
    return report, options.max_retry


def _render(
    report: CloseReport, output: OutputFormat, max_retry: int | None, show_all: bool
) -> None:
    for status in report.stores:
        if not status.ok:
            report_store_failure(status)
    # One line per failed record, unless a whole store refused thousands of them.
    for line in failure_lines(report.failed, FAILURE_LINES):
        sys.stderr.write(line + "\n")
    if output is OutputFormat.JSON:
        write_close_json(report, max_retry)
        return
    if output is OutputFormat.JSONL:
        write_close_jsonl(report, max_retry)
        return
    if output is OutputFormat.MARKDOWN:
        sys.stdout.write(close_markdown(report))
        return
    if output is OutputFormat.TABLE:
        _human(report, show_all)
        return
    assert_never(output)


def _human(report: CloseReport, show_all: bool) -> None:
    err = stderr_console()
    grouped = print_close_report(report, Screen.of(stdout_console()), show_all=show_all)
    for ref in report.missing:
        err.print(f"  {ref}: no unfinished record with this id in the stores read")
    closed = sum(1 for c in report.changes if c.outcome is Outcome.CLOSED)
    if report.dry_run and report.changes:
        err.print(
            f"{len(report.changes)} to close, {len(report.skipped)} left alone. "
            "Nothing was changed: run again with --yes to apply."
        )
    elif not report.dry_run:
        err.print(
            f"{closed} closed, {len(report.failed)} failed, {len(report.skipped)} left alone."
        )
    elif any(s.ok for s in report.stores):
        err.print(f"Nothing to close ({len(report.skipped)} left alone).")
    if grouped:
        count = len(report.changes) + len(report.skipped)
        err.print(grouped_hint(count, "records"), soft_wrap=True)
