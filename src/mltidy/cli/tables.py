"""Tables for people: cheap at any size, and grouped when they would not fit a screen.

Rich's ``Table`` measures every cell of every row to lay out its columns, then renders each cell
through its segment pipeline: about a millisecond a row, so a table of a thousand records cost
more than the scan that found them (``bench/table_speed.py`` measures it). These tables are
fixed-width text instead: one pass over the cells' lengths gives the column widths, the columns
that may fold (reasons, names) fold into the room the terminal leaves, and colour is one ANSI
sequence per styled cell. Rich still says what the output is (a terminal or not, its width and
height, colour or ``NO_COLOR``); it no longer lays out the rows.

When a report has more rows than fit (the terminal's height less room for the summary; when
stdout is not a terminal, :data:`PIPE_ROWS`), the records are grouped per experiment or study:
how many, how many of each verdict, the oldest, and the most common reason; ``--all`` lists
every record, and JSON/JSON lines always hold every record.

Size: the layout engine and the three tables built on it (records, groups, close plans) share
its columns, widths and styles; apart, each would repeat them.
"""

from __future__ import annotations

import textwrap
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TextIO, cast

from rich.cells import cell_len, chop_cells, set_cell_size
from rich.color import ColorSystem
from rich.console import COLOR_SYSTEMS, Console
from rich.style import Style

from mltidy.close import Change, CloseReport, Outcome, Skip
from mltidy.durations import format_duration
from mltidy.model import Basis, JudgedRecord, Record, RecordKind, VerdictKind, iso, utc_now
from mltidy.text import safe

#: Rows a table may have before it is grouped, when stdout is not a terminal (a pipe, a file,
#: cron's mail, a CI log): a screenful of a typical terminal.
PIPE_ROWS = 40
#: Lines kept free below a table on a terminal: the stores read and the summary on stderr.
SUMMARY_LINES = 8
#: Fewest rows a terminal table shows before grouping, however short the terminal.
MIN_ROWS = 10
#: Columns between two cells.
GAP = "  "
#: A folding column is folded narrower than this only when the screen is very narrow...
MIN_FOLD = 16
#: ... and never narrower than this.
NARROWEST = 6

VERDICT_STYLE = {
    VerdictKind.DEAD: "bold red",
    VerdictKind.STALE: "yellow",
    VerdictKind.ACTIVE: "cyan",
    VerdictKind.ALIVE: "green",
    VerdictKind.UNKNOWN: "dim",
}
OUTCOME_STYLE = {Outcome.PLANNED: "cyan", Outcome.CLOSED: "green", Outcome.FAILED: "bold red"}

#: What a verdict rests on, in a few words, for the "most common reason" of a group.
BASIS_WORDS = {
    Basis.PROCESS: "process checked on its host",
    Basis.REBOOT: "host rebooted",
    Basis.NAMESPACE: "its container is gone",
    Basis.SUPERVISOR: "its supervisor saw it end",
    Basis.SCHEDULER: "the scheduler's word",
    Basis.HEARTBEAT: "heartbeat",
    Basis.RHYTHM: "silent past its own rhythm",
    Basis.STALE_AFTER: "silent longer than --stale-after",
    Basis.ACTIVITY: "recent activity, no proof of life",
    Basis.CLOCK: "times in the future",
    Basis.NONE: "too little evidence",
}

Cell = str | tuple[str, str]
"""A cell: its text, or its text and a Rich style name (``"bold red"``)."""


@dataclass(frozen=True)
class Column:
    """A column: its header, and whether its cells may fold onto several lines."""

    header: str
    fold: bool = False
    right: bool = False


