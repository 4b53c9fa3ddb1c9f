"""Renderings of what ``close`` and ``declutter`` did or would do (table, JSON, Markdown)."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from rich.table import Table
from rich.text import Text

from mltidy.cli.render import (
    JSON_VERSION,
    add_column,
    cell,
    indented,
    record_dict,
    shown_id,
    store_dict,
)
from mltidy.close import Change, CloseReport, Skip
from mltidy.declutter import DeclutterReport, RunAction, RunDecision, restore_command
from mltidy.durations import format_duration
from mltidy.judge import heartbeat_at
from mltidy.model import RecordKind, iso
from mltidy.text import md_code, md_escape

ACTION_STYLE = {
    RunAction.DELETE: "cyan",
    RunAction.DELETED: "green",
    RunAction.KEEP: "dim",
    RunAction.FAILED: "bold red",
}


def _kind(change: Change | Skip) -> str:
    return "run" if change.item.record.kind is RecordKind.MLFLOW_RUN else "trial"


def change_dict(change: Change) -> dict[str, Any]:
    """One change: the record (JSON contract fields) and what happens to it (and what a plan
    file needs to apply exactly this: docs/close.md)."""
    return {
        **record_dict(change.item),
        "new_state": change.new_state,
        "end_time": iso(change.end_time),
        "status": change.outcome.value,
        "detail": change.detail,
        "retry_trial_number": change.retry_trial_number,
        "retry": change.retry,
        "forced": change.forced,
        "heartbeat_at": iso(heartbeat_at(change.item.record.tags)),
    }


def skip_dict(skip: Skip) -> dict[str, Any]:
    """One record left alone, and why."""
    return {**record_dict(skip.item), "why": skip.why}


def close_json(report: CloseReport, max_retry: int | None = None) -> dict[str, Any]:
    """The JSON object ``close --format json`` prints; a dry run's is a plan file."""
    return {
        "version": JSON_VERSION,
        "command": "close",
        "stores": [store_dict(s) for s in report.stores],
        "dry_run": report.dry_run,
        "max_retry": max_retry,
        "changes": [change_dict(c) for c in report.changes],
        "skipped": [skip_dict(s) for s in report.skipped],
        "missing": list(report.missing),
    }


def write_close_json(
    report: CloseReport, max_retry: int | None = None, out: TextIO | None = None
) -> None:
    """:func:`close_json`, text for text as ``json.dumps(..., indent=2)`` writes it, but one
    change at a time: ten thousand changes as dicts and then as one string would need memory
    for both."""
    out = out or sys.stdout
    payload = close_json(report, max_retry)
    out.write("{")
    for index, (key, value) in enumerate(payload.items()):
        out.write(f",\n  {json.dumps(key)}: " if index else f"\n  {json.dumps(key)}: ")
        if isinstance(value, list) and value:
            for n, item in enumerate(value):
                out.write(",\n    " if n else "[\n    ")
                out.write(indented(item, 4))
            out.write("\n  ]")
        else:
            out.write(indented(value, 2))
    out.write("\n}\n")


def write_close_jsonl(
    report: CloseReport, max_retry: int | None = None, out: TextIO | None = None
) -> None:
    """One line per change (``{"change": ...}``), then per record left alone (``{"skipped":
    ...}``)."""
    out = out or sys.stdout
    del max_retry  # JSON lines hold the records only
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
            f"| {c.outcome.value} | {_kind(c)} | {md_code(r.container, table=True)} | "
            f"{md_code(r.name, table=True)} | {md_code(shown_id(r), table=True)} | "
            f"{c.new_state} | {iso(c.end_time)} |"
        )
    if report.skipped:
        lines += ["", "Left alone:", ""]
        lines += [
            f"- {md_code(shown_id(s.item.record))} ({md_code(s.item.record.name)}): "
            f"{md_escape(s.why)}"
            for s in report.skipped
        ]
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
    """The JSON object ``declutter --format json`` prints; a dry run's is a plan file."""
    return {
        "version": JSON_VERSION,
        "command": "declutter",
        "stores": [store_dict(s) for s in report.stores],
        "dry_run": report.dry_run,
        "missing": list(report.missing),
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
        add_column(table, name)
    table.add_column("why", overflow="fold", ratio=1)
    for d in report.runs:
        table.add_row(
            Text(d.action.value, style=ACTION_STYLE[d.action]),
            cell(d.contents.record.container),
            cell(d.contents.record.name),
            cell(d.contents.record.id[:8]),
            cell(d.why),
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
        add_column(table, name)
    for _, h in report.studies:
        share = f" ({h.failed * 100 // h.trials}%)" if h.trials else ""
        table.add_row(
            cell(h.study),
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
