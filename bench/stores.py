"""Generate large MLflow and Optuna stores for the benchmarks, fast, with the real schemas.

The schema always comes from the library itself: MLflow creates (and migrates to its head
revision) an empty tracking database, Optuna's ``RDBStorage`` creates an empty storage. Only then
are rows added, with SQLAlchemy Core bulk inserts (``executemany``), because creating 100,000 runs
through ``MlflowClient`` would take an hour and tell us nothing about reading them.

The content imitates what a busy team's store holds:

* MLflow: ``experiments`` experiments; each run has the four tags MLflow's own context providers
  write (``mlflow.user``, ``mlflow.source.name``, ``mlflow.source.type``, ``mlflow.runName``),
  three params, ``metrics`` metrics (one history row and one ``latest_metrics`` row each; a
  RUNNING run has a history of 50 to 500 points per metric, logged every 2 s to 2 min with some
  jitter and a few longer pauses, as a training loop logs per epoch); half of the runs also
  carry the seven ``mltidy.*`` provenance tags of mltidy's MLflow plugin, from training hosts
  that are not this machine. 1% of the runs are ``RUNNING``, 2% of the others are
  soft-deleted.
* Optuna: ``studies`` studies of ``trials`` trials; two params per trial, a value per complete
  trial; half of the trials carry mltidy's provenance system attributes and an ``mlflow_run_id``
  user attribute; one trial per hundred is ``RUNNING``, half of those with an Optuna heartbeat.
* With ``dead_host`` (the close benchmark), every ``RUNNING`` run and trial carries provenance
  naming that host with a boot id it does not have: started there before a reboot, so mltidy
  judges it dead.

Stores are deterministic for a given size (seeded), so cached files can be reused across runs.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

#: Bump when the generated content changes, so cached stores are rebuilt.
GENERATOR_VERSION = 2
BATCH = 20_000
HOSTS = [f"gpu-{n:02d}" for n in range(1, 17)]
NOW_MS = int(time.time() * 1000)
DAY_MS = 86_400_000

Progress = Callable[[str], None]


def _quiet_libraries() -> None:
    for name in ("alembic", "mlflow", "optuna"):
        logging.getLogger(name).setLevel(logging.WARNING)


def _engine(url: str) -> Any:
    import sqlalchemy as sa

    return sa.create_engine(url, poolclass=sa.pool.NullPool)


def _fast_sqlite(conn: Any) -> None:
    """Bulk load without a journal: a half-written bench store is simply regenerated."""
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("PRAGMA synchronous=OFF")
        conn.exec_driver_sql("PRAGMA journal_mode=OFF")


def _reflect(engine: Any, *names: str) -> dict[str, Any]:
    import sqlalchemy as sa

    meta = sa.MetaData()
    meta.reflect(engine, only=list(names))
    return {name: meta.tables[name] for name in names}


def _insert(conn: Any, table: Any, rows: list[dict[str, Any]]) -> None:
    """A Core bulk insert. On sqlite the rows go to the driver's ``executemany`` as tuples:
    building SQLAlchemy's per-row parameter dicts would cost more than sqlite's own work."""
    if not rows:
        return
    if conn.dialect.name != "sqlite":
        conn.execute(table.insert(), rows)
        return
    columns = list(rows[0])
    sql = (
        f"INSERT INTO {table.name} ({', '.join(columns)}) "
        f"VALUES ({', '.join('?' for _ in columns)})"
    )
    conn.exec_driver_sql(sql, [tuple(_sqlite_value(row[c]) for c in columns) for row in rows])


def _sqlite_value(value: Any) -> Any:
    # SQLAlchemy's DateTime type stores this text form in sqlite (and parses it back).
    if isinstance(value, datetime):
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    return value


def _analyze(engine: Any) -> None:
    """PostgreSQL's autovacuum would have analysed a real store long ago; sqlite stores made by
    MLflow or Optuna have no statistics, so they are left without (as users have them)."""
    if engine.dialect.name == "postgresql":
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.exec_driver_sql("ANALYZE")


# ------------------------------------------------------------------------------------------
# MLflow
# ------------------------------------------------------------------------------------------


def create_mlflow_schema(url: str) -> None:
    """An empty MLflow tracking database at MLflow's head revision, made by MLflow itself."""
    _quiet_libraries()
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=url)
    client.search_experiments(max_results=1)
    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    # MLflow caches one engine per URI for the life of the process; let go of the file.
    engine = SqlAlchemyStore._engine_map.pop(url, None)
    if engine is not None:
        engine.dispose()


