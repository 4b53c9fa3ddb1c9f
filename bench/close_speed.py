"""How fast ``mltidy close --yes`` ends thousands of dead records, next to the API loops.

Stores (``stores.py``, MLflow's and Optuna's real schemas): an MLflow store whose RUNNING runs
(``--records`` of them, among five times as many runs) and an Optuna storage whose RUNNING trials
(``--records`` of them, one in five trials) all carry provenance naming this host with a boot id
it does not have: started here before a reboot, so mltidy judges them dead. The PostgreSQL
stores are the same stores: the libraries make the schema, then the sqlite stores' rows are
copied in (``stores.copy_to_postgres``). Every program gets a fresh copy of the store (a copied
sqlite file, written to disk; a PostgreSQL database made from a template), made before its
clock starts:

* ``mltidy close --yes -f json``: scan, plan, re-read and close every dead record with its
  audit tags (compare-and-set, batched);
* the MlflowClient loop: the RUNNING runs found with ``search_runs``, then ``set_terminated``
  for each (``bench/alternatives.py mlflow-close``);
* Optuna's loop: ``study.tell(number, state=FAIL)`` for each RUNNING trial of every study
  (``bench/alternatives.py optuna-close``).

The loops write no audit trail and compare nothing: they do less than mltidy. Programs of one
comparison run in turns, each round starting with the other one (paired); every program must
close the same number of records. Whole processes, timed from outside (``scan_speed.run_once``).

``python bench/close_speed.py --write docs/performance.md`` replaces the "Closing in bulk"
section of that file; ``--quick`` is a one-round smoke run on 1,000 records.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests")]

import scan_speed  # noqa: E402
import stores  # noqa: E402
from scan_speed import BIN, PY, Program, load_average, run_once  # noqa: E402

SCRIPT = "close_speed.py"
HEADING = "## Closing in bulk"
TARGET_SECONDS = 10.0
ALT = str(HERE / "alternatives.py")
#: PostgreSQL settings the test server turns off, on again while closes are timed.
DURABLE = ("fsync", "synchronous_commit", "full_page_writes")


@dataclass
class Result:
    label: str
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss: list[float] = field(default_factory=list)
    closed: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.wall)


#: Makes a fresh store and returns its URL, and a clean-up for it.
Fresh = Callable[[], tuple[str, Callable[[], None]]]


def closed_count(label: str, output: str) -> int:
    data = json.loads(output)
    if "changes" in data:
        statuses = [c["status"] for c in data["changes"]]
        if any(s != "closed" for s in statuses):
            raise RuntimeError(f"{label}: not every change was closed: {set(statuses)}")
        return len(statuses)
    return len(data["records"])


def compare(
    programs: list[tuple[str, Callable[[str], list[str]]]],
    fresh: Fresh,
    rounds: int,
    log: Callable[[str], None],
) -> list[Result]:
    """Each program ``rounds`` times on a fresh store, in turns, each round starting with the
    next program."""
    results = [Result(label) for label, _ in programs]
    with tempfile.TemporaryDirectory(prefix="mltidy-bench-") as tmp:
        workdir = Path(tmp)
        for round_ in range(rounds):
            shift = round_ % len(programs)
            order = list(range(len(programs)))[shift:] + list(range(len(programs)))[:shift]
            for i in order:
                label, argv = programs[i]
                url, cleanup = fresh()
                try:
                    wall, cpu, rss, output = run_once(Program(label, argv(url)), workdir)
                finally:
                    cleanup()
                result = results[i]
                found = closed_count(label, output)
                if result.closed is not None and found != result.closed:
                    raise RuntimeError(f"{label}: closed {result.closed}, then {found}")
                result.closed = found
                result.wall.append(wall)
                result.cpu.append(cpu)
                result.rss.append(rss)
                log(f"    round {round_ + 1}: {label}: {wall:.2f} s ({found:,} closed)")
    if len({r.closed for r in results}) > 1:
        raise RuntimeError(f"the programs closed different numbers: {[r.closed for r in results]}")
    return results


def sqlite_copies(template: str, folder: Path) -> Fresh:
    source = Path(template.removeprefix("sqlite:///"))
    counter = iter(range(10**6))

    def fresh() -> tuple[str, Callable[[], None]]:
        copy = folder / f"copy-{next(counter)}.db"
        shutil.copyfile(source, copy)
        # On disk before the clock starts, as a user's store is: left in the page cache, the
        # copy's gigabytes would be written out by the program's first commit, and timed.
        with copy.open("rb+") as handle:
            os.fsync(handle.fileno())
        return f"sqlite:///{copy}", lambda: copy.unlink(missing_ok=True)

    return fresh


def postgres_copies(server: object, template: str) -> Fresh:
    counter = iter(range(10**6))

    def fresh() -> tuple[str, Callable[[], None]]:
        name = f"{template}_copy_{next(counter)}"
        server._admin_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')  # type: ignore[attr-defined]
        return server.url(name), lambda: server.drop_database(name)  # type: ignore[attr-defined]

    return fresh


def mltidy_close(kind: str) -> Callable[[str], list[str]]:
    return lambda url: [str(BIN / "mltidy"), "close", "--yes", "-f", "json", f"--{kind}", url]


def loop(what: str) -> Callable[[str], list[str]]:
    return lambda url: [PY, ALT, what, url]


def _s(value: float) -> str:
    return scan_speed._s(value)


def paired_ratio(slow: Result, fast: Result) -> float:
    """The median of round-by-round ratios (the rounds were run in turns)."""
    return statistics.median(s / f for s, f in zip(slow.wall, fast.wall, strict=True))


def table(title: str, results: list[Result]) -> list[str]:
    mltidy = results[0]
    lines = [
        f"### {title}",
        "",
        "| program | median wall | range (s) | median CPU | peak RSS | closed | per record | "
        "vs. mltidy (paired) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for result in results:
        versus = "" if result is mltidy else f"{paired_ratio(result, mltidy):.0f}x slower"
        per = result.median / (result.closed or 1)
        lines.append(
            f"| {result.label} | {_s(result.median)} | {min(result.wall):.2f}-"
            f"{max(result.wall):.2f} | {_s(statistics.median(result.cpu))} | "
            f"{max(result.rss):.0f} MiB | {result.closed:,} | {per * 1000:.2f} ms | {versus} |"
        )
    return [*lines, ""]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--records", type=int, default=10_000, help="dead records per store")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--quick", action="store_true", help="one round, 1,000 records")
    parser.add_argument("--write", type=Path, help="put the section into this Markdown file")
    args = parser.parse_args()
    if args.quick:
        args.records, args.rounds = 1_000, 1
    began = time.monotonic()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - began:6.0f} s] {text}", flush=True)

    host = socket.gethostname()
    runs = args.records * 5
    studies = max(1, args.records // 20)
    mlflow_url = stores.mlflow_sqlite(runs, args.records, progress=log, dead_host=host)
    optuna_url = stores.optuna_sqlite(studies, 100, log, running_every=5, dead_host=host)
    load_before = load_average()
    tables: list[list[str]] = []
    summary: list[tuple[str, Result, Result]] = []
    with tempfile.TemporaryDirectory(prefix="mltidy-bench-close-") as tmp:
        folder = Path(tmp)
        for title, kind, url, what, label in (
            ("MLflow, sqlite", "mlflow", mlflow_url, "mlflow-close", "MlflowClient loop"),
            ("Optuna, sqlite", "optuna", optuna_url, "optuna-close", "Optuna tell(FAIL) loop"),
        ):
            log(title)
            results = compare(
                [(f"mltidy close --yes ({kind})", mltidy_close(kind)), (label, loop(what))],
                sqlite_copies(url, folder),
                args.rounds,
                log,
            )
            tables.append(table(f"{title}: {args.records:,} dead records", results))
            summary.append((title, results[0], results[1]))
    if not args.no_postgres:
        from servers import PostgresServer

        log("PostgreSQL: starting a throw-away server")
        server = PostgresServer().start()
        try:
            pg_ml = server.create_database("close_mlflow")
            stores.create_mlflow_schema(pg_ml)
            stores.copy_to_postgres(mlflow_url, pg_ml, stores.MLFLOW_TABLES, log)
            pg_op = server.create_database("close_optuna")
            stores.create_optuna_schema(pg_op)
            stores.copy_to_postgres(optuna_url, pg_op, stores.OPTUNA_TABLES, log)
            # The stores were copied in as the tests run the server, without waiting for the
            # disk; the closes are timed with every commit on disk, as a server keeps data.
            for setting in DURABLE:
                server._admin_sql(f"ALTER SYSTEM SET {setting} = on")
            server._admin_sql("SELECT pg_reload_conf()")
            for title, kind, template, what, label in (
                (
                    "MLflow, PostgreSQL",
                    "mlflow",
                    "close_mlflow",
                    "mlflow-close",
                    "MlflowClient loop",
                ),
                (
                    "Optuna, PostgreSQL",
                    "optuna",
                    "close_optuna",
                    "optuna-close",
                    "Optuna tell(FAIL) loop",
                ),
            ):
                log(title)
                results = compare(
                    [(f"mltidy close --yes ({kind})", mltidy_close(kind)), (label, loop(what))],
                    postgres_copies(server, template),
                    args.rounds,
                    log,
                )
                tables.append(table(f"{title}: {args.records:,} dead records", results))
                summary.append((title, results[0], results[1]))
        finally:
            server.stop()
    lines = [
        HEADING,
        "",
        scan_speed.GENERATED.format(script=SCRIPT),
        "",
        f"`mltidy close --yes` on stores holding {args.records:,} dead records each (MLflow: "
        f"{args.records:,} RUNNING runs among {runs:,}; Optuna: {args.records:,} RUNNING trials "
        f"in {studies:,} studies of 100), measured by `bench/close_speed.py`: {args.rounds} "
        f"round{'s' if args.rounds != 1 else ''}, every program on a fresh copy of the store "
        "(a sqlite copy is written to disk before the clock starts), the programs of one "
        "comparison in turns (paired; the ratio is the median of the rounds' ratios). Whole "
        "processes: mltidy scans, judges, plans, re-reads and closes, each record "
        "compare-and-set with its audit tags in one transaction per batch of 500; the loops "
        "only end the records. PostgreSQL is the test suite's throw-away server on the same "
        "machine, timed with every commit on disk (`fsync`, `synchronous_commit` and "
        "`full_page_writes` on; the stores were copied in with them off) and its small test "
        f"buffer cache (32 MB). The machine was shared: load average {load_before} at the start, "
        f"{load_average()} at the end.",
        "",
        "| target (issue 15) | wanted | measured |  |",
        "| --- | --- | --- | --- |",
    ]
    for title, mltidy, alternative in summary:
        met = "met" if mltidy.median <= TARGET_SECONDS else "**not met**"
        lines.append(
            f"| {args.records:,} dead records, {title} | at most {TARGET_SECONDS:.0f} s | "
            f"{_s(mltidy.median)} ({paired_ratio(alternative, mltidy):.0f}x faster than the "
            f"{alternative.label}) | {met} |"
        )
    lines.append("")
    for part in tables:
        lines += part
    section = "\n".join(lines)
    print(section)
    if args.write:
        scan_speed.write_section(args.write, SCRIPT, section)
        log(f"wrote the section into {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
