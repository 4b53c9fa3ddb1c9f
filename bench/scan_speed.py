"""How fast ``mltidy scan`` is on large stores, next to what a user would run instead.

Every program is timed as a whole process (``python`` start-up and imports included), because
that is what cron and CI pay: wall time from ``fork`` to ``wait4``, CPU time and peak RSS from
the child's own ``rusage``. The programs of one comparison run in turns, round after round
(A B C, A B C, ...), so a burst of load from elsewhere hits them alike, and the report gives
medians. Stores are generated once (``stores.py``) and cached outside the repository; the
PostgreSQL stores live in a throw-away server started from the machine's PostgreSQL binaries.

Run ``python bench/scan_speed.py --write docs/performance.md`` (``nox -s bench``), or
``--quick`` for a one-round smoke run on small stores. Benchmarks are not tests: nothing here
fails when a number is bad; the report says what was measured.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path[:0] = [str(HERE), str(ROOT / "tests")]

import stores  # noqa: E402

BIN = Path(sys.executable).parent
PY = sys.executable
ALT = str(HERE / "alternatives.py")


# ------------------------------------------------------------------------------------------
# Measuring one process
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """One command line to time, and how to count the RUNNING records it printed."""

    label: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    counts: bool = True


@dataclass
class Timings:
    wall: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_mib: list[float] = field(default_factory=list)
    records: int | None = None

    @property
    def median(self) -> float:
        return statistics.median(self.wall)

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu)

    @property
    def peak_mib(self) -> float:
        return max(self.rss_mib)


def _clean_env(extra: dict[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLTIDY_", "MLFLOW_", "OPTUNA_")) and k != "COLUMNS"
    }
    env.update(extra)
    return env


#: Starts the program with posix_spawn from a bare interpreter and reports its wall time and
#: rusage. Measuring from this small process, not from the bench itself, matters for memory:
#: Linux counts the RSS a child had before ``exec`` (a copy of its parent) in its ``ru_maxrss``.
MEASURE = """
import json, os, sys, time
began = time.perf_counter()
pid = os.posix_spawn(sys.argv[2], sys.argv[2:], os.environ)
_, status, usage = os.wait4(pid, 0)
wall = time.perf_counter() - began
with open(sys.argv[1], "w") as out:
    json.dump({"wall": wall, "cpu": usage.ru_utime + usage.ru_stime,
               "rss_kib": usage.ru_maxrss, "code": os.waitstatus_to_exitcode(status)}, out)
