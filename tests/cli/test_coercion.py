"""Option values are converted as Typer converts them, without importing pydantic."""

from __future__ import annotations

import json
import subprocess
import sys
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from typer._click import Context
from typer._click.exceptions import BadParameter
from typer._coercion import build_runtime_param, resolve_type_descriptor
from typer.core import TyperCommand
from typer.models import OptionInfo

from killed_jobs import KilledJobs
from mltidy.cli.coercion import lighten
from mltidy.cli.render import OutputFormat
from mltidy.notify.events import EventKind

PROBE = """
import sys
sys.argv = ["mltidy", *sys.argv[1:]]
from mltidy.cli.app import main
try:
    main()
except SystemExit as exc:
    code = exc.code
sys.stderr.write(f"PYDANTIC={'pydantic' in sys.modules} CODE={code}\\n")
"""


class _Param:
    """What a converter is handed besides the value (a single-valued option)."""

    multiple = False
    nargs = 1
    name = "x"

    def get_error_hint(self, ctx: Context) -> str:
        return "'--x'"


def _typer(annotation: Any, info: OptionInfo, value: Any) -> Any:
    descriptor = resolve_type_descriptor(annotation, info)
    return build_runtime_param(descriptor)._coerce_value(
        value, _Param(), Context(TyperCommand("t"))
    )


def _plain(annotation: Any, info: OptionInfo, value: Any) -> Any:
    class Holder:
        type_descriptor = resolve_type_descriptor(annotation, info)
        _runtime_param = None

    holder = Holder()
    lighten([holder])
    assert holder._runtime_param is not None
    return holder._runtime_param._coerce_value(value, _Param(), Context(TyperCommand("t")))


@pytest.mark.parametrize(
    ("annotation", "info", "value"),
    [
        (str, OptionInfo(), "1h"),
        (list[str], OptionInfo(), ["a", "b[c]"]),
        (list[str], OptionInfo(), ()),
        (int, OptionInfo(min=0), "3"),
        (int, OptionInfo(min=1), "1"),
        (OutputFormat, OptionInfo(case_sensitive=False), "JSON"),
        (OutputFormat, OptionInfo(case_sensitive=False), "markdown"),
        (list[EventKind], OptionInfo(case_sensitive=False), ["run-finished", "DEAD"]),
    ],
)
def test_plain_values_convert_as_typer_converts_them(
    annotation: Any, info: OptionInfo, value: Any
) -> None:
    assert _plain(annotation, info, value) == _typer(annotation, info, value)


@pytest.mark.parametrize(
    ("annotation", "info", "value"),
    [
        (int, OptionInfo(min=0), "-1"),
        (int, OptionInfo(min=0), "three"),
        (int, OptionInfo(min=0), "²"),
        (OutputFormat, OptionInfo(case_sensitive=False), "xml"),
        (list[EventKind], OptionInfo(case_sensitive=False), ["run-finished", "nope"]),
    ],
)
def test_a_bad_value_gets_typers_own_error(annotation: Any, info: OptionInfo, value: Any) -> None:
    with pytest.raises(BadParameter) as typer_said:
        _typer(annotation, info, value)
    with pytest.raises(BadParameter) as plain_said:
        _plain(annotation, info, value)
    assert str(plain_said.value) == str(typer_said.value)


def test_paths_are_left_to_typer(tmp_path: Path) -> None:
    info = OptionInfo(dir_okay=False)
    given = str(tmp_path / "plan.json")
    assert _plain(Path, info, given) == _typer(Path, info, given) == Path(given)


class Color(str, Enum):
    RED = "red"


def test_case_sensitive_choices_stay_case_sensitive() -> None:
    info = OptionInfo(case_sensitive=True)
    assert _plain(Color, info, "red") is Color.RED
    with pytest.raises(BadParameter):
        _plain(Color, info, "RED")


@pytest.mark.parametrize(
    "args",
    [
        ["scan", "-f", "JSON", "--stale-after", "2h", "-e", "tuning", "-s", "tuning"],
        ["close", "-f", "json", "--max-retry", "2", "--as", "failed", "--include-stale"],
        ["watch", "--once", "-f", "jsonl", "--skip", "run-finished", "--budget", "3"],
    ],
)
def test_a_command_runs_without_importing_pydantic(
    sqlite_world: KilledJobs, tmp_path: Path, args: list[str]
) -> None:
    stores = ["--mlflow", sqlite_world.mlflow_uri, "--optuna", sqlite_world.optuna_url]
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args, *stores],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={
            "PATH": "/usr/bin:/bin",
            "HOME": str(tmp_path),
            "MLTIDY_WATCH_STATE": str(tmp_path / "w.db"),
        },
    )
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("PYDANTIC=False"), (done.args, done.stderr)
    assert "CODE=0" in last, done.stderr  # every value was understood
    if "jsonl" in args:
        json.loads(done.stdout.splitlines()[0])  # JSON came out, as asked
    else:
        json.loads(done.stdout)