@dataclass
class Screen:
    """Where a table goes and how much of it fits.

    Attributes:
        out: the stream tables are written to.
        width: columns available (a terminal's width; 140 when stdout is not a terminal).
        rows: rows a table may have before it is grouped.
        color: Rich's colour system, ``None`` for no styles at all (not a terminal).
        no_color: styles without colours (``NO_COLOR``).
    """

    out: TextIO
    width: int
    rows: int
    color: ColorSystem | None
    no_color: bool = False
    on_broken_pipe: Callable[[], None] | None = None
    _styles: dict[str, tuple[str, str]] = field(default_factory=dict)

    @classmethod
    def of(cls, console: Console) -> Screen:
        """The screen a Rich console writes to."""
        terminal = console.is_terminal
        rows = max(MIN_ROWS, console.height - SUMMARY_LINES) if terminal else PIPE_ROWS
        system = console.color_system
        color = COLOR_SYSTEMS[system] if system else None
        file = cast(TextIO, console.file)
        return cls(file, console.width, rows, color, console.no_color, console.on_broken_pipe)

    def styled(self, text: str, style: str) -> str:
        """``text`` in ``style`` (plain text when there is no colour)."""
        if self.color is None or not style:
            return text
        codes = self._styles.get(style)
        if codes is None:
            marker = "\x00"
            parsed = Style.parse(style)
            if self.no_color:
                parsed = parsed.without_color
            rendered = parsed.render(marker, color_system=self.color)
            before, _, after = rendered.partition(marker)
            codes = self._styles[style] = (before, after)
        return f"{codes[0]}{text}{codes[1]}"

    def write(self, lines: Iterable[str]) -> None:
        """Write lines, each ending in a newline. A reader that went away (``| head``) ends
        the command the way Rich's console does."""
        out = self.out
        try:
            for line in lines:
                out.write(line + "\n")
            out.flush()
        except BrokenPipeError:
            if self.on_broken_pipe is None:
                raise
            self.on_broken_pipe()


# -- layout --------------------------------------------------------------------------------


def clean(text: str) -> str:
    """A cell's text on one line that cannot control the terminal (:func:`mltidy.text.safe`:
    controls, bidi overrides and escapes shown as escapes; very long text cut)."""
    return safe(text)


def _fold(text: str, width: int) -> list[str]:
    """A folding cell's lines: words wrapped, long words cut (by terminal cells)."""
    if cell_len(text) <= width:
        return [text]
    if len(text) == cell_len(text):
        return textwrap.wrap(text, width, break_on_hyphens=False) or [""]
    lines: list[str] = []
    for word_line in textwrap.wrap(text, width, break_long_words=False) or [""]:
        lines.extend(chop_cells(word_line, width) if cell_len(word_line) > width else [word_line])
    return lines


def _widths(columns: Sequence[Column], natural: list[int], width: int) -> list[int]:
    """Column widths: the natural ones when they fit, else the folding columns shrunk, widest
    first, to :data:`MIN_FOLD` and then, on a very narrow screen, to :data:`NARROWEST` (what
    still does not fit overflows)."""
    widths = list(natural)
    excess = sum(widths) + len(GAP) * (len(columns) - 1) - width
    for floor in (MIN_FOLD, NARROWEST):
        while excess > 0:
            folding = [i for i, c in enumerate(columns) if c.fold and widths[i] > floor]
            if not folding:
                break
            widest = max(folding, key=lambda i: widths[i])
            runner_up = max((widths[i] for i in folding if i != widest), default=floor)
            target = max(floor, runner_up, widths[widest] - excess)
            if target >= widths[widest]:
                target = widths[widest] - 1
            excess -= widths[widest] - target
            widths[widest] = target
    return widths


