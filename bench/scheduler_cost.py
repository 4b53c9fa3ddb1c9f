"""The cost of asking SLURM about a scan's jobs: one batched query vs one call per job.

Starts a real single-node SLURM (tests/slurm_cluster.py: munged, slurmctld, slurmd as root),
submits JOBS held jobs (pending, so they stay in the controller for the whole run), and times

* ``SlurmSource.query`` for 1, 100 and 1,000 of them: one ``squeue --jobs=...`` whatever the
  number (what mltidy does), and
* ``scontrol show job N`` once per job: the obvious alternative,

reporting the median of ROUNDS and the ratio. The controller holds all JOBS jobs in every case,
as a real one holds everyone's jobs: squeue's cost grows with what the controller holds, the
per-job calls' with the number of records.

Run as root with SLURM installed: python bench/scheduler_cost.py [--jobs 1000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from mltidy.evidence import JobRef  # noqa: E402
from mltidy.evidence.slurm import SlurmSource  # noqa: E402
from slurm_cluster import SlurmCluster  # noqa: E402


def timed(action: Callable[[], object], rounds: int) -> float:
    """Median wall time of *action* in milliseconds."""
    samples = []
    for _ in range(rounds):
        began = time.perf_counter()
        action()
        samples.append((time.perf_counter() - began) * 1000)
    return statistics.median(samples)


def submit_held(cluster: SlurmCluster, count: int) -> list[str]:
    """*count* held jobs, submitted 100 per sbatch call through a small batch script."""
    script = cluster.job_dir / "submit.sh"
    script.write_text(
        "#!/bin/sh\nfor i in $(seq $1); do sbatch --parsable --hold --wrap=true; done\n"
    )
    ids: list[str] = []
    while len(ids) < count:
        batch = min(100, count - len(ids))
        done = cluster.run("sh", str(script), str(batch), timeout=300)
        ids += [line.split(";")[0] for line in done.stdout.split()]
    return ids


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=1000, help="held jobs in the controller")
    parser.add_argument("--rounds", type=int, default=5, help="repeats per measurement")
    args = parser.parse_args()
    sizes = [n for n in (1, 100, 1000) if n <= args.jobs]

    with SlurmCluster(name="bench") as cluster:
        print(f"SLURM up in {cluster.startup_seconds:.1f}s; submitting {args.jobs} held jobs ...")
        began = time.monotonic()
        ids = submit_held(cluster, args.jobs)
        print(f"submitted in {time.monotonic() - began:.1f}s\n")
        source = SlurmSource(timeout=60, environ=cluster.env)
        scontrol = shutil.which("scontrol") or "scontrol"

        def batched(n: int) -> None:
            answer = source.query([JobRef("slurm", job) for job in ids[:n]])
            assert answer.unavailable is None and len(answer.statuses) == n, answer
            assert answer.calls == 1, answer.calls

        def per_job(n: int) -> None:
            for job in ids[:n]:
                subprocess.run(
                    [scontrol, "--oneliner", "show", "job", job],
                    env=cluster.env,
                    capture_output=True,
                    check=True,
                )

        print(f"{'jobs asked':>10}  {'one query':>12}  {'scontrol per job':>17}  {'ratio':>7}")
        for n in sizes:
            one = timed(lambda n=n: batched(n), args.rounds)
            each = timed(lambda n=n: per_job(n), 1 if n >= 1000 else args.rounds)
            print(f"{n:>10}  {one:>9.1f} ms  {each:>14.1f} ms  {each / one:>6.1f}x")
        print(
            f"\n(controller holding {args.jobs} jobs; median of {args.rounds} rounds, one round "
            "for 1,000 per-job calls; SlurmSource.query ran exactly one squeue each time)"
        )
        cluster.run("scancel", *ids[:1], check=False)


if __name__ == "__main__":
    main()