"""


def run_once(program: Program, workdir: Path) -> tuple[float, float, float, str]:
    """Wall seconds, CPU seconds and peak RSS (MiB) of one run, and what it printed."""
    out_path, err_path, usage_path = (workdir / n for n in ("stdout", "stderr", "usage"))
    with out_path.open("wb") as out, err_path.open("wb") as err:
        subprocess.run(
            [PY, "-I", "-S", "-c", MEASURE, str(usage_path), *program.argv],
            stdout=out,
            stderr=err,
            stdin=subprocess.DEVNULL,
            cwd=workdir,
            env=_clean_env(program.env),
            check=True,
        )
    usage = json.loads(usage_path.read_text())
    if usage["code"] not in (0, 1):
        raise RuntimeError(
            f"{program.label} failed ({usage['code']}):\n"
            + err_path.read_text(errors="replace")[-2000:]
        )
    return usage["wall"], usage["cpu"], usage["rss_kib"] / 1024, out_path.read_text()


def compare(programs: list[Program], rounds: int, log: Callable[[str], None]) -> list[Timings]:
    """Run the programs in turns, ``rounds`` times, and check they found the same records."""
    results = [Timings() for _ in programs]
    with tempfile.TemporaryDirectory(prefix="mltidy-bench-") as tmp:
        workdir = Path(tmp)
        for round_ in range(rounds):
            for program, timings in zip(programs, results, strict=True):
                wall, cpu, rss, output = run_once(program, workdir)
                timings.wall.append(wall)
                timings.cpu.append(cpu)
                timings.rss_mib.append(rss)
                if round_ == 0 and program.counts:
                    timings.records = len(json.loads(output)["records"])
                log(f"    {program.label}: {wall:.2f} s, {rss:.0f} MiB")
    counted = {t.records for t in results if t.records is not None}
    if len(counted) > 1:
        raise RuntimeError(f"the programs disagree on the number of RUNNING records: {counted}")
    return results


def mltidy_scan(kind: str, url: str, label: str = "mltidy scan", **env: str) -> Program:
    return Program(label, [str(BIN / "mltidy"), "scan", "--format", "json", f"--{kind}", url], env)


def alternative(what: str, url: str, label: str) -> Program:
    return Program(label, [PY, ALT, what, url])


# ------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------


@dataclass
class Report:
    lines: list[str] = field(default_factory=list)

    def add(self, *lines: str) -> None:
        self.lines.extend(lines)

    def table(self, header: list[str], rows: list[list[str]]) -> None:
        self.add(
            "| " + " | ".join(header) + " |",
            "| " + " | ".join("---" for _ in header) + " |",
            *("| " + " | ".join(row) + " |" for row in rows),
            "",
        )


def _s(value: float) -> str:
    return f"{value:.2f} s" if value >= 0.1 else f"{value * 1000:.0f} ms"


def comparison_rows(programs: list[Program], timings: list[Timings]) -> list[list[str]]:
    """Rows of one comparison; the first program is mltidy, the others are put next to it."""
    base = timings[0]
    rows = []
    for program, t in zip(programs, timings, strict=True):
        if t is base:
            versus = ""
        elif t.median >= base.median:
            versus = f"{t.median / base.median:.1f}x slower"
        else:
            versus = f"mltidy takes {_s(base.median - t.median)} more"
        rows.append(
            [
                program.label,
                _s(t.median),
                f"{min(t.wall):.2f}-{max(t.wall):.2f}",
                _s(t.cpu_median),
                f"{t.peak_mib:.0f} MiB",
                str(t.records if t.records is not None else ""),
                versus,
            ]
        )
    return rows


HEADER = ["program", "median wall", "range (s)", "median CPU", "peak RSS", "RUNNING found", ""]


def machine(pg_version: str | None) -> list[list[str]]:
    import mlflow
    import optuna
    import psycopg2
    import sqlalchemy

    from mltidy import __version__

    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    return [
        ["CPU", f"{os.cpu_count()} cores, {cpu}"],
        ["memory", f"{mem_kib / 2**20:.0f} GiB"],
        ["OS", f"{platform.system()} {platform.release()}"],
        ["Python", platform.python_version()],
        [
            "versions",
            f"mltidy {__version__}, mlflow {mlflow.__version__}, optuna {optuna.__version__}, "
            f"SQLAlchemy {sqlalchemy.__version__}, psycopg2 {psycopg2.__version__.split()[0]}, "
            f"SQLite {sqlite3.sqlite_version}"
            + (f", PostgreSQL {pg_version}" if pg_version else ""),
        ],
    ]


def load_average() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


#: The marker a generated section of docs/performance.md starts with (after its heading).
GENERATED = "<!-- Generated by bench/{script}. Do not edit by hand. -->"


def sections(text: str) -> list[tuple[str, str]]:
    """A Markdown document as (``## heading``, text up to the next such heading) pairs; the
    part before the first heading comes first, with an empty heading."""
    parts: list[tuple[str, str]] = [("", "")]
    for line in text.splitlines(keepends=True):
        if line.startswith("## "):
            parts.append((line.rstrip("\n"), ""))
        heading, part = parts[-1]
        parts[-1] = (heading, part + line)
    return parts


def write_section(path: Path, script: str, section: str) -> None:
    """Put ``section`` (which starts with its ``## `` heading and ``GENERATED`` for ``script``)
    into ``path``: in place of the section of that heading, or at the end."""
    text = path.read_text() if path.exists() else ""
    heading = section.split("\n", 1)[0]
    parts = sections(text)
    body = section.rstrip("\n") + "\n\n"
    if any(h == heading for h, _ in parts):
        out = "".join(body if h == heading else part for h, part in parts)
    else:
        out = text.rstrip("\n") + "\n\n" + body
    path.write_text(out.rstrip("\n") + "\n")


def sections_of_other_scripts(path: Path, script: str) -> str:
    """The sections of ``path`` that another bench script generated (kept when this script
    rewrites the file)."""
    if not path.exists():
        return ""
    own = GENERATED.format(script=script)
    kept = [
        part
        for heading, part in sections(path.read_text())
        if heading and "<!-- Generated by bench/" in part and own not in part
    ]
    return "".join(kept)


# ------------------------------------------------------------------------------------------
# Where the time goes
# ------------------------------------------------------------------------------------------

#: ``mltidy scan`` in one process, with CPU clocks around its phases (the functions are wrapped,
#: not changed; CPU time, because wall time on a shared machine measures the neighbours too).
#: Prints the phases as JSON on stderr.
PHASES = """
import json, sys, time
began = time.process_time()
import mltidy.cli.app as app
import mltidy.cli.scan as cli_scan
import mltidy.cli.selection as cli_selection
import mltidy.backends.session as store_session
import mltidy.scan as scan
spent = {"import the CLI (typer, mltidy)": time.process_time() - began}
marks = {}

def timed(label, function):
    def wrapper(*args, **kwargs):
        start = time.process_time()
        try:
            return function(*args, **kwargs)
        finally:
            spent[label] = spent.get(label, 0.0) + time.process_time() - start
    return wrapper

def reading(iterator):
    while True:
        start = time.process_time()
        try:
            item = next(iterator)
        except StopIteration:
            return
        finally:
            spent["read the store (queries, records)"] = (
                spent.get("read the store (queries, records)", 0.0) + time.process_time() - start)
        yield item

watched = set()

def backend(self, key):
    found = opened(self, key)
    if found is not None and id(found) not in watched:
        watched.add(id(found))
        active = found.iter_active
        found.iter_active = lambda selection: reading(active(selection))
    return found

def resolve(self, **kwargs):
    marks["command"] = time.process_time()
    return resolved(self, **kwargs)

opened = timed("open the store (schema check)", store_session.StoreSession.backend)
store_session.StoreSession.backend = backend
resolved = cli_selection.Given.resolve
cli_selection.Given.resolve = resolve
scan.judge = timed("judge", scan.judge)
cli_scan.write_json = timed("write JSON", cli_scan.write_json)
sys.argv = ["mltidy", *sys.argv[1:]]
main_at = time.process_time()
try:
    app.main()
except SystemExit:
    pass
spent["parse the options (typer)"] = marks["command"] - main_at
spent["total in the process"] = time.process_time() - began
sys.stderr.write("PHASES=" + json.dumps(spent) + "\\n")
"""


def phases(kind: str, url: str, rounds: int) -> dict[str, float]:
    """Median CPU seconds of the phases of ``mltidy scan`` over ``rounds`` runs."""
    found: dict[str, list[float]] = {}
    for _ in range(rounds):
        done = subprocess.run(
            [PY, "-c", PHASES, "scan", "--format", "json", f"--{kind}", url],
            capture_output=True,
            text=True,
            env=_clean_env({}),
            check=True,
        )
        line = next(x for x in done.stderr.splitlines() if x.startswith("PHASES="))
        for label, seconds in json.loads(line.removeprefix("PHASES=")).items():
            found.setdefault(label, []).append(seconds)
    return {label: statistics.median(values) for label, values in found.items()}


# ------------------------------------------------------------------------------------------
# Query plans
# ------------------------------------------------------------------------------------------


def captured_queries(kind: str, url: str) -> tuple[list[tuple[str, Any]], int]:
    """The statements mltidy's fast path runs for one scan, caught on their way to the driver:
    the main query and the first tag or attribute query, and how many statements there were."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from mltidy.backends import Selection, open_backend
    from mltidy.model import StoreKind

    seen: list[tuple[str, Any]] = []

    def catch(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        seen.append((statement, parameters))

    event.listen(Engine, "before_cursor_execute", catch)
    try:
        os.environ["MLTIDY_READ_PATH"] = "fast"
        with open_backend(StoreKind(kind), url) as backend:
            for _ in backend.iter_active(Selection()):
                pass
    finally:
        os.environ.pop("MLTIDY_READ_PATH", None)
        event.remove(Engine, "before_cursor_execute", catch)
    wanted = ("FROM runs", "FROM tags", "FROM trials", "trial_user_attributes")
    found: dict[str, tuple[str, Any]] = {}
    for statement, parameters in seen:
        for marker in wanted:
            if marker in statement and marker not in found:
                found[marker] = (statement, parameters)
    return list(found.values()), len(seen)


def sqlite_plan(url: str, statement: str, parameters: Any) -> list[str]:
    path = url.removeprefix("sqlite:///")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as conn:
        rows = conn.execute("EXPLAIN QUERY PLAN " + statement, parameters).fetchall()
    conn.close()
    return [row[-1] for row in rows]


def postgres_plan(url: str, statement: str, parameters: Any) -> list[str]:
    import psycopg2

    conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn.cursor() as cursor:
            cursor.execute("EXPLAIN (ANALYZE, COSTS OFF, TIMING OFF) " + statement, parameters)
            return [row[0] for row in cursor.fetchall()]
    finally:
        conn.close()


def first_line(statement: str) -> str:
    text = " ".join(statement.split())
    return text if len(text) <= 150 else text[:147] + "..."


def plans_section(report: Report, title: str, kind: str, url: str, dialect: str) -> None:
    statements, count = captured_queries(kind, url)
    report.add(
        f"### {title}",
        "",
        f"{count} statements in all for the scan (schema checks included).",
        "",
    )
    for statement, parameters in statements:
        plan = (sqlite_plan if dialect == "sqlite" else postgres_plan)(url, statement, parameters)
        plan = [line if len(line) <= 160 else line[:157] + "..." for line in plan]
        report.add(f"`{first_line(statement)}`", "", "```", *plan, "```", "")


# ------------------------------------------------------------------------------------------
# The benchmark
# ------------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the fast comparisons")
    parser.add_argument(
        "--slow-rounds", type=int, default=3, help="rounds of comparisons with the Optuna loop"
    )
    parser.add_argument(
        "--sizes",
        default="10000,100000,1000000",
        help="MLflow store sizes (runs) for the scaling table, comma separated",
    )
    parser.add_argument("--no-postgres", action="store_true", help="skip the PostgreSQL stores")
    parser.add_argument("--quick", action="store_true", help="one round on small stores")
    parser.add_argument("--write", type=Path, help="write the Markdown report to this file")
    args = parser.parse_args()
    if args.quick:
        args.rounds = args.slow_rounds = 1
        args.sizes = "10000"
    sizes = [int(s) for s in args.sizes.split(",") if s]
    started = time.monotonic()
    load_before = load_average()

    def log(text: str) -> None:
        print(f"[{time.monotonic() - started:6.0f} s] {text}", flush=True)

    main_runs = 10_000 if args.quick else 100_000
    studies, trials = (100, 100) if args.quick else (1000, 100)
    mlflow_url = stores.mlflow_sqlite(main_runs, main_runs // 100, progress=log)
    optuna_url = stores.optuna_sqlite(studies, trials, progress=log)

    report = Report()
    summary: list[list[str]] = []
    r = args.rounds

    log("start-up")
    startup = [
        Program("mltidy --help", [str(BIN / "mltidy"), "--help"], counts=False),
        Program("mlflow --help", [str(BIN / "mlflow"), "--help"], counts=False),
        Program("optuna --help", [str(BIN / "optuna"), "--help"], counts=False),
        Program("python -c 'import sqlalchemy'", [PY, "-c", "import sqlalchemy"], counts=False),
        Program("python -c pass", [PY, "-c", "pass"], counts=False),
    ]
    startup_t = compare(startup, max(r, 5), log)

    log(f"MLflow sqlite, {main_runs:,} runs")
    ml = [
        mltidy_scan("mlflow", mlflow_url),
        alternative("mlflow-client", mlflow_url, "MlflowClient loop"),
        alternative("mlflow-sql", mlflow_url, "one raw SQL query (sqlite3)"),
    ]
    ml_t = compare(ml, r, log)

    log(f"Optuna sqlite, {studies:,} x {trials} trials")
    op = [
        mltidy_scan("optuna", optuna_url),
        alternative("optuna-api", optuna_url, "Optuna API loop"),
        alternative("optuna-sql", optuna_url, "one raw SQL query (sqlite3)"),
    ]
    op_t = compare(op, args.slow_rounds, log)

    log("phases of mltidy scan")
    ml_phases = phases("mlflow", mlflow_url, r)
    op_phases = phases("optuna", optuna_url, r)

    log("library path (MLTIDY_READ_PATH=library)")
    lib = [
        mltidy_scan(
            "mlflow", mlflow_url, "mltidy scan, MLflow, library path", MLTIDY_READ_PATH="library"
        ),
        mltidy_scan(
            "optuna", optuna_url, "mltidy scan, Optuna, library path", MLTIDY_READ_PATH="library"
        ),
    ]
    lib_t = compare(lib, args.slow_rounds, log)

    scaling: list[tuple[str, int, int, Timings, Timings]] = []
    for runs in sizes:
        for running in sorted({max(1, runs // 100), min(1000, runs)}):
            log(f"scaling: {runs:,} runs, {running:,} RUNNING")
            url = stores.mlflow_sqlite(runs, running, progress=log)
            pair = [mltidy_scan("mlflow", url), alternative("mlflow-sql", url, "raw query")]
            t_mltidy, t_raw = compare(pair, r, log)
            scaling.append((url, runs, running, t_mltidy, t_raw))

    pg_version = None
    pg_sections: list[tuple[str, list[Program], list[Timings]]] = []
    pg_plans: list[tuple[str, str, str]] = []
    server = None
    if not args.no_postgres:
        from servers import PostgresServer

        log("PostgreSQL: starting a throw-away server")
        server = PostgresServer().start()
    try:
        if server is not None:
            pg_ml = server.create_database("bench_mlflow")
            pg_op = server.create_database("bench_optuna")
            # The sqlite stores' rows, copied (minutes, where inserting them took a quarter of
            # an hour): the same stores on both databases.
            log(f"PostgreSQL: MLflow {main_runs:,} runs, copied from the sqlite store")
            stores.create_mlflow_schema(pg_ml)
            stores.copy_to_postgres(mlflow_url, pg_ml, stores.MLFLOW_TABLES, log)
            log(f"PostgreSQL: Optuna {studies:,} x {trials}, copied from the sqlite store")
            stores.create_optuna_schema(pg_op)
            stores.copy_to_postgres(optuna_url, pg_op, stores.OPTUNA_TABLES, log)
            pg_version = _pg_version(pg_ml)
            programs = [
                mltidy_scan("mlflow", pg_ml),
                alternative("mlflow-client", pg_ml, "MlflowClient loop"),
                alternative("mlflow-sql", pg_ml, "one raw SQL query (psycopg2)"),
            ]
            log("PostgreSQL: MLflow")
            pg_sections.append(
                (f"MLflow, PostgreSQL, {main_runs:,} runs", programs, compare(programs, r, log))
            )
            programs = [
                mltidy_scan("optuna", pg_op),
                alternative("optuna-api", pg_op, "Optuna API loop"),
                alternative("optuna-sql", pg_op, "one raw SQL query (psycopg2)"),
            ]
            log("PostgreSQL: Optuna")
            pg_sections.append(
                (
                    f"Optuna, PostgreSQL, {studies:,} x {trials} trials",
                    programs,
                    compare(programs, args.slow_rounds, log),
                )
            )
            pg_plans = [
                ("MLflow on PostgreSQL", "mlflow", pg_ml),
                ("Optuna on PostgreSQL", "optuna", pg_op),
            ]

        # ---- the report ----
        report.add(
            "# Performance",
            "",
            "<!-- Generated by bench/scan_speed.py (nox -s bench). Do not edit by hand. -->",
            "",
            "What `mltidy scan --format json` costs on large stores, next to what a user would "
            "run instead, measured by `bench/scan_speed.py` on the machine below. Every number is "
            "a whole process (start-up and imports included): the median of "
            f"{r} rounds ({args.slow_rounds} for comparisons that include the Optuna API loop), "
            "the programs of one comparison run in turns. The machine was shared with other "
            f"work: load average (1/5/15 min) {load_before} at the start, "
            f"{load_average()} at the end; the range column shows the spread.",
            "",
        )
        report.table(["", ""], machine(pg_version))
        report.add(
            "The stores (`bench/stores.py`) have MLflow's and Optuna's real schemas (created by "
            "the libraries, then filled with bulk inserts; the PostgreSQL stores hold the sqlite "
            "stores' rows, copied): MLflow runs in 100 experiments with "
            "MLflow's default tags, 3 params and 3 metrics each, half of them with mltidy's "
            "provenance tags, 1% RUNNING; Optuna studies of 100 trials with 2 params, 1% "
            "RUNNING (half of those with a heartbeat), half the trials with provenance "
            "attributes. The alternatives are in `bench/alternatives.py`.",
            "",
        )

        ml_ratio = ml_t[1].median / ml_t[0].median
        ml_gap = ml_t[0].median - ml_t[2].median
        op_ratio = op_t[1].median / op_t[0].median
        help_t = startup_t[0]
        ml_cpu_gap = ml_t[0].cpu_median - ml_t[2].cpu_median
        summary = [
            [
                "`mltidy --help`",
                "at most 0.25 s",
                f"{_s(help_t.median)} wall, {_s(help_t.cpu_median)} CPU",
                _met(help_t.median <= 0.25, help_t.cpu_median <= 0.25),
            ],
            [
                f"MLflow sqlite {main_runs:,} runs: vs. MlflowClient loop (issue 15)",
                "at least 8x faster",
                f"{ml_ratio:.1f}x",
                _met(ml_ratio >= 8),
            ],
            [
                f"MLflow sqlite {main_runs:,} runs: above one raw query (issue 15)",
                "at most 0.35 s CPU",
                f"{ml_gap:.2f} s wall, {ml_cpu_gap:.2f} s CPU",
                _met(ml_cpu_gap <= 0.35),
            ],
            [
                f"Optuna sqlite {studies:,} x {trials}: vs. Optuna API loop",
                "at least 30x faster",
                f"{op_ratio:.0f}x",
                _met(op_ratio >= 30),
            ],
        ]
        for title, programs, timings in pg_sections:
            summary.append(
                [
                    f"{title}: vs. {programs[1].label}",
                    "reported",
                    f"{timings[1].median / timings[0].median:.1f}x faster; "
                    f"{timings[0].median - timings[2].median:.2f} s above the raw query",
                    "",
                ]
            )
        peaks = [t.peak_mib for t in (ml_t[0], op_t[0])] + [s[3].peak_mib for s in scaling]
        peaks += [timings[0].peak_mib for _, _, timings in pg_sections]
        summary.append(
            [
                "peak memory of `mltidy scan` (all stores above)",
                "at most 120 MiB",
                f"{max(peaks):.0f} MiB",
                _met(max(peaks) <= 120),
            ]
        )
        fixed = [s for s in scaling if s[2] == 1000]
        if len(fixed) > 1:
            low, high = fixed[0], fixed[-1]
            summary.append(
                [
                    f"memory flat from {low[1]:,} to {high[1]:,} runs (1,000 RUNNING)",
                    "flat",
                    f"{low[3].peak_mib:.0f} MiB to {high[3].peak_mib:.0f} MiB",
                    _met(high[3].peak_mib <= low[3].peak_mib * 1.1),
                ]
            )
        report.add("## Targets (issues 7 and 15)", "")
        report.table(["target", "wanted", "measured", ""], summary)

        report.add("## Start-up", "")
        report.table(HEADER[:5], [row[:5] for row in comparison_rows(startup, startup_t)])

        report.add(f"## MLflow, sqlite, {main_runs:,} runs", "")
        report.table(HEADER, comparison_rows(ml, ml_t))
        report.add(f"## Optuna, sqlite, {studies:,} studies x {trials} trials", "")
        report.table(HEADER, comparison_rows(op, op_t))
        for title, programs, timings in pg_sections:
            report.add(f"## {title}", "")
            report.table(HEADER, comparison_rows(programs, timings))

        report.add(
            "## Where the time of `mltidy scan` goes",
            "",
            "CPU seconds of each phase inside one `mltidy scan --format json` process (medians "
            f"of {r} runs, `PHASES` in `bench/scan_speed.py`). The process as a whole also pays "
            "the interpreter's start (`python -c pass` above) and exit. "
            "Reading the store, judging and writing the report are the part mltidy's own code "
            "decides; most of the rest is importing typer, which any Python tool built on it "
            "pays (Typer's pydantic conversion of option values is not: mltidy converts plain "
            "values itself, `cli/coercion.py`; nor is Rich, which a report in JSON does not "
            "import).",
            "",
        )
        rows = []
        order = sorted(
            ml_phases,
            key=lambda x: (
                x.startswith("total"),
                not x.startswith("import"),
                not x.startswith("parse"),
            ),
        )
        for label in order:
            rows.append([label, _s(ml_phases[label]), _s(op_phases.get(label, 0.0))])
        report.table(
            [
                "phase",
                f"MLflow sqlite, {main_runs:,} runs",
                f"Optuna sqlite, {studies:,} x {trials}",
            ],
            rows,
        )

        report.add(
            "## The library path",
            "",
            "Stores at a schema version the fast path does not know are read through MLflow's "
            "and Optuna's own APIs (see [stores.md](stores.md)); forced here with "
            "`MLTIDY_READ_PATH=library` on the same sqlite stores:",
            "",
        )
        report.table(HEADER[:6], [row[:6] for row in comparison_rows(lib, lib_t)])

        report.add(
            "## How scan time grows with history",
            "",
            "MLflow sqlite stores of 10,000 to 1,000,000 runs. With 1% RUNNING the report itself "
            "grows with the store (10,000 RUNNING runs at 1,000,000); with 1,000 RUNNING runs "
            "only the history grows. `mltidy scan` streams the store, so its memory follows the "
            "number of RUNNING runs it reports (the JSON document holds them all), not the number "
            "of runs in the store. Neither MLflow's schema nor mltidy has an index on "
            "`runs.status`, so finding the RUNNING runs reads the whole `runs` table: that "
            "is the part that grows with history, for the raw query as much as for mltidy.",
            "",
        )
        rows = []
        for _, runs, running, t_mltidy, t_raw in scaling:
            rows.append(
                [
                    f"{runs:,}",
                    f"{running:,}",
                    _s(t_mltidy.median),
                    _s(t_raw.median),
                    _s(t_mltidy.median - t_raw.median),
                    f"{t_mltidy.peak_mib:.0f} MiB",
                    f"{t_raw.peak_mib:.0f} MiB",
                ]
            )
        report.table(
            [
                "runs",
                "RUNNING",
                "mltidy scan",
                "raw query",
                "difference",
                "mltidy peak RSS",
                "raw peak RSS",
            ],
            rows,
        )

        report.add(
            "## Query plans",
            "",
            "The statements mltidy's fast path sends, caught on their way to the driver during "
            "a scan, with the database's plan (sqlite: `EXPLAIN QUERY PLAN`; PostgreSQL: "
            "`EXPLAIN ANALYZE`). The latest-metric subquery is a search of MLflow's index "
            "`index_latest_metrics_run_uuid`; tags and attributes are looked up by run or trial "
            "id through the stores' indexes (PostgreSQL's planner may prefer a sequential scan "
            "of an attribute table when the ids asked for are a large part of it); `runs` and "
            "`trials` are scanned, because no index covers their state, and mltidy does not add "
            "indexes to users' stores.",
            "",
        )
        plans_section(
            report, f"MLflow on sqlite ({main_runs:,} runs)", "mlflow", mlflow_url, "sqlite"
        )
        plans_section(
            report, f"Optuna on sqlite ({studies:,} x {trials})", "optuna", optuna_url, "sqlite"
        )
        for title, kind, url in pg_plans:
            plans_section(report, title, kind, url, "postgresql")
    finally:
        if server is not None:
            server.stop()

    report.add(
        f"The whole benchmark took {time.monotonic() - started:.0f} s (with the sqlite stores "
        "already generated).",
        "",
    )
    text = "\n".join(report.lines)
    print(text)
    if args.write:
        others = sections_of_other_scripts(args.write, "scan_speed.py")
        args.write.write_text(text.rstrip("\n") + "\n" + ("\n" + others if others else ""))
        log(f"wrote {args.write} (kept the sections other bench scripts generated)")
    return 0


def _met(ok: bool, cpu_ok: bool | None = None) -> str:
    if ok:
        return "met"
    if cpu_ok:
        return "**not met** in wall time on this loaded machine; met in CPU time"
    return "**not met**"


def _pg_version(url: str) -> str:
    import psycopg2

    conn = psycopg2.connect(url.replace("postgresql+psycopg2://", "postgresql://"))
    try:
        with conn.cursor() as cursor:
            cursor.execute("SHOW server_version")
            row = cursor.fetchone()
            return str(row[0]).split()[0] if row else "?"
    finally:
        conn.close()


if __name__ == "__main__":
    raise SystemExit(main())