def table_lines(
    columns: Sequence[Column], rows: Sequence[Sequence[Cell]], screen: Screen
) -> list[str]:
    """The lines of a table: a bold header, then one or more lines per row (the header and the
    cells of folding columns fold alike)."""
    texts = [[c.header for c in columns]]
    texts += [[clean(c if isinstance(c, str) else c[0]) for c in row] for row in rows]
    styles = [["bold"] * len(columns)]
    styles += [[c[1] if isinstance(c, tuple) else "" for c in row] for row in rows]
    natural = [0] * len(columns)
    for row in texts:
        for i, text in enumerate(row):
            size = cell_len(text)
            if size > natural[i]:
                natural[i] = size
    widths = _widths(columns, natural, screen.width)
    last = len(columns) - 1

    def line(cells: Sequence[str], row_styles: Sequence[str]) -> str:
        parts = []
        for i, text in enumerate(cells):
            pad = widths[i] - cell_len(text)
            if pad < 0:
                padded = set_cell_size(text, widths[i])
            elif columns[i].right:
                padded = " " * pad + text
            else:
                padded = text if i == last else text + " " * pad  # no trailing blanks
            style = row_styles[i]
            parts.append(screen.styled(padded, style) if style and text else padded)
        return GAP.join(parts)

    folding = [i for i, c in enumerate(columns) if c.fold]
    lines: list[str] = []
    for row, row_styles in zip(texts, styles, strict=True):
        folded = {i: _fold(row[i], widths[i]) for i in folding if cell_len(row[i]) > widths[i]}
        if not folded:
            lines.append(line(row, row_styles))
            continue
        height = max(len(parts) for parts in folded.values())
        for n in range(height):
            cells = [
                (folded[i][n] if n < len(folded[i]) else "")
                if i in folded
                else (row[i] if n == 0 else "")
                for i in range(len(columns))
            ]
            lines.append(line(cells, row_styles))
    return lines


def print_table(
    screen: Screen,
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    title: str | None = None,
) -> None:
    """Write a table (with a bold title line when given)."""
    lines = table_lines(columns, rows, screen)
    if title:
        lines.insert(0, screen.styled(title, "bold"))
    screen.write(lines)


# -- records (scan) ------------------------------------------------------------------------


def short_id(record_kind: RecordKind, record_id: str, trial_number: int | None) -> str:
    """The id people see: a trial's number, a run id's first 8 characters."""
    if record_kind is RecordKind.OPTUNA_TRIAL:
        return f"#{trial_number}"
    return record_id[:8]


def _kind(kind: RecordKind) -> str:
    return "run" if kind is RecordKind.MLFLOW_RUN else "trial"


RECORD_COLUMNS = (
    Column("verdict"),
    Column("kind"),
    Column("experiment/study", fold=True),
    Column("name", fold=True),
    Column("id"),
    Column("reason", fold=True),
)


def record_rows(records: Iterable[JudgedRecord]) -> list[list[Cell]]:
    """One row per record."""
    rows: list[list[Cell]] = []
    for item in records:
        record, verdict = item.record, item.verdict
        rows.append(
            [
                (verdict.kind.value, VERDICT_STYLE[verdict.kind]),
                _kind(record.kind),
                record.container,
                record.name,
                short_id(record.kind, record.id, record.trial_number),
                verdict.reason,
            ]
        )
    return rows


@dataclass
class _Group:
    """The records of one experiment or study, summed up."""

    kind: RecordKind
    container: str
    count: int = 0
    keys: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    oldest: tuple[datetime, str] | None = None

    def add(self, key: str, reason: str, started: datetime | None, name: str) -> None:
        self.count += 1
        self.keys[key] += 1
        self.reasons[reason] += 1
        if started is not None and (self.oldest is None or started < self.oldest[0]):
            self.oldest = (started, name)

    def common(self) -> str:
        reason, n = self.reasons.most_common(1)[0]
        return f"{reason} ({n} of {self.count})" if n < self.count else reason

    def age(self, now: datetime) -> str:
        if self.oldest is None:
            return "-"
        started, name = self.oldest
        return f"{format_duration(now - started)} ago ({name})"


