"""How soon ``mltidy run`` closes a job's run and trial after the job is SIGKILLed.

Each round starts ``mltidy run -- python -m mltidy.demo.worker`` (an MLflow run inside an Optuna
trial, both sqlite), waits until it trains, SIGKILLs the worker from outside, and measures the
time until the run's status in the store is no longer RUNNING (polled every 10 ms by a plain
sqlite3 reader), and until ``mltidy run`` has exited (after notifying nobody).

Also reports a ``mltidy watch --once`` poll over the same stores, for scale.

Run: python bench/run_close_latency.py [ROUNDS]
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MLTIDY = str(Path(sys.executable).with_name("mltidy"))


def status(db: Path, run_id: str) -> str:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        row = conn.execute("SELECT status FROM runs WHERE run_uuid = ?", (run_id,)).fetchone()
    return str(row[0]) if row else "?"


def one_round(root: Path) -> tuple[float, float]:
    import psutil

    command = [
        MLTIDY,
        "run",
        "--mlflow",
        f"sqlite:///{root / 'mlflow.db'}",
        "--optuna",
        f"sqlite:///{root / 'optuna.db'}",
        "--",
        sys.executable,
        "-m",
        "mltidy.demo.worker",
        "--mlflow",
        f"sqlite:///{root / 'mlflow.db'}",
        "--optuna",
        f"sqlite:///{root / 'optuna.db'}",
        "--study",
        "bench",
        "--epochs",
        "3000",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=root, env=env
    )
    assert proc.stdout is not None
    _, run_id, _ = proc.stdout.readline().split()
    (worker,) = psutil.Process(proc.pid).children()
    time.sleep(1.0)  # let the supervisor's warm-up imports finish, as in a real job
    killed = time.monotonic()
    os.kill(worker.pid, signal.SIGKILL)
    while status(root / "mlflow.db", run_id) == "RUNNING":
        time.sleep(0.01)
    closed = time.monotonic() - killed
    proc.wait(timeout=60)
    exited = time.monotonic() - killed
    assert proc.returncode == 137, proc.returncode
    return closed, exited


def main() -> int:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    from mltidy.demo.jobs import create_stores

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        create_stores(
            f"sqlite:///{root / 'mlflow.db'}", f"sqlite:///{root / 'optuna.db'}", "bench", root
        )
        results = [one_round(root) for _ in range(rounds)]
        start = time.monotonic()
        subprocess.run(
            [
                MLTIDY,
                "watch",
                "--once",
                "--mlflow",
                f"sqlite:///{root / 'mlflow.db'}",
                "--optuna",
                f"sqlite:///{root / 'optuna.db'}",
                "--state",
                str(root / "watch.db"),
            ],
            capture_output=True,
            check=True,
        )
        poll = time.monotonic() - start
    closed = [c for c, _ in results]
    exited = [e for _, e in results]
    print(f"rounds: {rounds}   load average: {os.getloadavg()[0]:.1f}")
    print(
        f"SIGKILL -> run closed in the store: median {statistics.median(closed) * 1000:.0f} ms, "
        f"max {max(closed) * 1000:.0f} ms"
    )
    print(
        f"SIGKILL -> mltidy run exited:        median {statistics.median(exited) * 1000:.0f} ms, "
        f"max {max(exited) * 1000:.0f} ms"
    )
    print(f"mltidy watch --once (a new process, {rounds} closed runs): {poll * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
