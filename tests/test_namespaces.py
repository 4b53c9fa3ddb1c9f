"""Pids mean something only in their pid namespace: real namespaces (``unshare``), both ways.

Containers on one kernel share the host name and the boot id, so a pid read in the wrong
namespace can make a live job look dead. Here real jobs train in one pid namespace and
``mltidy close --yes`` (the installed entry point) runs in another:

* mltidy inside ``unshare --pid --fork --mount-proc``, the jobs outside: it cannot see their
  namespace, so it closes nothing (a live job above all); from outside, the killed one is closed;
* the jobs inside such a namespace (with provenance naming it), mltidy outside: the killed job's
  namespace has ended, so its run is closed; the live one is found in its namespace and left
  alone; and mltidy in a namespace of its own closes neither.

Needs ``unshare`` and the right to make namespaces (root, as CI runs); skipped otherwise.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labs import Lab, ready
from mltidy.demo.jobs import Job

EXE = Path(sys.executable).parent / "mltidy"
UNSHARE = ["unshare", "--pid", "--fork", "--mount-proc"]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None:
        return False
    done = subprocess.run([*UNSHARE, "true"], capture_output=True, timeout=30)
    return done.returncode == 0


pytestmark = pytest.mark.skipif(not _can_unshare(), reason="cannot make pid namespaces here")


def _close(lab: Lab, *, inside: bool) -> dict[str, Any]:
    """``mltidy close --yes`` through the installed entry point, in a new pid namespace or not."""
    command = [str(EXE), "close", "--yes", "-f", "json", "--mlflow", lab.mlflow]
    command += ["--optuna", lab.optuna]
    done = subprocess.run(
        [*UNSHARE, *command] if inside else command,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=lab.root,
    )
    assert done.returncode == 0, done.stderr
    return dict(json.loads(done.stdout))


def _closed_runs(report: dict[str, Any]) -> set[str]:
    return {
        c["id"] for c in report["changes"] if c["kind"] == "mlflow_run" and c["status"] == "closed"
    }


def _verdicts(report: dict[str, Any]) -> dict[str, tuple[str, str]]:
    items = [*report["changes"], *report["skipped"]]
    return {i["id"]: (i["verdict"], i["reason"]) for i in items if i["kind"] == "mlflow_run"}


def _inside(lab: Lab, epochs: int) -> Job:
    """A training job in a pid namespace of its own. ``--kill-child``: when the ``unshare``
    process is killed, the kernel kills the job (the namespace's pid 1) with SIGKILL."""
    log_dir = lab.root / ".jobs"
    log_dir.mkdir(exist_ok=True)
    log_path = log_dir / f"inside-{time.monotonic_ns()}.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("MLFLOW_TRACKING_URI", None)
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [*UNSHARE, "--kill-child=SIGKILL", sys.executable, *lab.worker(epochs)],
            cwd=lab.root,
            stdout=subprocess.PIPE,
            stderr=log,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
    return Job(process, log_path)


@pytest.fixture
def jobs_to_stop() -> Iterator[list[Job]]:
    started: list[Job] = []
    yield started
    for job in started:
        job.kill(signal.SIGKILL)


def test_mltidy_in_another_namespace_never_closes_a_live_job(
    lab: Lab, jobs_to_stop: list[Job]
) -> None:
    live, killed = lab.start(10_000), lab.start(10_000)
    jobs_to_stop.append(live)
    ready(live, killed)
    killed.kill(signal.SIGKILL)
    assert live.run_id and killed.run_id

    inside = _close(lab, inside=True)
    assert _closed_runs(inside) == set()  # neither pid can be looked up from in there
    verdicts = _verdicts(inside)
    assert verdicts[live.run_id][0] != "dead"
    assert "another pid namespace" in verdicts[live.run_id][1]

    outside = _close(lab, inside=False)  # the side that can see the jobs
    assert _closed_runs(outside) == {killed.run_id}
    assert _verdicts(outside)[live.run_id][0] == "alive"
    assert live.process.poll() is None


def test_jobs_in_their_own_namespace_are_judged_in_it(lab: Lab, jobs_to_stop: list[Job]) -> None:
    live, killed = _inside(lab, 10_000), _inside(lab, 10_000)
    jobs_to_stop.append(live)
    ready(live, killed)
    killed.kill(signal.SIGKILL)  # unshare, and with it the job (--kill-child)
    assert live.run_id and killed.run_id

    elsewhere = _close(lab, inside=True)  # a sibling namespace sees neither job
    assert _closed_runs(elsewhere) == set()

    outside = _close(lab, inside=False)
    assert _closed_runs(outside) == {killed.run_id}
    verdict, reason = _verdicts(outside)[live.run_id]
    assert verdict == "alive", reason
    assert "pid namespace" in reason
    assert live.process.poll() is None
