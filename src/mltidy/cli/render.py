"""One scan result, four renderings: a table (``tables.py``), JSON, JSON lines and Markdown.

The JSON shapes are a contract (docs/json.md); the table and Markdown are for people.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any, TextIO

from mltidy.model import JudgedRecord, Record, RecordKind, StoreStatus, iso
from mltidy.text import md_code, md_escape, md_link, safe

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # pragma: no cover
    from typing_extensions import assert_never

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text


class OutputFormat(str, Enum):
    """How a report is printed on stdout."""

    TABLE = "table"
    JSON = "json"
    JSONL = "jsonl"
    MARKDOWN = "markdown"

    @property
    def is_machine(self) -> bool:
        """Formats for programs: nothing but the report may reach stdout."""
        if self is OutputFormat.TABLE or self is OutputFormat.MARKDOWN:
            return False
        if self is OutputFormat.JSON or self is OutputFormat.JSONL:
            return True
        assert_never(self)


def stdout_console(*, markup: bool = False) -> Console:
    """A console for reports; wide enough for tables when stdout is not a terminal."""
    from mltidy.cli.console import SafeConsole

    console = SafeConsole(soft_wrap=False, highlight=False, markup=markup, emoji=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 140
    return console


def stderr_console(*, markup: bool = False) -> Console:
    """A console for progress and human summaries."""
    from mltidy.cli.console import SafeConsole

    return SafeConsole(stderr=True, highlight=False, markup=markup, emoji=False)


#: Headers of columns that hold names from a store.
NAME_HEADERS = frozenset(
    {"experiment/study", "experiment/study: name", "experiment", "name", "study", "run"}
)
#: The widest such a column gets: a hostile name of a thousand characters folds instead of
#: squeezing the other columns to nothing.
NAME_WIDTH = 48


def write_json_document(payload: Mapping[str, Any]) -> None:
    """One JSON object on stdout, indented (``-f json``)."""
    sys.stdout.write(json.dumps(payload, indent=2) + "\n")


def write_json_lines(rows: Iterable[Mapping[str, Any]]) -> None:
    """One JSON object per line on stdout (``-f jsonl``)."""
    for row in rows:
        sys.stdout.write(json.dumps(row) + "\n")


def print_tables(*tables: Table | None) -> None:
    """The tables on stdout, leaving out the ``None`` ones (nothing to show)."""
    out = stdout_console()
    for table in tables:
        if table is not None:
            out.print(table)


def print_missing(given: Iterable[str], what: str) -> None:
    """One line on stderr for each id given with ``--run``/``--trial`` that named no ``what``
    of the selection."""
    err = stderr_console()
    for ref in given:
        err.print(f"  {ref}: no {what} of the selection has this id", soft_wrap=True)


def add_column(table: Table, header: str) -> None:
    """A short column that never wraps, or, for names from a store, one that folds."""
    if header in NAME_HEADERS:
        table.add_column(header, overflow="fold", max_width=NAME_WIDTH)
    else:
        table.add_column(header, no_wrap=True)


def cell(value: object, style: str = "") -> Text:
    """A value from a store as a table cell: literal text, controls and bidi shown escaped."""
    from rich.text import Text

    return Text(safe(value), style=style)


def record_dict(item: JudgedRecord) -> dict[str, Any]:
    """A judged record in the JSON contract's shape (docs/json.md), field for field."""
    record = item.record
    return {
        "kind": record.kind.value,
        "store": record.store,
        "id": record.id,
        "name": record.name,
        "container": record.container,
        "state": record.state,
        "started_at": iso(record.started_at),
        "last_activity_at": iso(record.last_activity_at),
        "verdict": item.verdict.kind.value,
        "basis": item.verdict.basis.value,
        "reason": item.verdict.reason,
        "url": item.url,
        "trial_number": record.trial_number,
    }


def store_dict(status: StoreStatus) -> dict[str, Any]:
    """A store's status in the JSON contract's shape."""
    return {"uri": status.uri, "kind": status.kind.value, "ok": status.ok, "error": status.error}


