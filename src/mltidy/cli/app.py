"""The root of the CLI: wires commands, nothing else.

It imports nothing heavy (no mlflow, optuna or sqlalchemy) and no command module: each command
is imported when it runs (:class:`~mltidy.cli.core.LazyGroup`), so ``mltidy --help`` and shell
completion stay fast.
"""

from __future__ import annotations

import gc
import sys
from typing import Annotated

import typer

from mltidy import __version__
from mltidy.cli.boundary import check_arguments, tolerant_streams
from mltidy.cli.core import DEBUG_HELP, Lazy, LazyGroup, log_debug_to_stderr
from mltidy.cli.errors import PIPE_CLOSED, print_error, stdout_closed
from mltidy.cli.state import STATE
from mltidy.errors import UsageError

#: Every command, in the order ``--help`` lists them: where it lives, and its one-line summary
#: (the first paragraph of its docstring; tests/test_docs.py checks that they agree).
COMMANDS: dict[str, Lazy] = {
    "scan": Lazy(
        "mltidy.cli.scan",
        "scan_command",
        "Find MLflow runs and Optuna trials left RUNNING, and judge whether their job is gone.",
    ),
    "close": Lazy(
        "mltidy.cli.close",
        "close_command",
        "Close dead runs and trials: MLflow runs become KILLED, Optuna trials FAIL.",
    ),
    "declutter": Lazy(
        "mltidy.cli.declutter",
        "declutter_command",
        "Soft-delete the runs mltidy closed that hold nothing (no metrics, params or artifacts).",
    ),
    "link": Lazy(
        "mltidy.cli.link",
        "link_command",
        "Link Optuna trials and MLflow runs both ways, so a click in optuna-dashboard opens the "
        "run and the run points back at its trial.",
    ),
    "doctor": Lazy(
        "mltidy.cli.doctor",
        "doctor_command",
        "Show what mltidy sees here: versions, the stores it would read (opened read-only, with "
        "their schema versions), whether the MLflow provenance plugin is active, the boot id, "
        "the heartbeat and the config file.",
    ),
    "watch": Lazy(
        "mltidy.cli.watch",
        "watch_command",
        "Watch the stores and notify: runs finished, failed or killed; runs and trials dead or "
        "stale; studies finished or stopped; experiments gone idle.",
    ),
    "run": Lazy(
        "mltidy.cli.run",
        "run_command",
        "Run a training command under supervision: signals are passed on to it, and the moment "
        "it dies, the runs and trials it left RUNNING are closed and a notification is sent.",
        {"allow_interspersed_args": False},
    ),
    "demo": Lazy(
        "mltidy.cli.demo",
        "demo_command",
        "Build a sandbox with real training jobs, kill some, and tidy up what they leave.",
    ),
}


class MltidyGroup(LazyGroup):
    """The ``mltidy`` group: the commands above."""

    lazy = COMMANDS


app = typer.Typer(
    name="mltidy",
    cls=MltidyGroup,
    help="Experiment-tracking hygiene for MLflow and Optuna: find runs and trials left RUNNING "
    "by killed jobs, with evidence.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mltidy {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[bool, typer.Option("--debug", envvar="MLTIDY_DEBUG", help=DEBUG_HELP)] = False,
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Experiment-tracking hygiene for MLflow and Optuna."""
    STATE.debug = debug
    if debug:
        log_debug_to_stderr()


def main() -> None:
    """Console-script entry point."""
    # What has been imported by now (typer, rich, mltidy) lives until the process exits. Frozen,
    # it is no longer walked by each full collection that later imports (SQLAlchemy, pydantic)
    # and the exit trigger: about 15% of the CPU time of `mltidy scan` and of `--help`
    # (measured with bench/scan_speed.py; docs/performance.md).
    gc.freeze()
    tolerant_streams()
    try:
        check_arguments(sys.argv[1:])
    except UsageError as exc:
        print_error(exc.message, exc.hint)
        sys.exit(int(exc.exit_code))
    try:
        app()
    except BrokenPipeError:
        stdout_closed()
        code: int | str | None = PIPE_CLOSED
    except SystemExit as exc:
        code = exc.code
    # Output still buffered goes out now, while a closed pipe can still end quietly (at exit
    # Python would print "Exception ignored ... BrokenPipeError" and exit 120).
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        stdout_closed()
        code = PIPE_CLOSED
    sys.exit(code)


__all__ = ["COMMANDS", "app", "main"]
