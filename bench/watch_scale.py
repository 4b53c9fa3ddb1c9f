"""What one ``mltidy watch`` poll costs on a 1,000,000-run store, and whether the daemon's
memory stays flat over 1,000 polls of a store that keeps changing.

**One poll.** A cached MLflow sqlite store (``stores.py``) of ``--runs`` runs, 1,000 RUNNING. In
one process, in turns (each round starting with the next one, so load from elsewhere hits
them alike):

* **daemon poll**: ``watch.poll`` with the daemon's ``PollMemory``, after a first poll: the
  RUNNING runs (one read of ``runs``: ``status`` has no index), plus only the runs added since
  the previous poll and the runs RUNNING then (``rowid`` and primary-key ranges);
* **one-shot poll**: ``watch.poll`` without memory (``watch --once``; the daemon's first poll):
  also reads all of ``runs`` for the runs that ended since the last poll (``end_time`` has no
  index);
* **raw RUNNING query** (the yardstick): the one query any tool must run to find the RUNNING
  runs, through ``sqlite3``, in the same process.

Wall and CPU time of each; the poll also judges every RUNNING run, builds its events and
records them in its state (deduplicated), as the daemon does.

**Soak.** ``mltidy watch --interval 0.05s`` as a daemon (the installed entry point) over a
store that a writer process keeps changing (each 20 ms a run starts, a RUNNING run ends, a
run is killed on this host: new events all the time), for ``--polls`` polls; its resident
memory (``VmRSS``) is sampled as it goes.

``python bench/watch_scale.py --write docs/performance.md`` replaces the "watch at scale"
section of that file; ``--quick`` uses 100,000 runs and 100 polls.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import scan_speed  # noqa: E402
import stores  # noqa: E402
from scan_speed import BIN, load_average  # noqa: E402

SCRIPT = "watch_scale.py"
HEADING = "## watch at scale"
TARGET_SECONDS = 1.0

RAW = """
SELECT r.run_uuid, r.name, r.status, r.start_time, e.name,
       (SELECT max(m.timestamp) FROM latest_metrics m WHERE m.run_uuid = r.run_uuid)
