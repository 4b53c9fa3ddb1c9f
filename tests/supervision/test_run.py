"""``mltidy run -- CMD``: real jobs under supervision, killed from outside with real signals.

The supervisor must pass signals on, exit with the job's code, and the moment the job dies close
the runs and trials it left RUNNING, naming the signal, and notify a real receiver.
"""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest
from typer.testing import CliRunner

from labs import Lab
from mltidy.cli.app import app
from receivers import HttpReceiver

MLTIDY = str(Path(sys.executable).with_name("mltidy"))
PY = sys.executable


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "OPTUNA_STORAGE")
    }
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def _query(db: str, sql: str, *args: object) -> list[tuple[object, ...]]:
    path = db.removeprefix("sqlite:///")
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)) as conn:
        return list(conn.execute(sql, args))


def _run_status(lab: Lab, run_id: str) -> str:
    return str(_query(lab.mlflow, "SELECT status FROM runs WHERE run_uuid = ?", run_id)[0][0])


def _run_tag(lab: Lab, run_id: str, key: str) -> str:
    rows = _query(lab.mlflow, "SELECT value FROM tags WHERE run_uuid = ? AND key = ?", run_id, key)
    return str(rows[0][0]) if rows else ""


def _trial_state(lab: Lab, number: int) -> str:
    rows = _query(lab.optuna, "SELECT state FROM trials WHERE number = ?", number)
    return str(rows[0][0])