def fill_mlflow(
    url: str,
    *,
    runs: int,
    experiments: int = 100,
    metrics: int = 3,
    running_every: int = 100,
    seed: int = 7,
    progress: Progress = print,
    dead_host: str | None = None,
) -> None:
    """Add ``experiments`` experiments and ``runs`` runs to an empty MLflow database."""
    rng = random.Random(seed)
    engine = _engine(url)
    t = _reflect(engine, "experiments", "runs", "tags", "params", "metrics", "latest_metrics")
    began = time.monotonic()
    with engine.begin() as conn:
        _fast_sqlite(conn)
        _insert(
            conn,
            t["experiments"],
            [
                {
                    "experiment_id": i,
                    "name": f"experiment-{i:04d}",
                    "artifact_location": f"/srv/mlflow/artifacts/{i}",
                    "lifecycle_stage": "active",
                    "creation_time": NOW_MS - 400 * DAY_MS,
                    "last_update_time": NOW_MS - 400 * DAY_MS,
                }
                for i in range(1, experiments + 1)
            ],
        )
        for start in range(0, runs, BATCH):
            batch = _mlflow_batch(
                rng, start, min(BATCH, runs - start), experiments, metrics, running_every, dead_host
            )
            for name, rows in batch.items():
                _insert(conn, t[name], rows)
            done = start + len(batch["runs"])
            progress(f"  mlflow: {done:,}/{runs:,} runs ({time.monotonic() - began:.0f} s)")
    _analyze(engine)
    engine.dispose()


