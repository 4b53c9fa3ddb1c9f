"""What reading the rhythm of RUNNING runs costs a scan: the same read with and without it.

The store is bench/stores.py's MLflow sqlite store (100,000 runs in 100 experiments, 1,000
RUNNING, each RUNNING run with a history of 50 to 500 points per metric). Both programs read it
through the fast path's ``iter_active`` and consume every record, in turns (A B, A B, ...):

* ``with rhythm``: as mltidy reads today, two more queries per partition of 500 RUNNING runs:
  their latest metric keys (``latest_metrics``), then those keys' history (``metrics``);
* ``without``: the same read with that query left out (the records carry no rhythm).

Reported: medians, the difference per RUNNING run, and the ratio. Not a test.

Run: python bench/rhythm_cost.py [--runs 100000] [--running 1000] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(ROOT / "src"), str(HERE)]

from stores import count_rows, mlflow_sqlite  # noqa: E402

from mltidy.backends.mlflow import sql as mlflow_sql  # noqa: E402
from mltidy.backends.mlflow.sql import MlflowSqlBackend  # noqa: E402
from mltidy.model import Selection  # noqa: E402


def _read(url: str, *, rhythm: bool) -> tuple[float, int, int]:
    """Seconds to read every RUNNING run, how many there were, and how many had a rhythm."""
    original = mlflow_sql.read_rhythms

    def nothing(conn: Any, t: Any, run_ids: Any) -> dict[str, Any]:
        return {}

    if not rhythm:
        mlflow_sql.read_rhythms = nothing  # type: ignore[assignment]
    try:
        began = time.perf_counter()
        with MlflowSqlBackend(url) as backend:
            records = list(backend.iter_active(Selection()))
        elapsed = time.perf_counter() - began
    finally:
        mlflow_sql.read_rhythms = original
    return elapsed, len(records), sum(1 for r in records if r.longest_pause is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--running", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    url = mlflow_sqlite(args.runs, args.running, progress=lambda s: print(s, file=sys.stderr))
    history = count_rows(
        url, "metrics", "run_uuid IN (SELECT run_uuid FROM runs WHERE status = 'RUNNING')"
    )
    programs: dict[str, Callable[[], tuple[float, int, int]]] = {
        "with rhythm": lambda: _read(url, rhythm=True),
        "without": lambda: _read(url, rhythm=False),
    }
    for program in programs.values():  # warm the page cache
        program()
    times: dict[str, list[float]] = {name: [] for name in programs}
    found: dict[str, tuple[int, int]] = {}
    for round_ in range(args.rounds):
        order = list(programs) if round_ % 2 == 0 else list(reversed(programs))
        for name in order:
            elapsed, records, with_rhythm = programs[name]()
            times[name].append(elapsed)
            found[name] = (records, with_rhythm)
    with_, without = (statistics.median(times[n]) for n in ("with rhythm", "without"))
    running = found["with rhythm"][0]
    print(
        f"store: {args.runs:,} runs, {running:,} RUNNING, {history:,} metric rows of RUNNING runs"
    )
    for name in programs:
        records, rhythms = found[name]
        spread = f"{min(times[name]):.3f}-{max(times[name]):.3f}"
        print(
            f"{name:12s} median {statistics.median(times[name]):.3f} s ({spread}), "
            f"{records} records, {rhythms} with a rhythm"
        )
    print(
        f"rhythm costs {with_ - without:.3f} s more ({(with_ - without) / running * 1e3:.2f} ms "
        f"per RUNNING run), ratio {with_ / without:.2f}x, over {args.rounds} paired rounds"
    )


if __name__ == "__main__":
    main()
