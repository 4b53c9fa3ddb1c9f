"""What every command does alike: a closed pipe ends quietly with 141, global options work on
either side of the command, JSON mode means JSON even for Click's own usage errors, help is
prose without fake metavars, and shell completion works (the installed entry point)."""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from killed_jobs import KilledJobs
from mltidy.backends.identity import sqlite_file
from mltidy.cli.app import COMMANDS, app
from mltidy.cli.core import reflow, requests_json
from mltidy.cli.errors import PIPE_CLOSED

MLTIDY = str(Path(sys.executable).with_name("mltidy"))
COMMAND_NAMES = list(COMMANDS)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MLTIDY, *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture(scope="module")
def crowded(sqlite_world: KilledJobs, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of a killed job's MLflow store with 3,000 more RUNNING runs (rows by hand, on top
    of the real ones): enough JSON lines to fill any pipe."""
    source = sqlite_file(sqlite_world.mlflow_uri)
    assert source is not None
    path = tmp_path_factory.mktemp("crowded") / "mlflow.db"
    shutil.copy(source, path)
    with sqlite3.connect(path) as conn:
        (template,) = conn.execute(
            "SELECT * FROM runs WHERE run_uuid = ?", (sqlite_world.sigkilled.run_id,)
        ).fetchall()
        columns = [c[1] for c in conn.execute("PRAGMA table_info(runs)")]
        at = columns.index("run_uuid")
        rows = []
        for _ in range(3000):
            row = list(template)
            row[at] = uuid.uuid4().hex
            rows.append(row)
        marks = ", ".join("?" * len(columns))
        conn.executemany(f"INSERT INTO runs VALUES ({marks})", rows)
    return path


def test_a_closed_pipe_ends_quietly_with_141(crowded: Path) -> None:
    done = subprocess.run(
        ["bash", "-c", f'"{MLTIDY}" scan -f jsonl --mlflow "{crowded}" | head -3; '
         'echo "status=${PIPESTATUS[0]}" >&2'],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )  # fmt: skip
    assert len(done.stdout.splitlines()) == 3
    assert all(json.loads(line)["kind"] == "mlflow_run" for line in done.stdout.splitlines())
    assert f"status={PIPE_CLOSED}" in done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert "Exception ignored" not in done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["scan", "--format", "json"],
        ["scan"],  # a Rich table
        ["scan", "-f", "markdown"],
        ["--help"],
        ["close", "--help"],
    ],
)
def test_every_kind_of_output_into_a_closed_pipe(crowded: Path, args: list[str]) -> None:
    stores = ["--mlflow", str(crowded)] if "--help" not in args else []
    child = subprocess.Popen(
        [MLTIDY, *args, *stores],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "COLUMNS": "200"},
    )
    assert child.stdout is not None and child.stderr is not None
    child.stdout.close()  # the reader is gone before anything was written
    err = child.stderr.read()
    assert child.wait(timeout=300) == PIPE_CLOSED, err
    assert "Traceback" not in err and "Exception ignored" not in err and "error" not in err


@pytest.mark.parametrize("where", ["before", "after"])
def test_global_options_work_before_or_after_the_command(tmp_path: Path, where: str) -> None:
    args = ["scan", "--stale-after", "soon", "--optuna", str(tmp_path / "x.log")]
    done = run("--debug", *args) if where == "before" else run(*args, "--debug")
    assert done.returncode == 2, done.stderr
    assert "Traceback" in done.stderr  # --debug shows it
    assert "mltidy: error: --stale-after: 'soon' is not a duration" in done.stderr
    assert "No such option" not in done.stderr
    quiet = run(*args)
    assert quiet.returncode == 2 and "Traceback" not in quiet.stderr


@pytest.mark.parametrize("command", ["scan", "close", "declutter", "link", "watch"])
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-f", "json", "--bogus"], "No such option: --bogus"),
        (["--format=jsonl", "--bogus"], "No such option: --bogus"),
        (["-fjson", "--older-than"], "requires an argument"),
    ],
)
def test_click_usage_errors_are_the_json_error_in_json_mode(
    command: str, args: list[str], message: str
) -> None:
    done = run(command, *args)
    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["code"] == "usage"
    assert message in error["message"]
    assert error["hint"] == f"see mltidy {command} --help"


def test_more_usage_errors_in_json_mode() -> None:
    for args, env, message in (
        (["scan", "--fail-on", "maybe", "-f", "json"], {}, "Invalid value for '--fail-on'"),
        (["scna", "-f", "json"], {}, "No such command 'scna'. Did you mean 'scan'?"),
        (["scan", "--bogus"], {"MLTIDY_FORMAT": "jsonl"}, "No such option: --bogus"),
        (["scan", "-f", "xml"], {}, None),  # not JSON mode: nothing on stdout
    ):
        done = run(*args, env=env)
        assert done.returncode == 2, (args, done.stderr)
        if message is None:
            assert done.stdout == ""
            continue
        assert message in json.loads(done.stdout)["error"]["message"]
        assert done.stderr  # the human form stays on stderr


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["-f", "json"], True),
        (["--format", "JSONL"], True),
        (["--format=json"], True),
        (["-fjsonl"], True),
        (["-f", "table"], False),
        (["--", "-f", "json"], False),
        ([], False),
    ],
)
def test_json_mode_is_read_from_the_command_line(args: list[str], expected: bool) -> None:
    assert requests_json(args, env={}) is expected
    assert requests_json([], env={"MLTIDY_FORMAT": "json"}) is True


def _help(*args: str) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": "250", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    return result.stdout


@pytest.mark.parametrize("command", [[], *([c] for c in COMMAND_NAMES)])
def test_help_is_prose_without_fake_metavars(command: list[str]) -> None:
    text = _help(*command)
    assert "<bool>" not in text
    assert "--debug" in text
    if command:
        callback = COMMANDS[command[0]].callback()
        doc = reflow(callback.__doc__ or "") or ""
        for paragraph in doc.split("\n\n")[:3]:
            if "\n" in paragraph or "[" in paragraph:
                continue  # a list, or Rich markup: not compared as plain text
            # 150 characters cross a line break of the docstring: on one line, it is prose
            head = paragraph[:150].rsplit(" ", 1)[0] if len(paragraph) > 150 else paragraph
            assert any(head in line for line in text.splitlines()), (head, text)


def test_the_root_help_lists_each_command_on_one_line() -> None:
    text = _help()
    for name, lazy in COMMANDS.items():
        assert re.search(rf"{name}\s+{re.escape(lazy.summary)}", text), name
    assert "--install-completion" in text and "--show-completion" in text


def test_summaries_are_the_first_paragraph_of_each_command() -> None:
    for name, lazy in COMMANDS.items():
        doc = reflow(lazy.callback().__doc__ or "") or ""
        assert doc.split("\n\n")[0].strip() == lazy.summary, name


def test_shell_completion(tmp_path: Path) -> None:
    # --show-completion detects the shell from the process tree (none under a test runner
    # started without one); the script it prints is the one this asks for by name.
    script = run(env={"_MLTIDY_COMPLETE": "source_bash"})
    assert script.returncode == 0
    assert "_MLTIDY_COMPLETE=complete_bash" in script.stdout
    for words, cword, expected in (
        ("mltidy sc", "1", "scan"),
        ("mltidy close --inc", "2", "--include-stale"),
        ("mltidy scan --fail-on d", "3", "dangling"),
    ):
        done = run(
            env={"_MLTIDY_COMPLETE": "complete_bash", "COMP_WORDS": words, "COMP_CWORD": cword}
        )
        assert done.returncode == 0
        assert expected in done.stdout.split(), (words, done.stdout)


def test_reflow_keeps_lists_and_marked_paragraphs() -> None:
    text = "One line\nand the next.\n\n- a\n- b\n\n\bkept\nas is"
    assert reflow(text) == "One line and the next.\n\n- a\n- b\n\n\bkept\nas is"