FROM runs r JOIN experiments e ON e.experiment_id = r.experiment_id
WHERE r.status = 'RUNNING' AND r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active'
"""


def timed(step: Callable[[], object]) -> tuple[float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def poll_costs(
    url: str, rounds: int, log: Callable[[str], None]
) -> dict[str, list[tuple[float, float]]]:
    """Each program ``rounds`` times, in turns; wall and CPU seconds of each run."""
    from mltidy.backends.identity import store_spec
    from mltidy.model import Selection, StoreKind
    from mltidy.watch import poll as watch
    from mltidy.watch.state import WatchState

    specs = [store_spec(StoreKind.MLFLOW, url, "bench")]
    options = watch.WatchOptions(stale_after=timedelta(hours=1))
    memory = watch.PollMemory()
    path = url.removeprefix("sqlite:///")
    with tempfile.TemporaryDirectory(prefix="mltidy-bench-watch-") as tmp:
        daemon_state = WatchState(Path(tmp) / "daemon.db")
        once_state = WatchState(Path(tmp) / "once.db")

        def daemon() -> object:
            return watch.poll(specs, Selection(), daemon_state, [], options, memory=memory)

        def once() -> object:
            return watch.poll(specs, Selection(), once_state, [], options)

        def raw() -> object:
            with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
                rows = conn.execute(RAW).fetchall()
            conn.close()
            return rows

        first = timed(daemon)
        log(f"    first daemon poll (reads the whole history): {first[0]:.2f} s")
        timed(once)
        programs = {"daemon poll": daemon, "one-shot poll": once, "raw RUNNING query": raw}
        found: dict[str, list[tuple[float, float]]] = {name: [] for name in programs}
        found["first daemon poll"] = [first]
        names = list(programs)
        for round_ in range(rounds):
            shift = round_ % len(names)
            for name in names[shift:] + names[:shift]:
                found[name].append(timed(programs[name]))
            log(
                f"    round {round_ + 1}: "
                + ", ".join(f"{n} {found[n][-1][0]:.2f} s" for n in names)
            )
        daemon_state.close()
        once_state.close()
    return found


# -- the soak --------------------------------------------------------------------------------


def writer(path: Path, stop: threading.Event, pid: int) -> None:
    """Keep the store changing: a run starts, a RUNNING run ends, a run dies on this host."""
    host = socket.gethostname()
    conn = sqlite3.connect(path, timeout=30, isolation_level=None)
    experiment = conn.execute("SELECT min(experiment_id) FROM experiments").fetchone()[0]
    n = 0
    while not stop.is_set():
        now = int(time.time() * 1000)
        conn.execute("BEGIN IMMEDIATE")
        run_id = uuid.uuid4().hex
        conn.execute(
            "INSERT INTO runs (run_uuid, name, source_type, source_name, entry_point_name, "
            "user_id, status, start_time, lifecycle_stage, artifact_uri, experiment_id) "
            "VALUES (?, ?, 'LOCAL', 'train.py', '', 'soak', 'RUNNING', ?, 'active', '', ?)",
            (run_id, f"soak-{n}", now, experiment),
        )
        conn.executemany(
            "INSERT INTO tags (key, value, run_uuid) VALUES (?, ?, ?)",
            [
                ("mltidy.host", host, run_id),
                ("mltidy.pid", str(pid), run_id),  # an ended process: the run is dead
                ("mltidy.pid_start", "1.00", run_id),
            ],
        )
        oldest = conn.execute(
            "SELECT run_uuid FROM runs WHERE status = 'RUNNING' AND name LIKE 'soak-%' "
            "ORDER BY start_time LIMIT 1 OFFSET 50"
        ).fetchone()
        if oldest:
            conn.execute(
                "UPDATE runs SET status = ?, end_time = ? WHERE run_uuid = ?",
                ("FINISHED" if n % 2 else "KILLED", now, oldest[0]),
            )
        conn.execute("COMMIT")
        n += 1
        stop.wait(0.02)
    conn.close()


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def soak(source: str, polls: int, log: Callable[[str], None]) -> list[tuple[int, float, float]]:
    """(poll, seconds since start, RSS MiB) samples of a watch daemon over a changing store."""
    samples: list[tuple[int, float, float]] = []
    with tempfile.TemporaryDirectory(prefix="mltidy-bench-soak-") as tmp:
        db = Path(tmp) / "mlflow.db"
        shutil.copyfile(source.removeprefix("sqlite:///"), db)
        ended = subprocess.Popen([sys.executable, "-c", "pass"])
        ended.wait()
        stop = threading.Event()
        thread = threading.Thread(target=writer, args=(db, stop, ended.pid), daemon=True)
        thread.start()
        env = scan_speed._clean_env({})
        daemon = subprocess.Popen(
            [
                str(BIN / "mltidy"),
                "watch",
                "--interval",
                "0.05s",
                "--mlflow",
                f"sqlite:///{db}",
                "--state",
                str(Path(tmp) / "state.db"),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        assert daemon.stderr is not None
        began = time.monotonic()
        count = 0
        every = max(1, polls // 20)
        try:
            for line in daemon.stderr:
                if not line.startswith("mltidy: polled"):
                    if "error" in line:
                        log("    " + line.strip())
                    continue
                count += 1
                if count == 1 or count % every == 0:
                    samples.append((count, time.monotonic() - began, rss_mib(daemon.pid)))
                    log(f"    poll {count}: RSS {samples[-1][2]:.1f} MiB")
                if count >= polls:
                    break
        finally:
            daemon.send_signal(signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                daemon.kill()
            stop.set()
            thread.join(timeout=30)
    return samples


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--polls", type=int, default=1_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--write", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.rounds, args.polls = 100_000, 3, 100
    began = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - began:6.0f} s] {text}", flush=True)

    url = stores.mlflow_sqlite(args.runs, 1_000, progress=log)
    small = stores.mlflow_sqlite(10_000, 100, progress=log)
    load_before = load_average()
    log(f"one poll, {args.runs:,} runs")
    costs = poll_costs(url, args.rounds, log)
    log(f"soak, {args.polls:,} polls")
    samples = soak(small, args.polls, log)
    load_after = load_average()

    def med(name: str, index: int) -> float:
        return statistics.median(v[index] for v in costs[name])

    daemon_wall, raw_wall = med("daemon poll", 0), med("raw RUNNING query", 0)
    paired = statistics.median(
        d[0] - r[0] for d, r in zip(costs["daemon poll"], costs["raw RUNNING query"], strict=True)
    )
    first, last = samples[0], samples[-1]
    settled = [s for s in samples if s[0] >= max(10, args.polls // 10)] or samples
    growth = settled[-1][2] - settled[0][2]
    lines = [
        HEADING,
        "",
        scan_speed.GENERATED.format(script=SCRIPT),
        "",
        f"One `watch` poll of an MLflow sqlite store of {args.runs:,} runs (1,000 RUNNING), "
        f"measured in one process by `bench/watch_scale.py`: {args.rounds} rounds, the "
        "programs in turns. A poll judges every RUNNING run, builds its events and records "
        "them (deduplicated) in its state. The daemon remembers where each store's history "
        "stood (the largest `rowid` of `runs` and the runs RUNNING then), so after its first "
        "poll it reads only the runs added since and the runs that were RUNNING (a `rowid` "
        "range and primary-key lookups), plus the one read of `runs` that finding RUNNING "
        "runs takes anyway (`status` has no index); it reads the whole history again every "
        "hour, and whenever `rowid` went backwards. It also keeps the rhythm (metric history) "
        "it read of each RUNNING run that needs one, and reads it again only for a run with "
        "new activity. A poll without that memory (`watch --once`, the daemon's first poll) "
        "reads `runs` twice and every rhythm. The machine was shared: load "
        f"average {load_before} at the start, {load_after} at the end.",
        "",
        "| target (issue 15) | wanted | measured |  |",
        "| --- | --- | --- | --- |",
        f"| one poll, {args.runs:,} runs, 1,000 RUNNING | at most {TARGET_SECONDS:.0f} s | "
        f"{scan_speed._s(daemon_wall)} wall, {scan_speed._s(med('daemon poll', 1))} CPU "
        f"(the raw RUNNING query alone: {scan_speed._s(raw_wall)}; paired difference "
        f"{paired:+.2f} s) | {'met' if daemon_wall <= TARGET_SECONDS else '**not met**'} |",
        f"| memory over {last[0]:,} polls of a changing store | flat | {first[2]:.0f} MiB "
        f"after the first poll, {settled[0][2]:.0f} MiB at poll {settled[0][0]:,}, "
        f"{last[2]:.0f} MiB at poll {last[0]:,} ({growth:+.1f} MiB) | "
        f"{'met' if abs(growth) <= 2 else '**not met**'} |",
        "",
        "| program | median wall | range (s) | median CPU |",
        "| --- | --- | --- | --- |",
    ]
    for name in ("daemon poll", "one-shot poll", "raw RUNNING query", "first daemon poll"):
        walls = [v[0] for v in costs[name]]
        lines.append(
            f"| {name} | {scan_speed._s(med(name, 0))} | {min(walls):.2f}-{max(walls):.2f} | "
            f"{scan_speed._s(med(name, 1))} |"
        )
    lines += [
        "",
        f"The soak: `mltidy watch --interval 0.05s` (the installed entry point) over a copy of "
        "a 10,000-run store that a writer keeps changing (every 20 ms a run starts, a RUNNING "
        "run finishes or is killed, and a run of an ended process on this host appears: new "
        f"dead and ended-run events on every poll); {last[0]:,} polls in {last[1]:.0f} s.",
        "",
        "| poll | seconds | RSS |",
        "| --- | --- | --- |",
        *(f"| {n:,} | {t:.0f} | {rss:.1f} MiB |" for n, t, rss in samples),
        "",
    ]
    section = "\n".join(lines)
    print(section)
    if args.write:
        scan_speed.write_section(args.write, SCRIPT, section)
        log(f"wrote the section into {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
