"""``mltidy close``: end dangling runs and trials, with the true end time and an audit trail."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated

import typer
from typing_extensions import assert_never

from mltidy.cli.errors import translated_errors
from mltidy.cli.options import (
    ExperimentOption,
    FormatOption,
    MlflowOption,
    OptunaOption,
    StaleAfterOption,
    StudyOption,
    ThisHostOption,
    YesOption,
)
from mltidy.cli.render import OutputFormat, stderr_console, stdout_console
from mltidy.cli.render_changes import close_markdown, write_close_json, write_close_jsonl
from mltidy.cli.selection import resolve
from mltidy.cli.tables import AllOption, Screen, failure_lines, grouped_hint, print_close_report
from mltidy.close import CloseOptions, CloseReport, Outcome, apply, parse_trial_ref, plan
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
    experiment: ExperimentOption = None,
    study: StudyOption = None,
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
    run: Annotated[
        list[str] | None,
        typer.Option("--run", metavar="RUN_ID", help="Only this MLflow run. Repeatable."),
    ] = None,
    trial: Annotated[
        list[str] | None,
        typer.Option("--trial", metavar="STUDY:NUMBER", help="Only this Optuna trial. Repeatable."),
    ] = None,
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
    yes: YesOption = False,
    show_all: AllOption = False,
) -> None:
    """Close dead runs and trials: MLflow runs become KILLED, Optuna trials FAIL.

    Dry run by default: prints the plan and changes nothing; --yes applies. A record is changed
    only if it is still RUNNING at the moment of writing; its end time is its last activity, and
    mltidy.closed_* tags (system attributes on trials) record what was done. Alive records are
    never touched, not even with --force; a record named with --run/--trial and --force is
    closed whatever else its verdict, and its audit tags say it was forced.

    Exit codes: 0 ok, 2 usage error, 3 a store could not be read, 4 a change failed.
    """
    with translated_errors(json_mode=output.is_machine):
        if force and not (run or trial):
            raise UsageError("--force applies only to records named with --run or --trial")
        if rhythm and not include_stale:
            raise UsageError("--rhythm applies only with --include-stale")
        options = CloseOptions(
            include_stale=include_stale,
            rhythm=rhythm,
            runs=tuple(run or ()),
            trials=tuple(parse_trial_ref(t) for t in trial or ()),
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
            if yes and report.changes:
                report = apply(session, report, options)
        _render(report, output, show_all)
    if any(not s.ok for s in report.stores):
        raise typer.Exit(int(ExitCode.STORE))
    if report.failed:
        raise typer.Exit(int(ExitCode.CHANGE))


def _render(report: CloseReport, output: OutputFormat, show_all: bool) -> None:
    for status in report.stores:
        if not status.ok:
            sys.stderr.write(
                f"mltidy: error: cannot read {status.kind.value} store: {status.error}\n"
            )
    # One line per failed record, unless a whole store refused thousands of them.
    for line in failure_lines(report.failed, FAILURE_LINES):
        sys.stderr.write(line + "\n")
    if output is OutputFormat.JSON:
        write_close_json(report)
        return
    if output is OutputFormat.JSONL:
        write_close_jsonl(report)
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