def _default_signals() -> None:
    """In the supervisor: SIGINT and SIGQUIT as a shell's foreground command has them. The
    suite may itself run with them ignored (a background job of a shell without job control),
    which ``mltidy run`` rightly keeps for the job (test below): these tests send them."""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def _start(lab: Lab, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [MLTIDY, "run", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd or lab.root,
        env=_env(),
        preexec_fn=_default_signals,
    )


def _ready(proc: subprocess.Popen[str]) -> tuple[str, int]:
    """The job's ``ready RUN_ID TRIAL`` line (its stdout passes through mltidy untouched)."""
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("ready "), (line, proc.stderr.read() if proc.stderr else "")
    _, run_id, number = line.split()
    return run_id, int(number)


def test_a_job_killed_from_outside_is_closed_at_once_and_notified(
    lab: Lab, http_receiver: HttpReceiver
) -> None:
    url = http_receiver.url()
    proc = _start(
        lab,
        "--notify",
        url,
        "--mlflow",
        lab.mlflow,
        "--optuna",
        lab.optuna,
        "--",
        PY,
        *lab.worker(3000),
    )
    try:
        run_id, number = _ready(proc)
        (job,) = psutil.Process(proc.pid).children()
        assert _run_status(lab, run_id) == "RUNNING"
        os.kill(job.pid, signal.SIGKILL)
        killed = time.monotonic()
        while _run_status(lab, run_id) == "RUNNING" and time.monotonic() - killed < 30:
            time.sleep(0.02)
        took = time.monotonic() - killed
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert took < 3.0, f"closed {took:.2f} s after the kill"
    assert proc.returncode == 128 + 9
    assert _run_status(lab, run_id) == "KILLED"
    assert _trial_state(lab, number) == "FAIL"
    reason = _run_tag(lab, run_id, "mltidy.closed_reason")
    assert reason.startswith(
        f"dead: the supervisor (mltidy run) saw process {job.pid} (python -m mltidy.demo.worker) "
        "die on "
    )
    assert ": killed by SIGKILL (signal 9)" in reason
    assert "killed by SIGKILL (signal 9) after " in err
    assert f"closed run trial-{number} ({run_id[:8]}) in experiment tuning: now KILLED" in err
    assert f"closed trial {number} of study tuning: now FAIL" in err
    (message,) = http_receiver.wait_for(1)
    assert message.body["type"] == "failure"
    assert message.body["title"].startswith(
        "mltidy: job python -m mltidy.demo.worker was killed by SIGKILL (signal 9) on "
    )
    text = message.body["message"]
    assert f"  closed: run trial-{number} ({run_id[:8]}) in experiment tuning -> KILLED" in text
    assert f"  closed: trial {number} of study tuning -> FAIL" in text
    assert f"/#/experiments/1/runs/{run_id}" in text
    assert "mltidy run exits 137" in text


SIGNALLED = """
import pathlib, signal, sys, time
got = []
def handler(signum, frame):
    got.append(signum)
    pathlib.Path(sys.argv[1]).write_text(str(len(got)))
    time.sleep(0.5)  # a second, duplicated signal would land here
    sys.exit(42)
signal.signal(signal.SIGTERM, handler)
print("ready - 0", flush=True)
time.sleep(120)
"""


@pytest.fixture
def empty(tmp_path: Path) -> Lab:
    """A folder without stores: a job that tracks nothing."""
    folder = tmp_path / "empty"
    folder.mkdir()
    return Lab(folder)


def test_sigterm_is_passed_on_once_and_the_jobs_exit_code_returned(empty: Lab) -> None:
    count = empty.root / "count"
    proc = _start(empty, "--", PY, "-c", SIGNALLED, str(count))
    _ready(proc)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 42, err
    assert count.read_text() == "1"
    assert "exited with code 42 (mltidy passed on SIGTERM)" in err


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_job_that_dies_of_the_passed_signal_gives_128_plus_n(
    empty: Lab, sig: signal.Signals, code: int
) -> None:
    script = "import time; print('ready - 0', flush=True); time.sleep(120)"
    proc = _start(empty, "--", PY, "-c", script)
    _ready(proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == code, err
    assert f"killed by {sig.name} (signal {int(sig)}) (mltidy passed on {sig.name})" in err


WRAPPER = "import subprocess, sys; sys.exit(1 if subprocess.call(sys.argv[1:]) else 0)"


def test_runs_of_the_jobs_children_are_found_and_an_exit_code_closes_them_failed(
    lab: Lab,
) -> None:
    """The training runs in a grandchild: its run carries the supervision id and is closed
    (FAILED, since the job itself exited with a code) when the job ends."""
    proc = _start(
        lab,
        "--mlflow",
        lab.mlflow,
        "--optuna",
        lab.optuna,
        "--",
        PY,
        "-c",
        WRAPPER,
        PY,
        *lab.worker(3000),
    )
    try:
        run_id, number = _ready(proc)
        (wrapper,) = psutil.Process(proc.pid).children()
        (worker,) = wrapper.children()
        assert _run_tag(lab, run_id, "mltidy.supervision")
        worker.send_signal(signal.SIGKILL)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 1, err
    assert _run_status(lab, run_id) == "FAILED"
    assert _trial_state(lab, number) == "FAIL"
    reason = _run_tag(lab, run_id, "mltidy.closed_reason")
    assert f"saw process {wrapper.pid} (python -c) die on " in reason
    assert f"exited with code 1; its process {worker.pid} is gone too" in reason


def test_exit_codes_and_when_to_notify(empty: Lab, http_receiver: HttpReceiver) -> None:
    runner = CliRunner()
    url = http_receiver.url()
    failing = ["--", PY, "-c", "import sys; sys.exit(3)"]
    fine = ["--", PY, "-c", "pass"]
    os.chdir(empty.root)
    assert runner.invoke(app, ["run", "--notify", url, *failing]).exit_code == 3
    (failed,) = http_receiver.wait_for(1)
    assert "exited with code 3 on " in failed.body["title"]
    assert runner.invoke(app, ["run", "--notify", url, *fine]).exit_code == 0
    assert (
        runner.invoke(app, ["run", "--notify", url, "--notify-on", "never", *failing]).exit_code
        == 3
    )
    assert (
        runner.invoke(app, ["run", "--notify", url, "--notify-on", "success", *fine]).exit_code == 0
    )
    time.sleep(0.2)
    assert len(http_receiver.requests) == 2
    assert http_receiver.requests[1].body["type"] == "success"
    assert " finished on " in http_receiver.requests[1].body["title"]


def test_bad_commands_and_usage(empty: Lab, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(empty.root)
    runner = CliRunner()
    missing = runner.invoke(app, ["run", "--", "no-such-command-xyz"])
    assert missing.exit_code == 127
    assert missing.stderr == "mltidy: error: cannot run 'no-such-command-xyz': no such command\n"
    none = runner.invoke(app, ["run"])
    assert none.exit_code == 2
    assert "Traceback" not in none.output
    secret = runner.invoke(app, ["run", "--notify", "nope://t0ken-123", "--", PY, "-c", "pass"])
    assert secret.exit_code == 2
    assert "t0ken-123" not in secret.output
    # A store mltidy cannot read is refused before the job runs, not after it.
    bad = runner.invoke(app, ["run", "--mlflow", "foo://x", "--", PY, "-c", "open('ran', 'w')"])
    assert bad.exit_code == 2
    assert "foo:// scheme" in bad.stderr and not (empty.root / "ran").exists()
    # Options after the command belong to the command, not to mltidy.
    passed = runner.invoke(app, ["run", PY, "-c", "import sys; sys.exit(len(sys.argv))", "-e", "x"])
    assert passed.exit_code == 3


@contextlib.contextmanager
def _memory_cgroup(limit: int) -> Iterator[Path]:
    """A memory cgroup with a limit (v1 or v2); skips where cgroups cannot be made."""
    name = f"mltidy-test-{os.getpid()}-{time.monotonic_ns()}"
    candidates = [
        (Path("/sys/fs/cgroup/memory") / name, "memory.limit_in_bytes"),
        (Path("/sys/fs/cgroup") / name, "memory.max"),
    ]
    for path, limit_file in candidates:
        if not path.parent.is_dir() or not (path.parent / "cgroup.procs").exists():
            continue
        try:
            path.mkdir()
        except OSError:
            continue
        try:
            (path / limit_file).write_text(str(limit))
            with contextlib.suppress(OSError):
                (path / "memory.memsw.limit_in_bytes").write_text(str(limit))
        except OSError:
            path.rmdir()
            continue
        try:
            yield path
        finally:
            for _ in range(50):
                try:
                    path.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        return
    pytest.skip("cannot create a memory cgroup here (needs root and a writable cgroup tree)")


def test_the_oom_killer_is_named(empty: Lab, http_receiver: HttpReceiver) -> None:
    with _memory_cgroup(150 * 2**20) as cgroup:
        hog = "b = []\nwhile True: b.append(bytearray(20 * 2**20))"
        script = f"echo $$ > {cgroup}/cgroup.procs && sleep 1 && exec {PY} -c '{hog}'"
        proc = _start(empty, "--notify", http_receiver.url(), "--", "sh", "-c", script)
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 137, err
    assert "killed by SIGKILL (signal 9)" in err
    assert "OOM killer" in err
    (message,) = http_receiver.wait_for(1)
    assert message.body["title"].endswith(": the OOM killer")
    assert "  memory: " in message.body["message"]


AT_A_TERMINAL = """
import pathlib, signal, sys, time
got = []
def handler(signum, frame):
    got.append(signum)
    pathlib.Path(sys.argv[1]).write_text(str(len(got)))
    time.sleep(0.5)  # a second, duplicated Ctrl-C would land here
    sys.exit(42)
name = input("name? ")
signal.signal(signal.SIGINT, handler)
print(f"hello {name}", flush=True)
time.sleep(120)
"""


def _read_until(fd: int, needle: bytes, timeout: float = 60.0) -> bytes:
    seen = b""
    deadline = time.monotonic() + timeout
    while needle not in seen and time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # EIO: the terminal's other side is closed
                break
            if not chunk:
                break
            seen += chunk
    return seen


def test_at_a_terminal_the_job_reads_it_and_ctrl_c_reaches_it_once(empty: Lab) -> None:
    """In a real pseudo-terminal: the job can read the terminal (it stays in the foreground
    group), and Ctrl-C typed there reaches it exactly once."""
    count = empty.root / "count"
    pid, fd = pty.fork()
    if pid == 0:  # the child: a session whose controlling terminal is the pty
        os.chdir(empty.root)
        os.execve(MLTIDY, [MLTIDY, "run", "--", PY, "-c", AT_A_TERMINAL, str(count)], _env())
    try:
        assert b"name? " in _read_until(fd, b"name? ")
        os.write(fd, b"world\n")
        assert b"hello world" in _read_until(fd, b"hello world")
        os.write(fd, b"\x03")  # Ctrl-C, turned into SIGINT by the terminal
        rest = _read_until(fd, b"after ")
        _, status = os.waitpid(pid, 0)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.close(fd)
    assert os.waitstatus_to_exitcode(status) == 42, rest
    assert count.read_text() == "1"
    assert b"exited with code 42" in rest and b"passed on" not in rest


def test_signals_ignored_on_entry_stay_ignored_for_the_job(empty: Lab) -> None:
    """``cmd &`` and nohup start commands with SIGINT (SIGHUP) ignored; the job sees the same
    under ``mltidy run`` as without it."""
    script = (
        "import signal; print('SIGINT', 'ignored' if signal.getsignal(signal.SIGINT) "
        "is signal.SIG_IGN else 'handled')"
    )

    def ignore_sigint() -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    done = subprocess.run(
        [MLTIDY, "run", "--", PY, "-c", script],
        capture_output=True,
        text=True,
        cwd=empty.root,
        env=_env(),
        preexec_fn=ignore_sigint,
        timeout=60,
        check=False,
    )
    assert (done.returncode, done.stdout) == (0, "SIGINT ignored\n"), done.stderr
