"""What scheduler evidence costs a scan: the same scan with and without asking SLURM.

Starts a real single-node SLURM (tests/slurm_cluster.py, as root), submits JOBS held jobs, and
copies a generated MLflow sqlite store (bench/stores.py: 100,000 runs, 1,000 RUNNING) whose
RUNNING runs name those jobs in their provenance (``mltidy.slurm_job_id``) and another host.
Then it times, in turns, the library scan of that store judged as a login node would:

* with the SLURM source (one batched ``squeue`` for all 1,000 jobs; held jobs never
  started, so SLURM's answer is "no conclusion", named in every reason), and
* without any scheduler (``schedulers=()``: the records are judged on their activity alone),

and reports the medians, the difference and the ratio. Not a test.

Run as root with SLURM installed: python bench/scheduler_scan.py [--jobs 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests"), str(HERE)]

from scheduler_cost import submit_held  # noqa: E402
from stores import mlflow_sqlite  # noqa: E402

from mltidy import names  # noqa: E402
from mltidy.backends.identity import store_spec  # noqa: E402
from mltidy.backends.session import StoreSession  # noqa: E402
from mltidy.evidence.local import StaticFacts  # noqa: E402
from mltidy.evidence.slurm import SlurmSource  # noqa: E402
from mltidy.judge import Policy  # noqa: E402
from mltidy.model import Selection, StoreKind, utc_now  # noqa: E402
from mltidy.scan import ScanResult, collect, iter_scan  # noqa: E402
from slurm_cluster import SlurmCluster  # noqa: E402


def tag_running_runs(path: Path, jobs: list[str]) -> int:
    """Give every RUNNING run another host and one of the jobs; how many runs were tagged."""
    with sqlite3.connect(path) as conn:
        runs = [row[0] for row in conn.execute("SELECT run_uuid FROM runs WHERE status='RUNNING'")]
        rows = []
        for index, run in enumerate(runs):
            rows.append((names.HOST, "gpu-node", run))
            rows.append((names.SLURM_JOB_ID, jobs[index % len(jobs)], run))
            rows.append((names.SLURM_RESTART_COUNT, "0", run))
        conn.executemany(
            "INSERT OR REPLACE INTO tags (key, value, run_uuid) VALUES (?, ?, ?)", rows
        )
    return len(runs)


def median_seconds(action: Callable[[], object], rounds: int) -> float:
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        action()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="held jobs the records name")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    login = StaticFacts(host="login-node")
    with SlurmCluster(name="benchscan") as cluster, tempfile.TemporaryDirectory() as tmp:
        os.environ["SLURM_CONF"] = str(cluster.conf)
        jobs = submit_held(cluster, args.jobs)
        source_url = mlflow_sqlite(100_000, 1_000)
        store = Path(tmp) / "mlflow.db"
        shutil.copy(source_url.removeprefix("sqlite:///"), store)
        tagged = tag_running_runs(store, jobs)
        specs = [store_spec(StoreKind.MLFLOW, f"sqlite:///{store}", "bench")]
        source = SlurmSource(timeout=60)

        def run(schedulers: tuple[SlurmSource, ...]) -> ScanResult:
            with StoreSession(specs) as session:
                policy = Policy(now=utc_now())
                return collect(
                    iter_scan(session, Selection(), policy, login, schedulers=schedulers)
                )

        with_slurm = run((source,))
        # Held jobs never started: SLURM's answer is "no conclusion", named in every reason.
        assert all("SLURM job" in r.verdict.reason for r in with_slurm.records)
        without = run(())
        assert not any("SLURM" in r.verdict.reason for r in without.records)
        times: dict[str, list[float]] = {"with SLURM": [], "without": []}
        for _ in range(args.rounds):
            times["with SLURM"].append(median_seconds(lambda: run((source,)), 1))
            times["without"].append(median_seconds(lambda: run(()), 1))
        a, b = (statistics.median(times[k]) for k in ("with SLURM", "without"))
        print(f"store: 100,000 runs, {tagged} RUNNING naming {len(jobs)} held SLURM jobs")
        print(f"scan with the SLURM source (one squeue): {a:.3f} s")
        print(f"scan without scheduler evidence:        {b:.3f} s")
        print(f"difference {a - b:+.3f} s, ratio {a / b:.2f}x (median of {args.rounds}, in turns)")
        cluster.run("scancel", *jobs[:1], check=False)


if __name__ == "__main__":
    main()
