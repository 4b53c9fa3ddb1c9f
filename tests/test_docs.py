"""Every command is documented, and the generated CLI reference matches --help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mltidy.cli.app import COMMANDS

ROOT = Path(__file__).resolve().parent.parent


def test_every_command_has_help_and_a_docs_page() -> None:
    for name, lazy in COMMANDS.items():
        assert lazy.callback().__doc__, name
        page = ROOT / "docs" / f"{name}.md"
        assert page.is_file(), f"docs/{name}.md is missing"
        assert f"mltidy {name}" in page.read_text()


def test_cli_reference_is_current() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "docs" / "gen_cli_reference.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr


def test_readme_starts_with_the_two_commands() -> None:
    text = (ROOT / "README.md").read_text()
    blocks = text.split("```console\n")
    assert "mltidy demo" in blocks[1].split("```")[0]
    assert "python -m pytest" in blocks[2].split("```")[0]