def _mlflow_batch(
    rng: random.Random,
    start: int,
    count: int,
    experiments: int,
    metrics: int,
    running_every: int,
    dead_host: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {
        "runs": [],
        "tags": [],
        "params": [],
        "metrics": [],
        "latest_metrics": [],
    }
    for i in range(start, start + count):
        run_id = uuid.UUID(int=rng.getrandbits(128)).hex
        running = i % running_every == 0
        age_days = rng.uniform(0.01, 30) if running else rng.uniform(0, 365)
        started = NOW_MS - int(age_days * DAY_MS)
        status = "RUNNING" if running else rng.choice(("FINISHED",) * 8 + ("FAILED", "KILLED"))
        ended = None if running else started + rng.randint(60_000, 6 * 3_600_000)
        deleted = not running and rng.random() < 0.02
        experiment_id = rng.randint(1, experiments)
        user = f"user{rng.randint(1, 40)}"
        name = f"run-{i}"
        out["runs"].append(
            {
                "run_uuid": run_id,
                "name": name,
                "source_type": "LOCAL",
                "source_name": "train.py",
                "entry_point_name": "",
                "user_id": user,
                "status": status,
                "start_time": started,
                "end_time": ended,
                "deleted_time": ended if deleted else None,
                "source_version": "",
                "lifecycle_stage": "deleted" if deleted else "active",
                "artifact_uri": f"/srv/mlflow/artifacts/{experiment_id}/{run_id}/artifacts",
                "experiment_id": experiment_id,
            }
        )
        tags = {
            "mlflow.user": user,
            "mlflow.source.name": "train.py",
            "mlflow.source.type": "LOCAL",
            "mlflow.runName": name,
        }
        if i % 2 == 0 or (running and dead_host):
            host = dead_host if running and dead_host else rng.choice(HOSTS)
            pid = rng.randint(1000, 4_000_000)
            tags.update(
                {
                    "mltidy.host": host,
                    "mltidy.boot_id": str(uuid.UUID(int=rng.getrandbits(128))),
                    "mltidy.pid": str(pid),
                    "mltidy.pid_start": f"{started / 1000 - 2:.2f}",
                    "mltidy.user": user,
                    "mltidy.cmd": "python train.py --config sweep.yaml",
                    "mltidy.version": "0.1.0",
                }
            )
        out["tags"] += [{"key": k, "value": v, "run_uuid": run_id} for k, v in tags.items()]
        out["params"] += [
            {"key": "lr", "value": str(rng.choice((1e-4, 3e-4, 1e-3))), "run_uuid": run_id},
            {"key": "batch_size", "value": str(rng.choice((32, 64, 128))), "run_uuid": run_id},
            {"key": "seed", "value": str(i), "run_uuid": run_id},
        ]
        last = (started + DAY_MS // 2) if ended is None else ended
        last = min(last, NOW_MS - 60_000)
        stamps = _history(rng, last) if running else [last]
        for m in range(metrics):
            for step, stamp in enumerate(stamps):
                out["metrics"].append(
                    {
                        "key": f"metric_{m}",
                        "value": rng.random(),
                        "timestamp": stamp,
                        "step": step,
                        "is_nan": False,
                        "run_uuid": run_id,
                    }
                )
            latest = dict(out["metrics"][-1])
            out["latest_metrics"].append(latest)
    return out


def _history(rng: random.Random, last: int) -> list[int]:
    """The metric timestamps of a RUNNING run, oldest first, ending at ``last``: 50 to 500
    epochs at a steady cadence with jitter, and now and then a pause three times as long."""
    points = rng.randint(50, 500)
    cadence = rng.choice((2_000, 10_000, 30_000, 120_000))
    stamps = [last]
    for _ in range(points - 1):
        pause = cadence * rng.uniform(0.8, 1.2) * (3 if rng.random() < 0.02 else 1)
        stamps.append(stamps[-1] - int(pause))
    return stamps[::-1]


# ------------------------------------------------------------------------------------------
# Optuna
# ------------------------------------------------------------------------------------------


def create_optuna_schema(url: str) -> None:
    """An empty Optuna storage, made by Optuna's ``RDBStorage`` itself."""
    _quiet_libraries()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(url)
    storage.remove_session()
    storage.engine.dispose()


def fill_optuna(
    url: str,
    *,
    studies: int,
    trials: int,
    running_every: int = 100,
    seed: int = 11,
    progress: Progress = print,
    dead_host: str | None = None,
) -> None:
    """Add ``studies`` studies of ``trials`` trials each to an empty Optuna storage."""
    rng = random.Random(seed)
    engine = _engine(url)
    t = _reflect(engine, *OPTUNA_TABLES)
    began = time.monotonic()
    now = datetime.now(timezone.utc).replace(tzinfo=None)  # Optuna 5 writes naive UTC
    trial_id = 0
    per_batch = max(1, BATCH // trials)
    with engine.begin() as conn:
        _fast_sqlite(conn)
        for first in range(1, studies + 1, per_batch):
            out: dict[str, list[dict[str, Any]]] = {name: [] for name in OPTUNA_TABLES}
            for study_id in range(first, min(first + per_batch, studies + 1)):
                out["studies"].append({"study_id": study_id, "study_name": f"study-{study_id:05d}"})
                out["study_directions"].append(
                    {"study_id": study_id, "direction": "MINIMIZE", "objective": 0}
                )
                running = set(rng.sample(range(trials), round(trials / running_every)))
                for number in range(trials):
                    trial_id += 1
                    _optuna_trial(
                        rng,
                        out,
                        now,
                        (study_id, trial_id, number),
                        running=number in running,
                        dead_host=dead_host,
                    )
            for name in OPTUNA_TABLES:
                _insert(conn, t[name], out[name])
            progress(
                f"  optuna: {min(first + per_batch - 1, studies):,}/{studies:,} studies "
                f"({time.monotonic() - began:.0f} s)"
            )
    _analyze(engine)
    engine.dispose()


def _optuna_trial(
    rng: random.Random,
    out: dict[str, list[dict[str, Any]]],
    now: datetime,
    ids: tuple[int, int, int],
    *,
    running: bool,
    dead_host: str | None = None,
) -> None:
    study_id, trial_id, number = ids
    state = "RUNNING" if running else rng.choice(("COMPLETE",) * 17 + ("FAIL", "PRUNED", "PRUNED"))
    started = now - timedelta(days=rng.uniform(0.01, 30) if running else rng.uniform(0, 365))
    complete = None if running else started + timedelta(seconds=rng.randint(30, 7200))
    out["trials"].append(
        {
            "trial_id": trial_id,
            "number": number,
            "study_id": study_id,
            "state": state,
            "datetime_start": started,
            "datetime_complete": complete,
        }
    )
    for name, low, high in (("x", -10.0, 10.0), ("lr", 1e-5, 1e-1)):
        out["trial_params"].append(
            {
                "trial_id": trial_id,
                "param_name": name,
                "param_value": rng.uniform(low, high),
                "distribution_json": json.dumps(
                    {
                        "name": "FloatDistribution",
                        "attributes": {"log": name == "lr", "step": None, "low": low, "high": high},
                    }
                ),
            }
        )
    if state == "COMPLETE":
        out["trial_values"].append(
            {"trial_id": trial_id, "objective": 0, "value": rng.random(), "value_type": "FINITE"}
        )
    if trial_id % 2 == 0 or running:
        host = dead_host if running and dead_host else rng.choice(HOSTS)
        attrs = {
            "mltidy.host": host,
            "mltidy.boot_id": str(uuid.UUID(int=rng.getrandbits(128))),
            "mltidy.pid": str(rng.randint(1000, 4_000_000)),
            "mltidy.pid_start": f"{started.replace(tzinfo=timezone.utc).timestamp() - 2:.2f}",
            "mltidy.user": f"user{rng.randint(1, 40)}",
            "mltidy.cmd": "python tune.py",
        }
        out["trial_system_attributes"] += [
            {"trial_id": trial_id, "key": k, "value_json": json.dumps(v)} for k, v in attrs.items()
        ]
        out["trial_user_attributes"].append(
            {
                "trial_id": trial_id,
                "key": "mlflow_run_id",
                "value_json": json.dumps(uuid.UUID(int=rng.getrandbits(128)).hex),
            }
        )
    if running and trial_id % 2 == 0:
        out["trial_heartbeats"].append(
            {"trial_id": trial_id, "heartbeat": started + timedelta(minutes=rng.randint(1, 60))}
        )


def count_rows(url: str, table: str, where: str = "") -> int:
    """How many rows a table holds (for checking a cached store)."""
    import sqlalchemy as sa

    engine = _engine(url)
    try:
        with engine.connect() as conn:
            sql = f"SELECT count(*) FROM {table}" + (f" WHERE {where}" if where else "")
            return int(conn.execute(sa.text(sql)).scalar() or 0)
    finally:
        engine.dispose()


# ------------------------------------------------------------------------------------------
# PostgreSQL copies of sqlite stores
# ------------------------------------------------------------------------------------------

#: The tables ``fill_mlflow`` and ``fill_optuna`` fill, parents first.
MLFLOW_TABLES = ("experiments", "runs", "tags", "params", "metrics", "latest_metrics")
OPTUNA_TABLES = (
    "studies",
    "study_directions",
    "trials",
    "trial_params",
    "trial_values",
    "trial_system_attributes",
    "trial_user_attributes",
    "trial_heartbeats",
)
COPY_ROWS = 100_000


def copy_to_postgres(
    sqlite_url: str, pg_url: str, table_names: tuple[str, ...], progress: Progress = print
) -> None:
    """Copy the rows of ``table_names`` from a generated sqlite store into a PostgreSQL
    database whose schema the library made (``create_mlflow_schema``/``create_optuna_schema``):
    the same store on both databases.

    Millions of metric rows inserted one statement at a time take many minutes, and even
    ``COPY`` into MLflow's indexed ``metrics`` table took a quarter of an hour (every row checks
    its foreign key and goes into two large B-trees through a small buffer cache). So the rows
    are copied with ``COPY FROM STDIN`` without foreign-key checks (``session_replication_role =
    replica``: they come from a consistent store), into tables whose own indexes and keys are
    dropped first and built again afterwards (a sort instead of millions of B-tree inserts),
    for every table no foreign key points at."""
    import io
    import sqlite3

    path = sqlite_url.removeprefix("sqlite:///")
    source = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    engine = _engine(pg_url)
    began = time.monotonic()
    try:
        with engine.begin() as conn:
            cursor = conn.connection.driver_connection.cursor()
            cursor.execute("SET session_replication_role = replica")
            cursor.execute("SET maintenance_work_mem = '512MB'")
            # What the library put there itself (MLflow's default experiment) comes again.
            for name in reversed(table_names):
                cursor.execute(f'DELETE FROM "{name}"')
            for name in table_names:
                rebuild = _drop_indexes(cursor, name)
                names = [r[1] for r in source.execute(f'PRAGMA table_info("{name}")')]
                rows = source.execute(f'SELECT {_copy_line(names)} FROM "{name}"')
                columns = ", ".join(f'"{c}"' for c in names)
                copied = 0
                while batch := rows.fetchmany(COPY_ROWS):
                    text = io.StringIO("".join(row[0] for row in batch))
                    cursor.copy_expert(f'COPY "{name}" ({columns}) FROM STDIN', text)
                    copied += len(batch)
                for statement in rebuild:
                    cursor.execute(statement)
                _advance_sequences(cursor, name)
                progress(f"  {name}: {copied:,} rows ({time.monotonic() - began:.0f} s)")
    finally:
        source.close()
    _analyze(engine)
    engine.dispose()


def _advance_sequences(cursor: Any, table: str) -> None:
    """Move the sequences of ``table``'s serial columns past the ids copied in (``COPY``
    writes the ids it is given and leaves the sequences where they were), so that the next
    row the libraries or mltidy insert gets a free id."""
    cursor.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        "current_schema() AND table_name = %s AND column_default LIKE 'nextval(%%'",
        (table,),
    )
    for (column,) in cursor.fetchall():
        cursor.execute(
            f"SELECT setval(pg_get_serial_sequence(%s, %s), "
            f'coalesce(max("{column}"), 0) + 1, false) FROM "{table}"',
            (table, column),
        )


def _drop_indexes(cursor: Any, table: str) -> list[str]:
    """Drop the primary key, unique constraints and indexes of ``table`` unless a foreign key
    points at it; return the statements that make them again."""
    cursor.execute(
        "SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND confrelid = %s::regclass",
        (table,),
    )
    if cursor.fetchone()[0]:
        return []
    cursor.execute(
        "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint "
        "WHERE conrelid = %s::regclass AND contype IN ('p', 'u')",
        (table,),
    )
    constraints = cursor.fetchall()
    cursor.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND tablename = %s",
        (table,),
    )
    owned = {name for name, _ in constraints}
    indexes = [(name, sql) for name, sql in cursor.fetchall() if name not in owned]
    for name, _ in constraints:
        cursor.execute(f'ALTER TABLE "{table}" DROP CONSTRAINT "{name}"')
    for name, _ in indexes:
        cursor.execute(f'DROP INDEX "{name}"')
    return [
        *(f'ALTER TABLE "{table}" ADD CONSTRAINT "{name}" {sql}' for name, sql in constraints),
        *(sql for _, sql in indexes),
    ]


#: SQLite expressions of the characters COPY's text format escapes, and their escapes (SQL).
COPY_ESCAPES = (
    (r"'\'", r"'\\'"),
    ("char(9)", r"'\t'"),
    ("char(10)", r"'\n'"),
    ("char(13)", r"'\r'"),
)


def _copy_line(columns: list[str]) -> str:
    """The SQLite expression of one row in COPY's text format (tab separated, ``\\N`` for
    NULL, backslash escapes), so that SQLite's C code, not a Python loop over millions of
    values, writes the text. Floats come out with SQLite's 15 significant digits."""
    fields = []
    for column in columns:
        text = f'CAST("{column}" AS TEXT)'
        for char, escaped in COPY_ESCAPES:
            text = f"replace({text}, {char}, {escaped})"
        fields.append(f"coalesce({text}, '\\N')")
    return " || char(9) || ".join(fields) + " || char(10)"


# ------------------------------------------------------------------------------------------
# Cached sqlite files
# ------------------------------------------------------------------------------------------


def cache_dir() -> Path:
    """Where generated stores are kept between runs (never inside the repository)."""
    if explicit := os.environ.get("MLTIDY_BENCH_CACHE"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "mltidy-bench"


def _cached(name: str, build: Callable[[str], None], progress: Progress) -> str:
    """A sqlite store built once: the file is written under a temporary name and renamed when
    complete, so an interrupted build is never mistaken for a finished one."""
    folder = cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}-g{GENERATOR_VERSION}.db"
    if not path.exists():
        partial = path.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        progress(f"generating {path.name} (cached for later runs)")
        build(f"sqlite:///{partial}")
        partial.rename(path)
    return f"sqlite:///{path}"


def mlflow_sqlite(
    runs: int, running: int, progress: Progress = print, *, dead_host: str | None = None
) -> str:
    """The URL of a cached MLflow sqlite store: ``runs`` runs in 100 experiments, ``running`` of
    them RUNNING (spread evenly through the history); dead on ``dead_host`` when given."""

    def build(url: str) -> None:
        create_mlflow_schema(url)
        every = max(1, runs // running)
        fill_mlflow(url, runs=runs, running_every=every, progress=progress, dead_host=dead_host)

    dead = f"-dead-{dead_host}" if dead_host else ""
    return _cached(f"mlflow-{runs}runs-{running}running{dead}", build, progress)


def optuna_sqlite(
    studies: int,
    trials: int,
    progress: Progress = print,
    *,
    running_every: int = 100,
    dead_host: str | None = None,
) -> str:
    """The URL of a cached Optuna sqlite storage with ``studies`` x ``trials`` trials, one in
    ``running_every`` RUNNING; dead on ``dead_host`` when given."""

    def build(url: str) -> None:
        create_optuna_schema(url)
        fill_optuna(
            url,
            studies=studies,
            trials=trials,
            progress=progress,
            running_every=running_every,
            dead_host=dead_host,
        )

    name = f"optuna-{studies}x{trials}"
    if running_every != 100:
        name += f"-1in{running_every}running"
    if dead_host:
        name += f"-dead-{dead_host}"
    return _cached(name, build, progress)
