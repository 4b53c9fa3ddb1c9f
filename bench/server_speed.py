"""How fast mltidy reads an ``mlflow server``, next to plain HTTP calls to the same endpoints.

One real ``mlflow server`` serves a generated store (``stores.py``: 100,000 runs in 100
experiments, 1,000 of them RUNNING). The programs below each find the RUNNING runs and print
them as JSON, in turns, round after round, against that one server (paired: a burst of load
from elsewhere hits them alike):

* **REST backend**: ``MlflowRestBackend`` opened and iterated in a bare ``python -c`` (what
  ``mltidy scan`` does for the store, without the CLI around it);
* **plain HTTP** (the yardstick): ``requests.Session`` posting to ``experiments/search`` and
  ``runs/search`` with the same bodies, building the same fields; nothing else;
* **MlflowClient loop**: ``bench/alternatives.py mlflow-client``, the loop from MLflow's docs;
* **mltidy scan, REST** and **mltidy scan today**: the whole CLI with the REST backend put in
  the registry's place (as the registry will be wired), and as it is (through MlflowClient).

Every number is a whole process timed from outside (``scan_speed.run_once``: wall time, CPU time
and peak RSS of the child); the REST backend and the yardstick also time their own read inside
the process (after their imports). A first round against the just-started server is a warm-up
(the server imports and fills its caches on first use); it is reported apart.

``python bench/server_speed.py --write docs/performance.md`` replaces the "Tracking servers"
section of that file (or adds it); ``--quick`` is a one-round smoke run on 10,000 runs.
Benchmarks are not tests: nothing fails on a bad number.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import scan_speed  # noqa: E402
import stores  # noqa: E402
from scan_speed import BIN, PY, Program, load_average, run_once  # noqa: E402

from mlflow_server_options import ConfiguredMlflowServer  # noqa: E402

TARGET_SECONDS = 0.3
TARGET_MIB = 40.0
SECTION = "## Tracking servers"
#: A breath between programs, so that one does not start while the server still works for the
#: previous one.
PAUSE = 0.5

#: The REST backend as mltidy uses it; times its own import and read, prints the records.
REST = """
import json, resource, sys, time
began = time.perf_counter()
from mltidy.backends.mlflow.rest import MlflowRestBackend
from mltidy.model import Selection, iso
import requests  # opening the backend would import it: counted with the imports, as for HTTP
imported = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
with MlflowRestBackend(sys.argv[1]) as backend:
    records = [
        {"id": r.id, "name": r.name, "container": r.container, "state": r.state,
         "started_at": iso(r.started_at), "last_activity_at": iso(r.last_activity_at)}
        for r in backend.iter_active(Selection())
    ]
