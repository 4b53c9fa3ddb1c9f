"""In a real terminal (a pseudo-terminal, so Rich colours its output): the only escape
sequences are mltidy's own styles, never the ones hostile names carry."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from hostile.inputs import BIDI_CONTROLS
from hostile.sandbox import Sandbox, Template

EXE = Path(sys.executable).parent / "mltidy"
#: What the hostile names would make a terminal do, byte for byte.
PAYLOADS = (b"\x1b]52", b"\x1b]8;", b"\x1b[2J", b"\x1b[H", b"\xc2\x9b", b"\x1b[31m")


def _in_terminal(args: list[str], cwd: Path, env: dict[str, str]) -> tuple[int, bytes]:
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [str(EXE), *args],
        cwd=cwd,
        env=env,
        stdin=follower,
        stdout=follower,
        stderr=follower,
        close_fds=True,
    )
    os.close(follower)
    output = b""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([leader], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: the process is gone
                break
            if not chunk:
                break
            output += chunk
        elif process.poll() is not None:
            break
    os.close(leader)
    return process.wait(timeout=30), output


@pytest.mark.parametrize(
    "args",
    [["scan"], ["close"], ["close", "--yes"], ["link"], ["watch", "--once"], ["doctor"]],
    ids=["scan", "close", "close-yes", "link", "watch", "doctor"],
)
def test_a_terminal_gets_only_mltidys_own_escapes(
    args: list[str],
    make_sandbox: Callable[[Template | None], Sandbox],
    names_template: Template,
) -> None:
    box = make_sandbox(names_template)
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLTIDY_", "MLFLOW_", "OPTUNA_")) and k != "PYTEST_CURRENT_TEST"
    }
    env.update(
        HOME=str(box.home), MLTIDY_STATE_DIR=str(box.state), TERM="xterm-256color", COLUMNS="160"
    )
    code, output = _in_terminal(args, box.root, env)
    assert code == 0, output.decode("utf-8", "replace")
    if args[0] in ("scan", "close", "doctor"):
        assert b"\x1b[" in output  # a terminal: Rich styles its tables
    for payload in PAYLOADS:
        assert payload not in output, (payload, output.decode("utf-8", "replace"))
    assert not BIDI_CONTROLS.findall(output.decode("utf-8", "replace"))
    assert b"\\x1b]52" in output or args in (["doctor"], ["link"])  # shown, escaped