#: The version of the JSON contract (docs/json.md): 2 added the ``active`` verdict, ``basis``
#: and milliseconds in times.
JSON_VERSION = 2
_INDENTED = json.JSONEncoder(indent=2)
_SCALAR = json.JSONEncoder()
_quote = json.encoder.encode_basestring_ascii  # what the encoder itself uses for str


def _scalar(value: Any) -> str:
    """``json.dumps(value)`` of a scalar; the common types without the encoder's set-up, which
    costs more than encoding one value."""
    if value is None:
        return "null"
    kind = type(value)
    if kind is str:
        return _quote(value)
    if kind is int:
        return int.__repr__(value)
    if kind is bool:
        return "true" if value else "false"
    return _SCALAR.encode(value)


def indented(value: Any, depth: int = 0) -> str:
    """``json.dumps(value, indent=2)``, text for text, as if ``depth`` spaces deep.

    Python's json module encodes indented output in pure Python (its C encoder only writes
    compact JSON), about ten times slower: with ten thousand records that was seconds. Flat
    objects (every record, change and store is one) are written here key by key, each scalar
    through the C encoder; anything else goes to the json module.
    """
    if (
        isinstance(value, dict)
        and value
        and all(v is None or isinstance(v, (str, int, float)) for v in value.values())
    ):
        pad = "\n" + " " * (depth + 2)
        body = ",".join(f"{pad}{_quote(str(k))}: {_scalar(v)}" for k, v in value.items())
        return "{" + body + "\n" + " " * depth + "}"
    text = _INDENTED.encode(value)
    return text.replace("\n", "\n" + " " * depth) if depth else text


def write_json(
    stores: Sequence[StoreStatus], records: Sequence[JudgedRecord], out: TextIO | None = None
) -> None:
    """The whole scan as one JSON object, text for text what ``json.dumps(payload, indent=2)``
    gives, but written record by record: with 10,000 records the whole document as dicts and
    then as one string would double the memory a large scan needs."""
    out = out or sys.stdout
    out.write(f'{{\n  "version": {JSON_VERSION},\n  "stores": ')
    out.write(json.dumps([store_dict(s) for s in stores], indent=2).replace("\n", "\n  "))
    out.write(',\n  "records": ')
    if not records:
        out.write("[]")
    else:
        for index, item in enumerate(records):
            out.write(",\n    " if index else "[\n    ")
            out.write(indented(record_dict(item), 4))
        out.write("\n  ]")
    out.write("\n}\n")


def write_jsonl_record(item: JudgedRecord, out: TextIO | None = None) -> None:
    """One record as one line, flushed, so large scans stream."""
    out = out or sys.stdout
    out.write(json.dumps(record_dict(item)) + "\n")
    out.flush()


def shown_id(record: Record) -> str:
    """A record's id in a report: the whole run id, ``#N`` for a trial (what ``--trial`` and
    ``--run`` take; the trial id is not what people call a trial)."""
    if record.kind is RecordKind.OPTUNA_TRIAL:
        return f"#{record.trial_number}"
    return record.id


def markdown(stores: Sequence[StoreStatus], records: Sequence[JudgedRecord]) -> str:
    """A Markdown report (for CI job summaries and pull-request comments)."""
    lines = ["## mltidy scan", ""]
    for status in stores:
        state = "ok" if status.ok else f"**failed**: {md_escape(status.error or '')}"
        lines.append(f"- {status.kind.value} store {md_code(status.uri)}: {state}")
    lines.append("")
    if not records:
        lines.append("No unfinished runs or trials.")
        return "\n".join(lines) + "\n"
    lines += [
        "| verdict | kind | experiment/study | name | id | started | reason |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for item in records:
        record = item.record
        name = md_link(md_code(record.name, table=True), item.url)
        kind = "run" if record.kind is RecordKind.MLFLOW_RUN else "trial"
        lines.append(
            f"| {item.verdict.kind.value} | {kind} | {md_code(record.container, table=True)} | "
            f"{name} | {md_code(shown_id(record), table=True)} | {iso(record.started_at) or '-'} | "
            f"{md_escape(item.verdict.reason)} |"
        )
    return "\n".join(lines) + "\n"
