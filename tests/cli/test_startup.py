"""``mltidy --help`` must stay instant: it may not import mlflow, optuna, sqlalchemy or apprise,
nor what Typer's help renderer imports for features mltidy does not use (Markdown, tracebacks)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import json, sys
sys.argv = ["mltidy", *json.loads(sys.argv[1])]
from mltidy.cli.app import main
try:
    main()
except SystemExit:
    pass
heavy = {"mlflow", "optuna", "sqlalchemy", "apprise"}
heavy = sorted({m.split(".")[0] for m in sys.modules} & heavy)
sys.stderr.write("HEAVY=" + json.dumps(heavy) + "\\n")
commands = sorted(m for m in sys.modules if m.startswith("mltidy.cli.") and m.count(".") == 2)
sys.stderr.write("CLI=" + json.dumps(commands) + "\\n")
unused = {"rich.markdown", "rich.traceback", "markdown_it", "pygments", "attr"}
unused = sorted(m for m in sys.modules if m in unused or m.split(".")[0] in unused)
sys.stderr.write("UNUSED=" + json.dumps(unused) + "\\n")
"""
#: The CLI modules every invocation imports (the root and what it wires commands with).
ROOT_MODULES = {
    "mltidy.cli.app",
    "mltidy.cli.boundary",
    "mltidy.cli.coercion",
    "mltidy.cli.core",
    "mltidy.cli.errors",
    "mltidy.cli.state",
}
#: Imported by whatever shows text through Rich, help included (not by a scan in JSON).
RICH_MODULES = {"mltidy.cli.console"}
COMMAND_NAMES = ("scan", "close", "declutter", "link", "watch", "run", "doctor", "demo")
#: Command modules that render with another command's module.
SHARED = {"demo": {"mltidy.cli.link"}}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        [],
        ["nosuch"],
        *([c, "--help"] for c in COMMAND_NAMES),
    ],
)
def test_help_imports_nothing_heavy(args: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", PROBE, json.dumps(args)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    line = next(x for x in done.stderr.splitlines() if x.startswith("HEAVY="))
    assert json.loads(line.removeprefix("HEAVY=")) == []
    assert "Usage" in (done.stderr if args == ["nosuch"] else done.stdout)
    line = next(x for x in done.stderr.splitlines() if x.startswith("UNUSED="))
    assert json.loads(line.removeprefix("UNUSED=")) == []
    # Commands load lazily: the root's help imports none of them, a command's help its own.
    line = next(x for x in done.stderr.splitlines() if x.startswith("CLI="))
    loaded = set(json.loads(line.removeprefix("CLI="))) - ROOT_MODULES - RICH_MODULES
    commands = {m for m in loaded if m.removeprefix("mltidy.cli.") in COMMAND_NAMES}
    if not args or args[0] in ("--help", "nosuch"):
        assert loaded == set()
    else:
        assert commands - SHARED.get(args[0], set()) == {f"mltidy.cli.{args[0]}"}


STAND_INS = """
import sys
from mltidy.cli import core
core._UNUSED_BY_HELP = {**core._UNUSED_BY_HELP, **dict([sys.argv[1:]])}
core.load_help_renderer()
import rich.markdown, rich.traceback
from typer import rich_utils
assert "rich.markdown" in sys.modules and "rich.traceback" in sys.modules
# Used, the stand-ins are the real classes.
assert isinstance(rich_utils.Markdown("*x*"), rich.markdown.Markdown)
try:
    1 / 0
except ZeroDivisionError as exc:
    config = type("C", (), {"pretty_exceptions_show_locals": False})()
    assert isinstance(rich_utils.get_traceback(exc, config, []), rich.traceback.Traceback)
print("ok")
"""


@pytest.mark.parametrize(
    "stand_in",
    [
        ["rich.markdown", "Markdown"],
        # A Typer that imports another name from them: imported whole, no stand-ins.
        ["rich.markdown", "NotImportedByTyper"],
    ],
)
def test_help_renderer_stand_ins_become_the_real_classes(stand_in: list[str]) -> None:
    done = subprocess.run(
        [sys.executable, "-c", STAND_INS, *stand_in],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == "ok\n"
