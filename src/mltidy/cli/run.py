"""``mltidy run -- CMD``: supervise a training command; close what it leaves when it dies."""

from __future__ import annotations

import sys
from enum import Enum
from typing import Annotated

import typer

from mltidy.cli.errors import print_error, translated_errors
from mltidy.cli.options import NotifyOption
from mltidy.cli.selection import STORES, Given, with_given
from mltidy.close import Outcome
from mltidy.errors import MltidyError, UsageError
from mltidy.notify.delivery import Target, deliver, resolve_targets, validate
from mltidy.notify.events import Event, describe_record
from mltidy.notify.messages import compose
from mltidy.supervision.cleanup import Cleanup, clean_up, job_label, warmed_up
from mltidy.supervision.process import CommandNotFound, Supervision, supervise
from mltidy.supervision.report import job_event
from mltidy.text import safe


class NotifyOn(str, Enum):
    """When ``mltidy run`` sends a notification."""

    FAILURE = "failure"
    SUCCESS = "success"
    ALWAYS = "always"
    NEVER = "never"

    def wants(self, ok: bool) -> bool:
        """Whether a job that ended ``ok`` (exit 0) or not is notified."""
        if self is NotifyOn.ALWAYS:
            return True
        if self is NotifyOn.NEVER:
            return False
        return ok is (self is NotifyOn.SUCCESS)


@with_given(*STORES, "experiment", "study")
def run_command(
    given: Given,
    command: Annotated[
        list[str] | None,
        typer.Argument(
            metavar="-- CMD [ARGS]",
            help="The command to run (after --; everything from its first word on is its own).",
            show_default=False,
        ),
    ] = None,
    notify: NotifyOption = None,
    notify_on: Annotated[
        NotifyOn,
        typer.Option(
            "--notify-on",
            envvar="MLTIDY_NOTIFY_ON",
            help="When to notify: failure (non-zero exit or a signal), success (exit 0), "
            "always, or never.",
            case_sensitive=False,
        ),
    ] = NotifyOn.FAILURE,
    no_close: Annotated[
        bool,
        typer.Option(
            "--no-close", help="Do not close the runs and trials the command leaves RUNNING."
        ),
    ] = False,
    name: Annotated[
        str | None,
        typer.Option(
            "--name",
            metavar="TEXT",
            help="What to call the job in messages (default: the command, shortened).",
            show_default=False,
        ),
    ] = None,
) -> None:
    """Run a training command under supervision: signals are passed on to it, and the moment it
    dies, the runs and trials it left RUNNING are closed and a notification is sent.

    Runs and trials are found by the MLTIDY_SUPERVISION id their provenance carries (mltidy
    must be installed in the job's environment) or by the pids the supervisor saw; the stores
    are the ones mltidy scan would read. Output of the command is untouched; mltidy's own
    lines go to stderr.

    Exit code: the command's own (128 + N when a signal N killed it, as in shells); 126 or 127
    when it cannot be started; 2 for a usage error.
    """
    with translated_errors():
        if not command:
            raise UsageError("no command to run", hint="mltidy run -- python train.py")
        resolved = given.resolve()
        resolved.session().close()  # a bad URI fails now, not after hours of training
        targets = resolve_targets(notify, resolved.config)
        validate(targets)
        links = resolved.bases
    try:
        with warmed_up(resolved.specs):
            supervision = supervise(command)
    except CommandNotFound as exc:
        print_error(exc.message)
        raise typer.Exit(exc.exit_code) from None
    exit_ = supervision.exit
    cleanup = None if no_close else _clean_up(supervision, given)
    _say(supervision, cleanup)
    if targets and notify_on.wants(exit_.ok):
        _notify(job_event(supervision, cleanup, links, name), targets)
    raise typer.Exit(exit_.exit_code)


def _clean_up(supervision: Supervision, given: Given) -> Cleanup | None:
    """Close what the job left; stores are resolved again, since a first run may have just
    created them. A failure here is reported and never changes the exit code."""
    try:
        resolved = given.resolve()
        with resolved.session() as session:
            cleanup = clean_up(supervision, session, resolved.selection)
    except MltidyError as exc:
        print_error(f"could not close what the job left RUNNING: {exc.message}", exc.hint)
        return None
    for status in cleanup.report.stores:
        if not status.ok:
            print_error(f"cannot read {status.kind.value} store: {status.error}")
    return cleanup


def _say(supervision: Supervision, cleanup: Cleanup | None) -> None:
    exit_ = supervision.exit
    if exit_.ok and (cleanup is None or not cleanup.report.changes):
        return
    job = f"{job_label(exit_.command)} (pid {exit_.pid})"
    lines = [f"mltidy run: {job} {exit_.describe()} after {exit_.duration}"]
    if exit_.stopped_by:
        lines.append(f"mltidy run: {exit_.stopped_by}")
    if exit_.oom and exit_.maybe_oom:
        lines.append(f"mltidy run: {exit_.oom}")
    if cleanup is not None:
        for change in cleanup.report.changes:
            record = change.item.record
            what = describe_record(record)
            if change.outcome is Outcome.CLOSED:
                lines.append(f"mltidy run: closed {what}: now {change.new_state}")
            else:
                lines.append(f"mltidy run: error: could not close {what}: {change.detail}")
        for item in cleanup.alive:
            lines.append(f"mltidy run: left {item.record.name} alone: {item.verdict.reason}")
        if not exit_.ok and not cleanup.report.changes and not cleanup.alive:
            lines.append(f"mltidy run: {_nothing_found(cleanup)}")
    sys.stderr.write("\n".join(safe(line) for line in lines) + "\n")


def _nothing_found(cleanup: Cleanup) -> str:
    """One line on why a dead job left nothing to close, with the likely cause."""
    stores = [s for s in cleanup.report.stores if s.ok]
    if not stores:
        return (
            "closed nothing: no store could be read (pass --mlflow/--optuna, or set "
            "MLFLOW_TRACKING_URI/OPTUNA_STORAGE as the job does)"
        )
    read = ", ".join(s.uri for s in stores)
    if cleanup.bare:
        return (
            f"closed nothing: {cleanup.bare} unfinished records in {read} carry no provenance, "
            "so none can be told to be this job's (Optuna trials are found through their MLflow "
            "run: set the trial's mlflow_run_id, or install mltidy in the job's environment)"
        )
    return (
        f"closed nothing: no unfinished run or trial in {read} belongs to this job (did it "
        "write to another store? pass it with --mlflow/--optuna)"
    )


def _notify(event: Event, targets: list[Target]) -> None:
    for delivery in deliver(compose([event]), targets):
        if delivery.ok:
            sys.stderr.write(f"mltidy run: notified {delivery.target}\n")
        else:
            print_error(f"could not notify {delivery.target}: {delivery.error}")