read = time.perf_counter()
json.dump({"records": records, "inproc": {
    "import": imported - began, "read": read - imported,
    "rss_growth_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss}}, sys.stdout)
"""

#: The yardstick: the same two endpoints with requests and nothing else.
HTTP = """
import json, resource, sys, time
from datetime import datetime, timezone
began = time.perf_counter()
import requests
imported = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
api = sys.argv[1] + "/api/2.0/mlflow/"

def iso(ms):
    if not ms:
        return None
    return datetime.fromtimestamp(int(ms) / 1000, tz=timezone.utc).isoformat(timespec="seconds")

def pages(session, endpoint, body, key):
    token = None
    while True:
        page = session.post(api + endpoint, json={**body, "max_results": 50000,
                            **({"page_token": token} if token else {})}, timeout=60)
        page.raise_for_status()
        data = page.json()
        yield from data.get(key, [])
        token = data.get("next_page_token")
        if not token:
            return

with requests.Session() as session:
    names = {e["experiment_id"]: e["name"]
             for e in pages(session, "experiments/search", {"view_type": "ACTIVE_ONLY"},
                            "experiments")}
    records = []
    for run in pages(session, "runs/search",
                     {"experiment_ids": list(names), "filter": "attributes.status = 'RUNNING'",
                      "run_view_type": "ACTIVE_ONLY"}, "runs"):
        info = run["info"]
        stamps = [m["timestamp"] for m in run.get("data", {}).get("metrics", [])]
        records.append({"id": info["run_id"], "name": info.get("run_name"),
                        "container": names.get(info["experiment_id"]), "state": info["status"],
                        "started_at": iso(info.get("start_time")),
                        "last_activity_at": iso(max(stamps)) if stamps else None})
read = time.perf_counter()
json.dump({"records": records, "inproc": {
    "import": imported - began, "read": read - imported,
    "rss_growth_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss}}, sys.stdout)
"""

#: ``mltidy scan`` with http(s) stores opened by the REST backend, as the registry will do.
SCAN_REST = """
import sys
import mltidy.scan
from mltidy.backends.mlflow.rest import MlflowRestBackend
opened = mltidy.scan.open_backend
def open_backend(kind, uri, *, writable=False):
    if uri.startswith(("http://", "https://")):
        return MlflowRestBackend(uri, writable=writable)
    return opened(kind, uri, writable=writable)
mltidy.scan.open_backend = open_backend
from mltidy.cli.app import main
sys.argv = ["mltidy", *sys.argv[1:]]
main()
"""


@dataclass
class Result:
    """One program's measurements: whole process, and (for two) inside the process."""

    program: Program
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    read: list[float] = field(default_factory=list)
    growth_mib: list[float] = field(default_factory=list)
    warmup: float | None = None
    records: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.wall)


def programs(url: str) -> list[Program]:
    return [
        Program("REST backend", [PY, "-c", REST, url]),
        Program("plain HTTP (requests)", [PY, "-c", HTTP, url]),
        Program("MlflowClient loop", [PY, str(HERE / "alternatives.py"), "mlflow-client", url]),
        Program(
            "mltidy scan, REST", [PY, "-c", SCAN_REST, "scan", "--format", "json", "--mlflow", url]
        ),
        Program(
            "mltidy scan today (MlflowClient)",
            [str(BIN / "mltidy"), "scan", "--format", "json", "--mlflow", url],
        ),
    ]


def measure(progs: list[Program], rounds: int, log: Any) -> list[Result]:
    """A warm-up round, then ``rounds`` rounds in turns; every program must find the same runs."""
    results = [Result(p) for p in progs]
    with tempfile.TemporaryDirectory(prefix="mltidy-bench-") as tmp:
        workdir = Path(tmp)
        for round_ in range(rounds + 1):
            # Each round starts with another program, so none always follows the same one
            # (the server may still be tidying up after the previous request).
            shift = round_ % len(results)
            for result in results[shift:] + results[:shift]:
                time.sleep(PAUSE)
                wall, cpu, rss, output = run_once(result.program, workdir)
                data = json.loads(output)
                found = len(data["records"])
                if result.records is None:
                    result.records = found
                elif found != result.records:
                    raise RuntimeError(
                        f"{result.program.label}: {result.records} runs, then {found}"
                    )
                log(
                    f"    {'warm-up' if round_ == 0 else f'round {round_}'}: "
                    f"{result.program.label}: {wall:.2f} s, {rss:.0f} MiB"
                )
                if round_ == 0:
                    result.warmup = wall
                    continue
                result.wall.append(wall)
                result.cpu.append(cpu)
                result.rss.append(rss)
                if "inproc" in data:
                    result.read.append(data["inproc"]["read"])
                    result.growth_mib.append(data["inproc"]["rss_growth_kib"] / 1024)
    counts = {r.records for r in results}
    if len(counts) > 1:
        raise RuntimeError(f"the programs disagree on the number of RUNNING runs: {counts}")
    return results


def _s(value: float) -> str:
    return scan_speed._s(value)


def paired(a: list[float], b: list[float]) -> float:
    """The median of round-by-round differences: steadier than a difference of medians when
    the server's own time swings from round to round."""
    return statistics.median(x - y for x, y in zip(a, b, strict=True))


def gaps(result: Result, http: Result) -> str:
    return (
        f"wall {paired(result.wall, http.wall):+.2f} s, CPU {paired(result.cpu, http.cpu):+.2f} s, "
        f"peak RSS {max(result.rss) - max(http.rss):+.0f} MiB"
    )


def report(results: list[Result], runs: int, running: int, rounds: int, notes: list[str]) -> str:
    rest, http, client, scan_rest, scan_today = results
    wall_gap = paired(rest.wall, http.wall)
    rss_gap = max(rest.rss) - max(http.rss)
    met = wall_gap <= TARGET_SECONDS and rss_gap <= TARGET_MIB
    lines = [
        SECTION,
        "",
        "<!-- Generated by bench/server_speed.py. Do not edit by hand. -->",
        "",
        f"Reading an `mlflow server` whose store holds {runs:,} runs ({running:,} RUNNING, in "
        "100 experiments; `bench/stores.py`), measured by `bench/server_speed.py`: every "
        f"program finds the RUNNING runs and prints them as JSON; {rounds} rounds against one "
        "server (one worker), the programs in turns, each round starting with the next one, "
        "after a warm-up round (the first requests to a "
        "just-started server pay its imports and cold caches: shown apart). Most of each "
        "program's wall time is the server's search, the same for all; the differences are "
        "the medians of the round-by-round differences, and the CPU time of the client "
        "process is the steadier measure of what the client itself costs. " + " ".join(notes),
        "",
        "| target (issue 15) | wanted | measured |  |",
        "| --- | --- | --- | --- |",
        f"| REST backend vs. plain HTTP, whole process | at most {TARGET_SECONDS} s and "
        f"{TARGET_MIB:.0f} MiB more | {gaps(rest, http)} | {'met' if met else '**not met**'} |",
        f"| the same, the read alone (after imports) | reported | "
        f"{paired(rest.read, http.read):+.2f} s, RSS growth "
        f"{max(rest.growth_mib) - max(http.growth_mib):+.0f} MiB |  |",
        f"| `mltidy scan` (CLI, REST) vs. plain HTTP | reported | {gaps(scan_rest, http)} |  |",
        f"| REST backend vs. MlflowClient loop | reported | "
        f"{client.median / rest.median:.1f}x faster, {max(client.rss) - max(rest.rss):.0f} MiB "
        "less |  |",
        f"| `mltidy scan` with REST vs. today (MlflowClient) | reported | "
        f"{scan_today.median / scan_rest.median:.1f}x faster, "
        f"{max(scan_today.rss) - max(scan_rest.rss):.0f} MiB less |  |",
        "",
        "| program | median wall | range (s) | median CPU | peak RSS | read in process "
        "| warm-up round | vs. plain HTTP |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        if result is http:
            versus = ""
        else:
            ratio = result.median / http.median
            versus = f"{ratio:.2f}x ({gaps(result, http)})"
        inproc = (
            f"{_s(statistics.median(result.read))}, +{max(result.growth_mib):.0f} MiB"
            if result.read
            else ""
        )
        lines.append(
            f"| {result.program.label} | {_s(result.median)} | {min(result.wall):.2f}-"
            f"{max(result.wall):.2f} | {_s(statistics.median(result.cpu))} | "
            f"{max(result.rss):.0f} MiB | {inproc} | {_s(result.warmup or 0.0)} | {versus} |"
        )
    lines += [
        "",
        "What the REST backend sends: one `experiments/search` (the active experiments, which "
        "also proves the server is MLflow and lets mltidy in), then one `runs/search` for "
        "`attributes.status = 'RUNNING'` per 500 experiments, with the largest page MLflow "
        "accepts (50,000), over one kept-alive connection. The server's own work (its "
        "`runs` table has no index on `status`) is the same for every program; what differs "
        "is what each program imports and builds from the answer.",
        "",
    ]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=100_000)
    parser.add_argument("--running", type=int, default=1_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="one round on 10,000 runs")
    parser.add_argument("--write", type=Path, help="put the section into this Markdown file")
    args = parser.parse_args()
    if args.quick:
        args.runs, args.running, args.rounds = 10_000, 100, 1
    began = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - began:6.0f} s] {text}", flush=True)

    source = stores.mlflow_sqlite(args.runs, args.running, progress=log)
    load_before = load_average()
    with tempfile.TemporaryDirectory(prefix="mltidy-bench-server-") as tmp:
        # The server gets a copy: it may write to its store, and the cached file stays clean.
        copy = Path(tmp) / "mlflow.db"
        shutil.copyfile(source.removeprefix("sqlite:///"), copy)
        server = ConfiguredMlflowServer(backend_uri=f"sqlite:///{copy}")
        log("starting mlflow server")
        server.start()
        try:
            log(f"server up in {server.startup_seconds:.0f} s at {server.url}")
            results = measure(programs(server.url), args.rounds, log)
        finally:
            server.stop()
    notes = [
        f"The machine was shared: load average {load_before} at the start, "
        f"{load_average()} at the end."
    ]
    section = report(results, args.runs, args.running, args.rounds, notes)
    print(section)
    if args.write:
        scan_speed.write_section(args.write, "server_speed.py", section)
        log(f"wrote the section into {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
