"""``mltidy --help`` must stay instant: it may not import mlflow, optuna, sqlalchemy or apprise."""

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
COMMAND_NAMES = ("scan", "close", "declutter", "link", "watch", "run", "doctor", "demo")
#: Command modules that render with another command's module.
SHARED = {"demo": {"mltidy.cli.link"}}


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        [],
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
    assert "Usage" in done.stdout
    # Commands load lazily: the root's help imports none of them, a command's help its own.
    line = next(x for x in done.stderr.splitlines() if x.startswith("CLI="))
    loaded = set(json.loads(line.removeprefix("CLI="))) - ROOT_MODULES
    commands = {m for m in loaded if m.removeprefix("mltidy.cli.") in COMMAND_NAMES}
    if not args or args[0] == "--help":
        assert loaded == set()
    else:
        assert commands - SHARED.get(args[0], set()) == {f"mltidy.cli.{args[0]}"}
