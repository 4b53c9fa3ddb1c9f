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
from mltidy.cli.errors import outcome_code, report_store_failure, translated_errors
from mltidy.cli.options import AllOption, FormatOption, PlanOption, ThisHostOption, YesOption
from mltidy.cli.render import OutputFormat, print_missing, stderr_console, stdout_console
from mltidy.cli.render_changes import close_markdown, write_close_json, write_close_jsonl
from mltidy.cli.selection import JUDGING, STORES, Given, with_given
from mltidy.cli.tables import Screen, failure_lines, grouped_hint, print_close_report
from mltidy.close import CloseOptions, CloseReport, Outcome, annotate, apply, plan
from mltidy.errors import UsageError
from mltidy.evidence.local import LocalProbe

#: Failed records listed one by one on stderr; past this, one line per store and cause.
FAILURE_LINES = 20


class EndState(str, Enum):
    """The state a closed MLflow run gets."""

    KILLED = "killed"
    FAILED = "failed"


@with_given(*STORES, *JUDGING)
def close_command(
    given: Given,
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
            given.refuse_with_plan(
                ("--this-host", this_host),
                ("--include-stale", include_stale),
                ("--rhythm", rhythm),
                ("--force", force),
                ("--as", end_state is not EndState.KILLED),
                ("--retry", retry),
                ("--max-retry", max_retry is not None),
            )
            report, max_retry = _from_plan(plan_file, given, yes)
            _render(report, output, max_retry, show_all)
        else:
            if force and not (given.run or given.trial):
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
            resolved = given.resolve()
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
    raise typer.Exit(outcome_code(report.stores, report.failed))


def _from_plan(path: Path, given: Given, yes: bool) -> tuple[CloseReport, int | None]:
    """The plan of a plan file as it stands now, applied with ``yes``."""
    planned = plans.load(path, "close")
    resolved = given.stores()
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
    print_missing(report.missing, "unfinished record")
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
