"""``mltidy scan``: list unfinished MLflow runs and Optuna trials with a verdict and a reason."""

from __future__ import annotations

import os
import sys
from contextlib import AbstractContextManager, nullcontext
from typing import Any

import typer

from mltidy.cli.errors import report_store_failure, translated_errors
from mltidy.cli.options import (
    AllOption,
    DashboardUrlOption,
    FailOn,
    FailOnOption,
    FormatOption,
    MlflowUiOption,
    ThisHostOption,
)
from mltidy.cli.render import (
    OutputFormat,
    markdown,
    print_missing,
    stderr_console,
    stdout_console,
    write_json,
    write_jsonl_record,
)
from mltidy.cli.selection import JUDGING, STORES, Given, with_given
from mltidy.errors import ExitCode
from mltidy.evidence.local import LocalProbe
from mltidy.judge import Provenance
from mltidy.model import JudgedRecord, StoreStatus, VerdictKind
from mltidy.scan import LeftOut, NoMatch, ScanEvent, iter_scan
from mltidy.text import safe

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing_extensions import assert_never

FAILING = {
    FailOn.DANGLING: (VerdictKind.DEAD, VerdictKind.STALE, VerdictKind.UNKNOWN),
    FailOn.STALE: (VerdictKind.DEAD, VerdictKind.STALE),
    FailOn.DEAD: (VerdictKind.DEAD,),
    FailOn.NEVER: (),
}


@with_given(*STORES, *JUDGING)
def scan_command(
    given: Given,
    output: FormatOption = OutputFormat.TABLE,
    fail_on: FailOnOption = FailOn.NEVER,
    this_host: ThisHostOption = False,
    mlflow_ui: MlflowUiOption = None,
    dashboard_url: DashboardUrlOption = None,
    show_all: AllOption = False,
) -> None:
    """Find MLflow runs and Optuna trials left RUNNING, and judge whether their job is gone.

    With no store given, mltidy reads MLFLOW_TRACKING_URI / OPTUNA_STORAGE, then \\[tool.mltidy]
    in pyproject.toml or mltidy.toml, then finds stores in this directory and one level below.

    Exit codes: 0 ok, 1 findings that --fail-on asked to fail on, 2 usage error,
    3 a store could not be read.
    """
    with translated_errors(json_mode=output.is_machine):
        resolved = given.resolve(mlflow_ui=mlflow_ui, dashboard_url=dashboard_url)
        if not resolved.specs:
            stderr_console().print(
                "mltidy: no stores found here. Pass --mlflow URI / --optuna URL, set "
                "MLFLOW_TRACKING_URI / OPTUNA_STORAGE, or run in a folder that holds them."
            )
        stores: list[StoreStatus] = []
        records: list[JudgedRecord] = []
        left_out: list[LeftOut] = []
        missing: list[str] = []
        progress: AbstractContextManager[Any] = nullcontext()
        if _stderr_may_be_a_terminal():
            err = stderr_console()
            if err.is_terminal:
                progress = err.status("scanning...", spinner="dots")
        with progress as status, resolved.session() as session:
            events = iter_scan(
                session,
                resolved.selection,
                resolved.policy,
                LocalProbe(),
                this_host=this_host,
                bases=resolved.bases,
            )
            for event in events:
                _collect(event, stores, records, left_out, missing, output)
                if status is not None and isinstance(event, StoreStatus):
                    status.update(f"scanning... {len(stores)}/{len(resolved.specs)} stores")
        grouped = _render(output, stores, records, show_all)
        _summarise(stores, records, left_out, output, grouped)
        if not output.is_machine:
            print_missing(missing, "unfinished record")
    failed = any(not s.ok for s in stores)
    if failed:
        raise typer.Exit(int(ExitCode.STORE))
    if any(r.verdict.kind in FAILING[fail_on] for r in records):
        raise typer.Exit(int(ExitCode.FINDINGS))


def _collect(
    event: ScanEvent,
    stores: list[StoreStatus],
    records: list[JudgedRecord],
    left_out: list[LeftOut],
    missing: list[str],
    output: OutputFormat,
) -> None:
    if isinstance(event, NoMatch):
        missing.append(event.given)
        return
    if isinstance(event, LeftOut):
        left_out.append(event)
        return
    if isinstance(event, StoreStatus):
        stores.append(event)
        if not event.ok:
            report_store_failure(event)
        return
    records.append(event)
    if output is OutputFormat.JSONL:
        write_jsonl_record(event)


def _render(
    output: OutputFormat, stores: list[StoreStatus], records: list[JudgedRecord], show_all: bool
) -> bool:
    """Print the report; returns whether the table grouped the records."""
    if output is OutputFormat.TABLE:
        if records:
            from mltidy.cli.tables import Screen, print_records

            return print_records(records, Screen.of(stdout_console()), show_all=show_all)
    elif output is OutputFormat.JSON:
        write_json(stores, records)
    elif output is OutputFormat.JSONL:
        pass  # already streamed, record by record
    elif output is OutputFormat.MARKDOWN:
        sys.stdout.write(markdown(stores, records))
    else:
        assert_never(output)
    return False


def _summarise(
    stores: list[StoreStatus],
    records: list[JudgedRecord],
    left_out: list[LeftOut],
    output: OutputFormat,
    grouped: bool,
) -> None:
    """The human summary on stderr: which stores were read, what was found, what next."""
    if output.is_machine:
        return
    from rich.markup import escape

    from mltidy.cli.tables import grouped_hint

    err = stderr_console()
    for status in stores:
        mark = "[green]ok[/]" if status.ok else "[red]failed[/]"
        err.print(
            f"  {mark} {status.kind.value} {escape(safe(status.uri))} "
            f"[dim]({escape(safe(status.source))})[/]",
            markup=True,
            soft_wrap=True,
        )
    if not any(status.ok for status in stores):
        return
    if left_out:
        elsewhere = sum(1 for item in left_out if item.why != "no provenance")
        bare = len(left_out) - elsewhere
        parts = [f"{elsewhere} started on other hosts"] if elsewhere else []
        parts += [f"{bare} without provenance (no host recorded)"] if bare else []
        err.print(
            f"--this-host left out {len(left_out)} unfinished records: {', '.join(parts)}.",
            soft_wrap=True,
        )
    if not records:
        if not left_out:
            err.print("No unfinished runs or trials.")
        return
    counts = {kind: sum(1 for r in records if r.verdict.kind is kind) for kind in VerdictKind}
    parts = [f"{n} {kind.value}" for kind, n in counts.items() if n]
    err.print(f"{len(records)} unfinished: " + ", ".join(parts) + ".", soft_wrap=True)
    if grouped:
        err.print(grouped_hint(len(records), "unfinished records"), soft_wrap=True)
    bare = sum(1 for r in records if Provenance.from_tags(r.record.tags) is None)
    if bare:
        err.print(
            f"{bare} of {len(records)} unfinished records carry no provenance: install mltidy in "
            "the training environment or start jobs with `mltidy run`; see docs/provenance.md.",
            soft_wrap=True,
            markup=False,
        )


def _stderr_may_be_a_terminal() -> bool:
    """False when Rich would not call stderr a terminal (``Console.is_terminal``: a TTY, unless
    ``TTY_COMPATIBLE`` or ``FORCE_COLOR`` says otherwise), told without importing Rich."""
    if os.environ.get("TTY_COMPATIBLE") == "1" or os.environ.get("FORCE_COLOR"):
        return True
    isatty = getattr(sys.stderr, "isatty", None)
    try:
        return False if isatty is None else bool(isatty())
    except ValueError:  # closed
        return False
