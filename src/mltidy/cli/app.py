"""The root of the CLI: wires commands, nothing else. Imports nothing heavy (no mlflow, optuna or
sqlalchemy), so ``mltidy --help`` stays instant."""

from __future__ import annotations

import gc
import sys
from typing import Annotated

import typer

from mltidy import __version__
from mltidy.cli.boundary import check_arguments, tolerant_streams
from mltidy.cli.close import close_command
from mltidy.cli.declutter import declutter_command
from mltidy.cli.demo import demo_command
from mltidy.cli.doctor import doctor_command
from mltidy.cli.errors import print_error
from mltidy.cli.link import link_command
from mltidy.cli.run import run_command
from mltidy.cli.scan import scan_command
from mltidy.cli.state import STATE
from mltidy.cli.watch import watch_command
from mltidy.errors import UsageError

app = typer.Typer(
    name="mltidy",
    help="Experiment-tracking hygiene for MLflow and Optuna: find runs and trials left RUNNING "
    "by killed jobs, with evidence.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"mltidy {__version__}")
        raise typer.Exit()


@app.callback()
def root(
    debug: Annotated[
        bool,
        typer.Option(
            "--debug",
            envvar="MLTIDY_DEBUG",
            help="Show tracebacks of errors, and debug messages such as the read path a store "
            "took.",
        ),
    ] = False,
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
        _log_debug_to_stderr()


def _log_debug_to_stderr() -> None:
    """``--debug`` also shows mltidy's debug messages, such as which read path a store took."""
    import logging
    import sys

    logger = logging.getLogger("mltidy")
    logger.setLevel(logging.DEBUG)
    for handler in list(logger.handlers):
        if getattr(handler, "mltidy_debug", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mltidy: debug: %(message)s"))
    handler.mltidy_debug = True  # type: ignore[attr-defined]
    logger.addHandler(handler)


app.command("scan")(scan_command)
app.command("close")(close_command)
app.command("declutter")(declutter_command)
app.command("link")(link_command)
app.command("doctor")(doctor_command)
app.command("watch")(watch_command)
app.command("run", context_settings={"allow_interspersed_args": False})(run_command)
app.command("demo")(demo_command)


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
    app()
