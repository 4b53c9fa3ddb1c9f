"""Renderings of what ``close`` and ``declutter`` did or would do (table, JSON, Markdown)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from rich.table import Table
from rich.text import Text

from mltidy.cli.render import indented, record_dict, store_dict
from mltidy.close import Change, CloseReport, Skip
from mltidy.declutter import DeclutterReport, RunAction, RunDecision, restore_command
from mltidy.durations import format_duration
from mltidy.model import RecordKind, iso

ACTION_STYLE = {
    RunAction.DELETE: "cyan",
    RunAction.DELETED: "green",
    RunAction.KEEP: "dim",
    RunAction.FAILED: "bold red",
}


def _kind(change: Change | Skip) -> str:
    return "run" if change.item.record.kind is RecordKind.MLFLOW_RUN else "trial"


def change_dict(change: Change) -> dict[str, Any]:
    """One change: the record (JSON contract fields) and what happens to it."""
    return {
        **record_dict(change.item),
        "new_state": change.new_state,
        "end_time": iso(change.end_time),
        "status": change.outcome.value,
        "detail": change.detail,
        "retry_trial_number": change.retry_trial_number,
    }


def skip_dict(skip: Skip) -> dict[str, Any]:
    """One record left alone, and why."""
    return {**record_dict(skip.item), "why": skip.why}


def close_json(report: CloseReport) -> dict[str, Any]:
    """The JSON object ``close --format json`` prints."""
    return {
        "stores": [store_dict(s) for s in report.stores],
        "dry_run": report.dry_run,
        "changes": [change_dict(c) for c in report.changes],
        "skipped": [skip_dict(s) for s in report.skipped],
        "missing": list(report.missing),
    }


def write_close_json(report: CloseReport, out: TextIO | None = None) -> None:
    """:func:`close_json`, text for text as ``json.dumps(..., indent=2)`` writes it, but one
    change at a time: ten thousand changes as dicts and then as one string would need memory
    for both."""
    out = out or sys.stdout
    out.write("{\n")
    out.write(f'  "stores": {indented([store_dict(s) for s in report.stores], 2)},\n')
    out.write(f'  "dry_run": {json.dumps(report.dry_run)},\n')
    for key, items, as_dict in (
        ("changes", report.changes, change_dict),
        ("skipped", report.skipped, skip_dict),
    ):
        out.write(f'  "{key}": ')
        if not items:
            out.write("[],\n")
            continue
        for index, item in enumerate(items):
            out.write(",\n    " if index else "[\n    ")
            out.write(indented(as_dict(item), 4))  # type: ignore[arg-type]
        out.write("\n  ],\n")
    out.write(f'  "missing": {indented(list(report.missing), 2)}\n}}\n')


def write_close_jsonl(report: CloseReport, out: TextIO | None = None) -> None:
    """One line per change (``{"change": ...}``), then per record left alone (``{"skipped":
    ...}``)."""
    out = out or sys.stdout
    for change in report.changes:
        out.write(json.dumps({"change": change_dict(change)}) + "\n")
    for skip in report.skipped:
        out.write(json.dumps({"skipped": skip_dict(skip)}) + "\n")
    out.flush()


def close_markdown(report: CloseReport) -> str:
    """A Markdown report of the plan or the changes."""
    head = "## mltidy close (dry run)" if report.dry_run else "## mltidy close"
    lines = [head, "", "| status | kind | experiment/study | name | id | new state | end time |"]
    lines.append("| --- | --- | --- | --- | --- | --- | --- |")
    for c in report.changes:
        r = c.item.record
        lines.append(
            f"| {c.outcome.value} | {_kind(c)} | {r.container} | {r.name} | `{r.id}` | "
            f"{c.new_state} | {iso(c.end_time)} |"
        )
    if report.skipped:
        lines += ["", "Left alone:", ""]
        lines += [f"- `{s.item.record.id}` ({s.item.record.name}): {s.why}" for s in report.skipped]
    return "\n".join(lines) + "\n"


def decision_dict(decision: RunDecision) -> dict[str, Any]:
    """One closed run and what declutter does with it."""
    contents = decision.contents
    return {
        "store": contents.record.store,
        "id": contents.record.id,
        "name": contents.record.name,
        "container": contents.record.container,
        "state": contents.record.state,
        "closed_at": iso(contents.closed_at),
        "metrics": contents.metrics,
        "params": contents.params,
        "artifacts": contents.artifacts,
        "action": decision.action.value,
        "why": decision.why,
        "restore": restore_command(decision)
        if decision.action in (RunAction.DELETE, RunAction.DELETED)
        else None,
    }


def declutter_json(report: DeclutterReport) -> dict[str, Any]:
    """The JSON object ``declutter --format json`` prints."""
    return {
        "stores": [store_dict(s) for s in report.stores],
        "dry_run": report.dry_run,
        "runs": [decision_dict(d) for d in report.runs],
        "studies": [
            {
                "store": store,
                "study": h.study,
                "trials": h.trials,
                "running": h.running,
                "failed": h.failed,
                "closed_by_mltidy": h.closed_by_mltidy,
                "failed_seconds": round(h.failed_seconds, 3),
            }
            for store, h in report.studies
        ],
    }


def runs_table(report: DeclutterReport) -> Table:
    """Closed runs and what happens to them."""
    title = "Closed runs (dry run: nothing deleted)" if report.dry_run else "Closed runs"
    table = Table(title=title, title_justify="left", header_style="bold", pad_edge=False)
    for name in ("action", "experiment", "name", "id"):
        table.add_column(name, no_wrap=True)
    table.add_column("why", overflow="fold", ratio=1)
    for d in report.runs:
        table.add_row(
            Text(d.action.value, style=ACTION_STYLE[d.action]),
            d.contents.record.container,
            d.contents.record.name,
            d.contents.record.id[:8],
            d.why,
        )
    return table


def studies_table(report: DeclutterReport) -> Table:
    """Failed and zombie trials per study (Optuna cannot delete trials)."""
    table = Table(
        title="Studies (Optuna keeps failed trials; nothing is deleted)",
        title_justify="left",
        header_style="bold",
        pad_edge=False,
    )
    for name in ("study", "trials", "running", "failed", "closed by mltidy", "compute lost"):
        table.add_column(name, no_wrap=True)
    for _, h in report.studies:
        share = f" ({h.failed * 100 // h.trials}%)" if h.trials else ""
        table.add_row(
            h.study,
            str(h.trials),
            str(h.running),
            f"{h.failed}{share}",
            str(h.closed_by_mltidy),
            format_duration_seconds(h.failed_seconds),
        )
    return table


def format_duration_seconds(seconds: float) -> str:
    """Seconds as a short duration."""
    from datetime import timedelta

    return format_duration(timedelta(seconds=seconds))
