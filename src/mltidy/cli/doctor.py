"""``mltidy doctor``: versions, stores, provenance and configuration, checked."""

from __future__ import annotations

import json
import sys

import typer
from rich.table import Table
from rich.text import Text

from mltidy.cli.errors import translated_errors
from mltidy.cli.options import FormatOption
from mltidy.cli.render import OutputFormat, cell, stdout_console
from mltidy.cli.selection import STORES, Given, with_given
from mltidy.doctor import diagnose
from mltidy.errors import ExitCode


@with_given(*STORES, "optuna_utc_offset")
def doctor_command(
    given: Given,
    output: FormatOption = OutputFormat.TABLE,
) -> None:
    """Show what mltidy sees here: versions, the stores it would read (opened read-only, with
    their schema versions), whether the MLflow provenance plugin is active, the boot id, the
    heartbeat and the config file.

    Exit codes: 0 ok, 2 usage error, 3 a store could not be read.
    """
    with translated_errors(json_mode=output.is_machine):
        resolved = given.resolve()
        with resolved.session() as session:
            checks = diagnose(session, resolved.config)
        if output.is_machine:
            payload = [{"topic": c.topic, "finding": c.finding, "ok": c.ok} for c in checks]
            sys.stdout.write(json.dumps({"checks": payload}, indent=2) + "\n")
        else:
            table = Table(header_style="bold", pad_edge=False, show_header=False)
            table.add_column("", no_wrap=True)
            table.add_column("topic", no_wrap=True)
            table.add_column("finding", overflow="fold")
            for c in checks:
                mark = Text("ok", style="green") if c.ok else Text("!!", style="bold red")
                table.add_row(mark, cell(c.topic), cell(c.finding))
            stdout_console().print(table)
    if any(not c.ok and c.topic.endswith("store") for c in checks):
        raise typer.Exit(int(ExitCode.STORE))
