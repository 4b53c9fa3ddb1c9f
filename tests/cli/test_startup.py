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
"""


@pytest.mark.parametrize(
    "args",
    [
        ["--help"],
        [],
        *(
            [c, "--help"]
            for c in ("scan", "close", "declutter", "link", "watch", "run", "doctor", "demo")
        ),
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
