"""Generate docs/cli.md from the CLI's own --help (the same source as the terminal's: the
commands' docstrings and options), or check that it is current.

Usage: python docs/gen_cli_reference.py [--write]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from typer.testing import CliRunner

from mltidy.cli.app import COMMANDS, app

TARGET = Path(__file__).with_name("cli.md")
HEADER = (
    "# CLI reference\n\n"
    "Generated from `mltidy --help` by `docs/gen_cli_reference.py`; do not edit by hand.\n\n"
    "Every command also takes `--debug` (tracebacks and debug messages) after its name, as the\n"
    "root does before it. Shell completion: `mltidy --install-completion` installs it for the\n"
    "shell you run it from (bash, zsh, fish, PowerShell); `mltidy --show-completion SHELL`\n"
    "prints the script instead.\n"
)


def command_names() -> list[str]:
    """Every command, in the order ``mltidy --help`` lists them."""
    return list(COMMANDS)


def render() -> str:
    """The whole reference as Markdown."""
    os.environ["COLUMNS"] = "100"
    os.environ["TERMINAL_WIDTH"] = "100"
    os.environ["NO_COLOR"] = "1"
    runner = CliRunner()
    parts = [HEADER]
    for args in [[], *([name] for name in command_names())]:
        result = runner.invoke(app, [*args, "--help"], env={"COLUMNS": "100", "NO_COLOR": "1"})
        title = " ".join(["mltidy", *args])
        body = "\n".join(line.rstrip() for line in result.stdout.strip("\n").splitlines())
        parts.append(f"\n## `{title}`\n\n```text\n{body}\n```\n")
    return "".join(parts)


def main() -> int:
    text = render()
    if "--write" in sys.argv:
        TARGET.write_text(text)
        return 0
    if not TARGET.exists() or TARGET.read_text() != text:
        sys.stderr.write(
            "docs/cli.md is out of date: run python docs/gen_cli_reference.py --write\n"
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
