"""Print what mltidy's SLURM source says about real jobs, for docs/cluster.md.

Starts a private single-node SLURM (tests/slurm_cluster.py; as root, with the Debian packages
slurmctld slurmd slurm-client munge), ends jobs the real ways, asks the source about all of them
in one query through logging wrappers of squeue/sacct, and prints the commands it ran and one
line per record: the evidence (ended / running / undecided) and its reason. With --oom, a second
cluster confines memory with cgroups for an OUT_OF_MEMORY job.

Run: python docs/gen_cluster_examples.py [--oom]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from mltidy import names  # noqa: E402
from mltidy.evidence import JobRef, SchedulerAnswer  # noqa: E402
from mltidy.evidence.slurm import SlurmSource  # noqa: E402
from slurm_cluster import SlurmCluster, memory_cgroup_problem  # noqa: E402


def wrapped_path(log: Path) -> str:
    """A PATH whose squeue and sacct log their command line, then run the real ones."""
    bin_dir = log.parent / "bin"
    bin_dir.mkdir()
    for command in ("squeue", "sacct"):
        real = shutil.which(command)
        assert real is not None, f"{command} is not installed"
        wrapper = bin_dir / command
        wrapper.write_text(f'#!/bin/sh\necho "{command} $*" >> "{log}"\nexec "{real}" "$@"\n')
        wrapper.chmod(0o755)
    return f"{bin_dir}{os.pathsep}{os.environ['PATH']}"


def show(records: list[tuple[str, JobRef, datetime | None]], answer: SchedulerAnswer) -> None:
    for what, ref, started in records:
        evidence = answer.evidence_for(ref, started)
        print(f"{what:<36} {evidence.liveness.value:<9}  {evidence.reason}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--oom", action="store_true", help="also a cgroup-confined OOM job")
    parser.add_argument(
        "--accounting", action="store_true", help="also slurmdbd over MariaDB (sacct answers)"
    )
    args = parser.parse_args()
    source_tags = SlurmSource()
    with tempfile.TemporaryDirectory() as tmp, SlurmCluster(name="hpc") as cluster:
        log = Path(tmp) / "calls.log"
        env = {**cluster.env, "PATH": wrapped_path(log)}
        now = datetime.now(timezone.utc)
        running = cluster.sbatch(wrap="sleep 600")
        completed = cluster.sbatch(wrap="true")
        failed = cluster.sbatch(wrap="exit 1")
        cancelled = cluster.sbatch(wrap="sleep 600")
        steps = cluster.sbatch(wrap="srun true; srun sleep 600")
        array = cluster.sbatch("--array=0-1", wrap="sleep 600")
        requeued = cluster.sbatch("--requeue", wrap="sleep 600")
        for job in (running, cancelled, steps, requeued, f"{array}_1"):
            cluster.wait_for(job, {"RUNNING"})
        cluster.scancel(cancelled)
        time.sleep(2)
        cluster.scontrol("requeue", requeued)
        for job, state in ((completed, "COMPLETED"), (failed, "FAILED"), (cancelled, "CANCELLED")):
            cluster.wait_for(job, {state})
        cluster.wait_for(requeued, {"PENDING"})
        time.sleep(1)

        def ref(**tags: str) -> JobRef:
            found = source_tags.job_of({getattr(names, key): value for key, value in tags.items()})
            assert found is not None
            return found

        records = [
            ("job running", ref(SLURM_JOB_ID=running), now),
            ("job completed", ref(SLURM_JOB_ID=completed), now),
            ("job failed (exit 1)", ref(SLURM_JOB_ID=failed), now),
            ("job cancelled (scancel)", ref(SLURM_JOB_ID=cancelled), now),
            ("array task 1", ref(SLURM_ARRAY_JOB_ID=array, SLURM_ARRAY_TASK_ID="1"), now),
            ("srun step 0 ended, job runs", ref(SLURM_JOB_ID=steps, SLURM_STEP_ID="0"), now),
            ("srun step 1 of the same job", ref(SLURM_JOB_ID=steps, SLURM_STEP_ID="1"), now),
            (
                "requeued; record of restart 0",
                ref(SLURM_JOB_ID=requeued, SLURM_RESTART_COUNT="0"),
                now,
            ),
            ("job id SLURM does not know", ref(SLURM_JOB_ID="987654"), now),
        ]
        answer = SlurmSource(environ=env).query([r for _, r, _ in records])
        print("$ # what one SlurmSource.query() ran for these 9 records:")
        for line in log.read_text().splitlines():
            print(f"$ {line}")
        print()
        show(records, answer)

        time.sleep(2)  # slurmd refuses a relaunch in the second the requeue revoked it
        cluster.scontrol("update", f"JobId={requeued}", "StartTime=now")
        cluster.wait_for(requeued, {"RUNNING"})
        restart_1 = ref(SLURM_JOB_ID=requeued, SLURM_RESTART_COUNT="1")
        again = SlurmSource(environ=env).query([records[7][1], restart_1])
        show(
            [
                ("running again; record of restart 0", records[7][1], now),
                ("running again; record of restart 1", restart_1, None),
            ],
            again,
        )

        dead = {**cluster.env, "SLURM_CONF": str(cluster.dead_controller_conf())}
        began = time.monotonic()
        down = SlurmSource(environ=dead).query([records[0][1]])
        show([("controller not answering", records[0][1], now)], down)
        print(f"{'':<36} (answered after {time.monotonic() - began:.1f}s)")

        no_munge = Path(tmp) / "slurm.conf"
        no_munge.write_text(
            cluster.conf.read_text().replace(str(cluster.munge_socket), "/run/munge/gone.socket")
        )
        refused = SlurmSource(environ={**cluster.env, "SLURM_CONF": str(no_munge)})
        show([("munged not reachable", records[0][1], now)], refused.query([records[0][1]]))

    if args.accounting:
        accounting_examples()
    if args.oom:
        problem = memory_cgroup_problem()
        if problem is not None:
            print(f"(no OOM example: {problem})")
            return
        with SlurmCluster(name="hpc", cgroups=True, cpus=2) as cluster:
            job = cluster.sbatch("--mem=50M", wrap="python3 -c 'x = bytearray(400 << 20)'")
            cluster.wait_for(job, {"OUT_OF_MEMORY"})
            oom = JobRef("slurm", job)
            answer = SlurmSource(environ=cluster.env).query([oom])
            show([("job over its --mem (cgroups)", oom, None)], answer)


def accounting_examples() -> None:
    """Jobs the controller has forgotten (MinJobAge=2), answered by sacct; a failed step."""
    from mysql_server import MysqlServer

    with (
        MysqlServer() as mysql,
        SlurmCluster(name="hpc", accounting=mysql, min_job_age=2, cpus=4) as cluster,
    ):
        failed = cluster.sbatch(wrap="exit 3")
        cancelled = cluster.sbatch(wrap="sleep 600")
        steps = cluster.sbatch(wrap="srun false; srun sleep 600")
        cluster.wait_for(cancelled, {"RUNNING"})
        cluster.scancel(cancelled)
        for job in (failed, cancelled):
            cluster.wait_for(job, lambda state: state is None)
        time.sleep(2)
        records = [
            ("failed, forgotten by the controller", JobRef("slurm", failed), None),
            ("cancelled, forgotten", JobRef("slurm", cancelled), None),
            ("srun step 0 failed, job runs", JobRef("slurm", steps, step="0"), None),
            ("job id SLURM does not know", JobRef("slurm", "987654"), None),
        ]
        answer = SlurmSource(environ=cluster.env).query([r for _, r, _ in records])
        print("\n# with accounting (slurmdbd), MinJobAge=2")
        show(records, answer)


if __name__ == "__main__":
    main()
