"""Tables for people: layout, folding, grouping past a screenful, and the close report's JSON.

Rendering is pure, so the records here are made by hand.
"""

from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest
from rich.console import COLOR_SYSTEMS

from mltidy.cli.render_changes import close_json, write_close_json, write_close_jsonl
from mltidy.cli.tables import (
    RECORD_COLUMNS,
    Column,
    Screen,
    clean,
    failure_lines,
    print_close_report,
    print_records,
    record_rows,
    table_lines,
)
from mltidy.close import Change, CloseReport, Outcome, Skip
from mltidy.model import (
    Basis,
    JudgedRecord,
    Record,
    RecordKind,
    StoreId,
    StoreKind,
    StoreStatus,
    Verdict,
    VerdictKind,
    utc_now,
)

STORE = StoreId("sqlite:////data/mlflow.db")


def _item(n: int, *, experiment: str = "exp", kind: VerdictKind = VerdictKind.DEAD) -> JudgedRecord:
    record = Record(
        kind=RecordKind.MLFLOW_RUN if n % 3 else RecordKind.OPTUNA_TRIAL,
        store=STORE,
        id=f"{n:032x}",
        name=f"run-{n}",
        container=experiment,
        container_id="1",
        state="RUNNING",
        started_at=utc_now() - timedelta(hours=n + 1),
        trial_number=None if n % 3 else n,
    )
    basis = Basis.PROCESS if kind is VerdictKind.DEAD else Basis.STALE_AFTER
    return JudgedRecord(record, Verdict(kind, f"process {n} no longer exists on gpu-07", basis))


def _screen(width: int = 100, rows: int = 40, color: str | None = None) -> Screen:
    return Screen(io.StringIO(), width, rows, COLOR_SYSTEMS[color] if color else None)


def _text(screen: Screen) -> str:
    value = screen.out.getvalue()  # type: ignore[attr-defined]
    assert isinstance(value, str)
    return value


def test_columns_line_up_and_nothing_trails() -> None:
    screen = _screen()
    lines = table_lines(RECORD_COLUMNS, record_rows([_item(1), _item(22)]), screen)
    assert lines[0].split() == ["verdict", "kind", "experiment/study", "name", "id", "reason"]
    starts = [line.index("process") for line in lines[1:]]
    assert len(set(starts)) == 1
    assert all(line == line.rstrip() for line in lines)
    assert "\x1b[" not in "".join(lines)


def test_the_reason_folds_into_a_narrow_terminal() -> None:
    screen = _screen(width=70)
    item = _item(1)
    lines = table_lines(RECORD_COLUMNS, record_rows([item]), screen)
    assert len(lines) > 2
    assert all(len(line) <= 70 for line in lines)
    narrow = table_lines(RECORD_COLUMNS, record_rows([item]), _screen(width=40))
    assert max(len(line) for line in narrow) < 60  # even then, folded as far as it goes
    column = lines[0].index("reason")
    folded = " ".join(line[column:].strip() for line in lines[1:])
    assert folded == item.verdict.reason


def test_control_characters_cannot_break_a_row() -> None:
    assert clean("a\nb\tc\x1b[2Jd\x07") == "a\\nb\\tc\\x1b[2Jd\\x07"
    lines = table_lines([Column("name")], [["evil\nname\x1b[31m"]], _screen())
    assert len(lines) == 2
    assert "\x1b" not in lines[1]


def test_wide_characters_are_measured_in_cells() -> None:
    lines = table_lines(
        [Column("name"), Column("id")], [["\u5b9f\u9a13", "x"], ["ab", "y"]], _screen()
    )
    # Two wide characters take four cells, like "name": the id column starts after them.
    assert lines[0].index("id") == lines[2].index("y") == 6
    assert lines[1] == "\u5b9f\u9a13  x"


def test_colour_only_on_a_terminal() -> None:
    screen = _screen(color="truecolor")
    print_records([_item(1)], screen, show_all=False)
    assert "\x1b[1;31mdead" in _text(screen)


def test_records_that_fit_are_listed_one_by_one() -> None:
    screen = _screen(rows=10)
    items = [_item(n) for n in range(10)]
    assert print_records(items, screen, show_all=False) is False
    assert len(_text(screen).splitlines()) == 11