def _grouped(
    items: Iterable[tuple[RecordKind, str, str, str, datetime | None, str]],
) -> list[_Group]:
    """Groups per (kind, container), largest first. ``items``: kind, container, the key
    counted per column, the reason, the start time and the name of each record."""
    groups: dict[tuple[RecordKind, str], _Group] = {}
    for kind, container, key, reason, started, name in items:
        group = groups.get((kind, container))
        if group is None:
            group = groups[(kind, container)] = _Group(kind, container)
        group.add(key, reason, started, name)
    return sorted(groups.values(), key=lambda g: (-g.count, g.kind.value, g.container))


def _verdict_reason(item: JudgedRecord) -> str:
    verdict = item.verdict
    return f"{verdict.kind.value}: {BASIS_WORDS.get(verdict.basis, verdict.basis.value)}"


def _group_lines(
    screen: Screen,
    groups: list[_Group],
    keys: Sequence[tuple[str, str]],
    what: str,
    title: str | None = None,
) -> None:
    """A table of groups: kind, experiment/study, count, one column per key that occurs,
    the oldest, the most common reason. Past the screen's rows, the rest is one line."""
    present = [(key, style) for key, style in keys if any(g.keys[key] for g in groups)]
    columns = [
        Column("kind"),
        Column("experiment/study", fold=True),
        Column(what, right=True),
        *(Column(key, right=True) for key, _ in present),
        Column("oldest start", fold=True),
        Column("most common reason", fold=True),
    ]
    shown = groups[: max(1, screen.rows - 2)]
    now = utc_now()
    rows: list[list[Cell]] = [
        [
            _kind(g.kind),
            g.container,
            f"{g.count:,}",
            *((f"{g.keys[key]:,}", style) if g.keys[key] else "" for key, style in present),
            g.age(now),
            g.common(),
        ]
        for g in shown
    ]
    rest = groups[len(shown) :]
    if rest:
        rows.append(
            [
                "",
                f"... {len(rest):,} more",
                f"{sum(g.count for g in rest):,}",
                *(f"{sum(g.keys[key] for g in rest):,}" for key, _ in present),
                "",
                "",
            ]
        )
    print_table(screen, columns, rows, title)


def print_records(records: Sequence[JudgedRecord], screen: Screen, *, show_all: bool) -> bool:
    """The records, one per row when they fit (or ``show_all``), else grouped per experiment
    and study. Returns whether they were grouped."""
    if show_all or len(records) <= screen.rows:
        print_table(screen, RECORD_COLUMNS, record_rows(records))
        return False
    groups = _grouped(
        (
            r.record.kind,
            r.record.container,
            r.verdict.kind.value,
            _verdict_reason(r),
            r.record.started_at,
            r.record.name,
        )
        for r in records
    )
    keys = [(kind.value, VERDICT_STYLE[kind]) for kind in VerdictKind]
    _group_lines(screen, groups, keys, "records")
    return True


def grouped_hint(count: int, what: str) -> str:
    """What the summary says under a grouped table."""
    return (
        f"The {count:,} {what} do not fit the screen, so they are grouped per experiment and "
        "study: --all lists each one; --format json or jsonl gives them all to programs."
    )


# -- close ---------------------------------------------------------------------------------

CHANGE_COLUMNS = (
    Column("status"),
    Column("kind"),
    Column("experiment/study: name", fold=True),
    Column("id"),
    Column("new state"),
    Column("end time"),
    Column("evidence", fold=True),
)
SKIP_COLUMNS = (
    Column("verdict"),
    Column("kind"),
    Column("experiment/study: name", fold=True),
    Column("id"),
    Column("why", fold=True),
)


def _end_time(value: datetime) -> str:
    return (iso(value) or "-").replace("+00:00", "Z").replace("T", " ")


def _record_cells(record: Record) -> list[Cell]:
    """Which record a change or skip is about: its kind, where and what it is, its id."""
    return [
        _kind(record.kind),
        f"{record.container}: {record.name}",
        short_id(record.kind, record.id, record.trial_number),
    ]


