"""``mltidy demo``: a sandbox with real killed jobs, and the hygiene loop run on it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mltidy.backends.interface import Selection
from mltidy.cli.errors import translated_errors
from mltidy.cli.render import records_table, stdout_console
from mltidy.config import StoreSpec
from mltidy.judge import Policy
from mltidy.model import StoreKind, utc_now
from mltidy.probe import LocalProbe
from mltidy.scan import scan


def demo_command(
    path: Annotated[
        Path,
        typer.Option(
            "--path",
            help="Sandbox folder to create. An earlier demo's sandbox is replaced; "
            "anything else is refused.",
        ),
    ] = Path("mltidy-demo"),
) -> None:
    """Build a sandbox with real training jobs (MLflow runs inside Optuna trials), kill some with
    SIGKILL and SIGTERM, let one finish, keep one training, and scan what they left behind."""
    from mltidy.demo import sandbox as demo

    out = stdout_console()
    with translated_errors():
        out.print(
            f"[bold]1. Building a sandbox in {path}/[/] (MLflow sqlite store, Optuna storage)"
        )
        box = demo.prepare(path)
        out.print(
            "[bold]2. Running tutorial-style training jobs[/] (one Optuna trial each, with an "
            "MLflow run inside; mltidy's MLflow plugin tags each run with its host, boot and pid)"
        )
        _, live = demo.run_jobs(box, lambda line: out.print(f"   {line}"))
        try:
            out.print("[bold]3. mltidy scan[/] (while the live job keeps training)")
            specs = [
                StoreSpec(StoreKind.MLFLOW, box.mlflow_uri, "demo"),
                StoreSpec(StoreKind.OPTUNA, box.optuna_url, "demo"),
            ]
            result = scan(specs, Selection(), Policy(now=utc_now()), LocalProbe())
        finally:
            demo.stop_job(live)
        out.print(records_table(result.records))
        for status in result.stores:
            state = "ok" if status.ok else status.error
            out.print(f"   scanned {status.kind.value} store {status.uri}: {state}")
        out.print(
            "[bold]What next[/]\n"
            f"   cd {path} && mltidy scan          # finds both stores by their schema\n"
            f"   cd {path} && mltidy scan -f json  # the same, for programs\n"
            "   The live job was stopped with Ctrl-C after the scan; Optuna and MLflow closed "
            "its trial and run themselves."
        )
