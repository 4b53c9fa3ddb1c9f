"""Real output for the recipes of docs/cluster.md: jobs on a real SLURM, judged from a login node.

Starts a private single-node SLURM (tests/slurm_cluster.py; as root, with Debian's slurmctld,
slurmd, slurm-client and munge), submits the demo's training job three ways (plain, under
``mltidy run`` in the batch script, and under ``srun mltidy run``), cancels them with scancel,
and prints what ``mltidy scan`` shows from a host that is not the node (the facts of a login
node), then what the supervised jobs printed when they were cancelled.

Run: python docs/gen_cluster_recipes.py
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "tests")]

from mltidy.backends.identity import store_spec  # noqa: E402
from mltidy.backends.session import StoreSession  # noqa: E402
from mltidy.cli.render import records_table, stdout_console  # noqa: E402
from mltidy.demo.jobs import create_stores  # noqa: E402
from mltidy.evidence.local import StaticFacts  # noqa: E402
from mltidy.judge import Policy  # noqa: E402
from mltidy.model import Selection, StoreKind, utc_now  # noqa: E402
from mltidy.scan import collect, iter_scan  # noqa: E402
from slurm_cluster import SlurmCluster  # noqa: E402


def _wait_ready(cluster: SlurmCluster, job: str) -> None:
    out = cluster.job_dir / f"{job}.out"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if out.exists() and "ready " in out.read_text(errors="replace"):
            return
        time.sleep(0.2)
    raise TimeoutError(f"job {job} never got ready")


def main() -> None:
    python = sys.executable
    mltidy = str(Path(python).with_name("mltidy"))
    with tempfile.TemporaryDirectory() as tmp, SlurmCluster(name="recipes") as cluster:
        root = Path(tmp)
        os.environ["SLURM_CONF"] = str(cluster.conf)
        mlflow_uri, optuna_url = f"sqlite:///{root}/mlflow.db", f"sqlite:///{root}/optuna.db"
        create_stores(mlflow_uri, optuna_url, "sweep", root / "artifacts")
        worker = (
            f"{python} -m mltidy.demo.worker --mlflow {mlflow_uri} --optuna {optuna_url} "
            "--study sweep --epochs 100000 --epoch-seconds 0.3"
        )
        stores = f"--mlflow {mlflow_uri} --optuna {optuna_url}"
        plain = cluster.sbatch(wrap=worker)
        _wait_ready(cluster, plain)
        supervised = cluster.sbatch(wrap=f"srun {mltidy} run {stores} -- {worker}")
        _wait_ready(cluster, supervised)
        specs = [
            store_spec(StoreKind.MLFLOW, mlflow_uri, "--mlflow"),
            store_spec(StoreKind.OPTUNA, optuna_url, "--optuna"),
        ]
        login = StaticFacts(host="login-node")
        out = stdout_console()
        out.width = 110

        def show(title: str) -> None:
            with StoreSession(specs) as session:
                result = collect(iter_scan(session, Selection(), Policy(now=utc_now()), login))
            print(f"\n$ mltidy scan   # {title}")
            out.print(records_table(result.records))

        show("on the login node, both jobs training")
        cluster.scancel(plain, supervised)
        for job in (plain, supervised):
            cluster.wait_for(job, {"CANCELLED"}, timeout=90)
        show("after scancel of both")
        text = (cluster.job_dir / f"{supervised}.out").read_text(errors="replace")
        print(f"\n$ cat slurm-{supervised}.out   # the job under srun mltidy run")
        print("\n".join(line for line in text.splitlines() if line.startswith("mltidy run")))


if __name__ == "__main__":
    main()