def change_rows(changes: Iterable[Change]) -> list[list[Cell]]:
    """One row per planned (or made) change."""
    rows: list[list[Cell]] = []
    for change in changes:
        record, verdict = change.item.record, change.item.verdict
        evidence = f"{verdict.kind.value}: {verdict.reason}"
        if change.detail:
            evidence += f" ({change.detail})"
        rows.append(
            [
                (change.outcome.value, OUTCOME_STYLE[change.outcome]),
                *_record_cells(record),
                change.new_state,
                _end_time(change.end_time),
                evidence,
            ]
        )
    return rows


def skip_rows(skipped: Iterable[Skip]) -> list[list[Cell]]:
    """One row per record left alone."""
    rows: list[list[Cell]] = []
    for skip in skipped:
        record, verdict = skip.item.record, skip.item.verdict
        rows.append(
            [
                (verdict.kind.value, VERDICT_STYLE[verdict.kind]),
                *_record_cells(record),
                skip.why,
            ]
        )
    return rows


def _why_head(why: str) -> str:
    """The general part of why a record was left alone (before the record's own details)."""
    return why.split(":", 1)[0].split(";", 1)[0]


def _change_reason(change: Change) -> str:
    if change.outcome is Outcome.FAILED and change.detail:
        return f"failed: {change.detail}"
    return _verdict_reason(change.item)


def changes_title(report: CloseReport) -> str:
    """The title of the changes table."""
    return "Plan (dry run: nothing changed)" if report.dry_run else "Changes"


def print_close_report(report: CloseReport, screen: Screen, *, show_all: bool) -> bool:
    """The plan (or what was done) and the records left alone, each grouped per experiment
    and study when the two do not fit the screen together (``show_all``: never). Returns
    whether something was grouped."""
    changes, skipped = report.changes, report.skipped
    crowded = not show_all and len(changes) + len(skipped) > screen.rows
    share = screen.rows if not (changes and skipped) else screen.rows // 2
    grouped = False
    if changes:
        if crowded and len(changes) > share:
            groups = _grouped(
                (
                    c.item.record.kind,
                    c.item.record.container,
                    c.outcome.value,
                    _change_reason(c),
                    c.item.record.started_at,
                    c.item.record.name,
                )
                for c in changes
            )
            keys = [(o.value, OUTCOME_STYLE[o]) for o in Outcome]
            _group_lines(screen, groups, keys, "to close", changes_title(report))
            grouped = True
        else:
            print_table(screen, CHANGE_COLUMNS, change_rows(changes), changes_title(report))
    if skipped:
        if crowded and len(skipped) > share:
            groups = _grouped(
                (
                    s.item.record.kind,
                    s.item.record.container,
                    s.item.verdict.kind.value,
                    _why_head(s.why),
                    s.item.record.started_at,
                    s.item.record.name,
                )
                for s in skipped
            )
            keys = [(kind.value, VERDICT_STYLE[kind]) for kind in VerdictKind]
            _group_lines(screen, groups, keys, "left alone", "Left alone")
            grouped = True
        else:
            print_table(screen, SKIP_COLUMNS, skip_rows(skipped), "Left alone")
    return grouped


def failure_lines(failed: Sequence[Change], limit: int) -> list[str]:
    """Error lines for changes that failed: one per record, or, past ``limit``, one per
    store and cause."""
    if len(failed) <= limit:
        return [
            f"mltidy: error: could not close {clean(c.item.record.name)} "
            f"({clean(c.item.record.id)}): {clean(c.detail or 'unknown error')}"
            for c in failed
        ]
    causes = Counter((c.item.record.store, c.detail or "unknown error") for c in failed)
    return [
        f"mltidy: error: could not close {n:,} records of {clean(store)}: {clean(detail)}"
        for (store, detail), n in causes.most_common()
    ]


__all__ = [
    "PIPE_ROWS",
    "Column",
    "Screen",
    "clean",
    "failure_lines",
    "grouped_hint",
    "print_close_report",
    "print_records",
    "print_table",
    "table_lines",
]