def test_past_a_screenful_records_are_grouped_per_experiment() -> None:
    screen = _screen(width=160, rows=10)
    items = [_item(n, experiment="big") for n in range(30)]
    items += [_item(n, experiment="small", kind=VerdictKind.STALE) for n in range(30, 33)]
    assert print_records(items, screen, show_all=False) is True
    lines = _text(screen).splitlines()
    assert lines[0].split() == [
        "kind",
        "experiment/study",
        "records",
        "dead",
        "stale",
        "oldest",
        "start",
        "most",
        "common",
        "reason",
    ]
    runs_big = [line for line in lines if " big " in line and line.startswith("run")]
    assert len(runs_big) == 1
    assert runs_big[0].split()[2:4] == ["20", "20"]  # 20 runs, all dead
    assert "dead: process checked on its host" in runs_big[0]
    assert "(run-29)" in runs_big[0]  # the oldest run of that group
    assert any("stale: silent longer than --stale-after" in line for line in lines)


def test_all_lists_every_record() -> None:
    screen = _screen(rows=10)
    items = [_item(n) for n in range(30)]
    assert print_records(items, screen, show_all=True) is False
    assert len(_text(screen).splitlines()) == 31


def test_more_groups_than_fit_end_in_one_line() -> None:
    screen = _screen(rows=10)
    items = [_item(n, experiment=f"e{n:03d}") for n in range(3, 300, 3)]
    print_records(items, screen, show_all=False)
    lines = _text(screen).splitlines()
    assert len(lines) == 10
    assert "... 91 more" in lines[-1]
    assert lines[-1].split()[-2:] == ["91", "91"]


def _report(changes: int, skipped: int, *, dry_run: bool = True) -> CloseReport:
    end = datetime(2026, 1, 1, 12, tzinfo=timezone.utc)
    outcome = Outcome.PLANNED if dry_run else Outcome.CLOSED
    return CloseReport(
        stores=(StoreStatus(STORE, StoreKind.MLFLOW, ok=True),),
        changes=tuple(
            Change(_item(n), "KILLED", end, outcome=outcome, detail="x" if n == 1 else None)
            for n in range(changes)
        ),
        skipped=tuple(
            Skip(_item(n, kind=VerdictKind.ALIVE), f"alive: process {n} is running")
            for n in range(changes, changes + skipped)
        ),
        dry_run=dry_run,
        missing=("abc",),
    )


def test_a_small_close_plan_is_two_tables() -> None:
    screen = _screen(width=200)
    assert print_close_report(_report(3, 2), screen, show_all=False) is False
    text = _text(screen)
    assert text.startswith("Plan (dry run: nothing changed)\nstatus")
    assert "\nLeft alone\nverdict" in text
    assert len(text.splitlines()) == 1 + 1 + 3 + 1 + 1 + 2


def test_a_large_close_plan_is_grouped() -> None:
    screen = _screen(rows=20)
    assert print_close_report(_report(300, 5), screen, show_all=False) is True
    lines = _text(screen).splitlines()
    assert lines[0] == "Plan (dry run: nothing changed)"
    assert lines[1].split()[:4] == ["kind", "experiment/study", "to", "close"]
    assert "Left alone" in lines
    assert len(lines) < 20  # the five left alone are listed; the 300 changes are 2 groups


def test_many_failures_are_one_line_per_cause() -> None:
    report = _report(50, 0, dry_run=False)
    failed = tuple(
        Change(c.item, c.new_state, c.end_time, outcome=Outcome.FAILED, detail="read-only")
        for c in report.changes
    )
    assert len(failure_lines(failed[:3], 20)) == 3
    (line,) = failure_lines(failed, 20)
    assert line == f"mltidy: error: could not close 50 records of {STORE}: read-only"


@pytest.mark.parametrize(("changes", "skipped"), [(0, 0), (1, 0), (0, 2), (3, 2)])
def test_streamed_close_json_is_the_document_json_dumps_makes(changes: int, skipped: int) -> None:
    report = _report(changes, skipped)
    out = io.StringIO()
    write_close_json(report, out=out)
    assert out.getvalue() == json.dumps(close_json(report), indent=2) + "\n"
    lines = io.StringIO()
    write_close_jsonl(report, out=lines)
    parsed = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert parsed == [{"change": c} for c in close_json(report)["changes"]] + [
        {"skipped": s} for s in close_json(report)["skipped"]
    ]
