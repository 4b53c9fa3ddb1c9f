"""MLflow's tables as the SQL fast path reads them, and the check that runs before either path.

:func:`inspect_store` runs first on every MLflow SQL store, on a read-only engine: it tells an
MLflow store from anything else and reads its alembic revision, which picks the read path
(``sql.py`` or ``library.py``). The rest is what the fast path's queries share: the table
objects (only the columns it reads) and the reads and writes of run tags.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from mltidy.backends.mlflow.runs import Rhythm, latest_key
from mltidy.backends.sql import table_names, translate_sql_error
from mltidy.errors import NotAStore

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

#: Without these tables a database is not an MLflow tracking store at all.
IDENTITY_TABLES = frozenset({"alembic_version", "runs", "experiments"})
#: The tables the fast path reads.
REQUIRED_TABLES = IDENTITY_TABLES | {"tags", "latest_metrics", "metrics"}
#: Rows per partition of a streamed read, and run ids per ``IN`` query.
CHUNK = 500


def tables() -> dict[str, Any]:
    """SQLAlchemy table objects for the columns the fast path reads and writes."""
    from sqlalchemy import column, table

    return {
        "runs": table(
            "runs",
            column("run_uuid"),
            column("name"),
            column("user_id"),
            column("status"),
            column("start_time"),
            column("end_time"),
            column("lifecycle_stage"),
            column("experiment_id"),
            column("artifact_uri"),
            column("deleted_time"),
        ),
        "params": table("params", column("key"), column("run_uuid")),
        "experiments": table(
            "experiments", column("experiment_id"), column("name"), column("lifecycle_stage")
        ),
        "tags": table("tags", column("key"), column("value"), column("run_uuid")),
        "latest_metrics": table(
            "latest_metrics", column("key"), column("timestamp"), column("run_uuid")
        ),
        "metrics": table("metrics", column("key"), column("timestamp"), column("run_uuid")),
    }


def inspect_store(engine: Engine, uri: str) -> tuple[str | None, set[str]]:
    """The alembic revision and the table names of an MLflow tracking database.

    Runs before anything else touches a store, on a read-only engine, so that neither path ever
    hands MLflow a database it would create tables in.

    Raises:
        NotAStore: the database lacks MLflow's core tables (with a hint for Optuna storages).
        StoreError: the database cannot be read.
    """
    from sqlalchemy import text
    from sqlalchemy.exc import SQLAlchemyError

    try:
        found = table_names(engine)
        check_tables(found, uri)
        with engine.connect() as conn:
            revision = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        raise translate_sql_error(exc, uri) from exc
    return (str(revision) if revision else None), found


def check_tables(found: set[str], uri: str) -> None:
    """Refuse a database without MLflow's core tables.

    Raises:
        NotAStore: it lacks them (with a hint when it is an Optuna storage).
    """
    if not found >= IDENTITY_TABLES:
        hint = None
        if {"studies", "trials", "version_info"} <= found:
            hint = "it looks like an Optuna storage: pass it with --optuna"
        raise NotAStore(f"{uri} is not an MLflow tracking database", hint=hint)


def read_tags(
    conn: Connection,
    tags: Any,
    run_ids: Sequence[str],
    wanted: tuple[tuple[str, ...], tuple[str, ...]],
) -> dict[str, dict[str, str]]:
    """The tags of these runs whose key is one of ``wanted[0]`` or starts with one of
    ``wanted[1]``, by run id; one query per :data:`CHUNK` runs."""
    from sqlalchemy import or_, select

    keys, prefixes = wanted
    condition = or_(tags.c.key.in_(keys), *(tags.c.key.like(f"{p}%") for p in prefixes))
    found: dict[str, dict[str, str]] = {}
    for start in range(0, len(run_ids), CHUNK):
        query = select(tags.c.run_uuid, tags.c.key, tags.c.value).where(
            tags.c.run_uuid.in_(list(run_ids[start : start + CHUNK])), condition
        )
        for run_id, key, value in conn.execute(query).all():
            found.setdefault(run_id, {})[key] = value if value is not None else ""
    return found


def read_rhythms(conn: Connection, t: dict[str, Any], run_ids: Sequence[str]) -> dict[str, Rhythm]:
    """The rhythm of these runs, by run id: the history of each run's most recently logged
    metric key (as the client and REST paths read it), from two queries per :data:`CHUNK` runs:
    their latest keys (``latest_metrics``), then those keys' timestamps (``metrics``, through
    MLflow's index on run and key). The gaps are computed here: cheaper than a window function
    in the database, and the same on every database."""
    from sqlalchemy import select

    latest, metrics = t["latest_metrics"], t["metrics"]

    def latest_of(chunk: list[str]) -> Iterable[tuple[str, str, int | None]]:
        query = select(latest.c.run_uuid, latest.c.key, latest.c.timestamp)
        return conn.execute(query.where(latest.c.run_uuid.in_(chunk))).tuples()

    def history_of(runs: list[str], keys: list[str]) -> Iterable[tuple[str, str, int]]:
        query = select(metrics.c.run_uuid, metrics.c.key, metrics.c.timestamp)
        return conn.execute(
            query.where(metrics.c.run_uuid.in_(runs), metrics.c.key.in_(keys))
        ).tuples()

    return rhythms_of(run_ids, latest_of, history_of)


def rhythms_of(
    run_ids: Sequence[str],
    latest_of: Callable[[list[str]], Iterable[tuple[str, str, int | None]]],
    history_of: Callable[[list[str], list[str]], Iterable[tuple[str, str, int]]],
) -> dict[str, Rhythm]:
    """:func:`read_rhythms` over any connection: ``latest_of(runs)`` gives the (run, key,
    timestamp) rows of ``latest_metrics``, ``history_of(runs, keys)`` those of ``metrics``."""
    found: dict[str, Rhythm] = {}
    for start in range(0, len(run_ids), CHUNK):
        chunk = list(run_ids[start : start + CHUNK])
        keyed: dict[str, list[tuple[str, int | None]]] = {}
        for run_id, key, stamp in latest_of(chunk):
            keyed.setdefault(run_id, []).append((key, stamp))
        keys = {run_id: latest_key(pairs) for run_id, pairs in keyed.items()}
        wanted = {key for key in keys.values() if key is not None}
        if not wanted:
            continue
        stamps: dict[str, list[int]] = {}
        for run_id, key, stamp in history_of(list(keys), sorted(wanted)):
            if keys.get(run_id) == key:
                stamps.setdefault(run_id, []).append(stamp)
        found.update((run_id, Rhythm.of(values)) for run_id, values in stamps.items())
    return found


def replace_tags(conn: Connection, tags: Any, run_id: str, values: Mapping[str, str]) -> None:
    """Set tags on a run inside the caller's transaction (earlier values of these keys go)."""
    from sqlalchemy import delete, insert

    if not values:
        return
    conn.execute(delete(tags).where(tags.c.run_uuid == run_id, tags.c.key.in_(list(values))))
    conn.execute(
        insert(tags), [{"key": k, "value": v, "run_uuid": run_id} for k, v in values.items()]
    )


def replace_tags_of_runs(
    conn: Connection, tags: Any, values: Mapping[str, Mapping[str, str]]
) -> None:
    """Set tags on many runs inside the caller's transaction (see
    :func:`~mltidy.backends.batch_writes.replace_keyed_rows`)."""
    from mltidy.backends.batch_writes import replace_keyed_rows

    replace_keyed_rows(
        conn,
        tags,
        "run_uuid",
        values,
        lambda run_id, k, v: {"key": k, "value": v, "run_uuid": run_id},
    )


__all__ = [
    "CHUNK",
    "REQUIRED_TABLES",
    "check_tables",
    "inspect_store",
    "read_rhythms",
    "read_tags",
    "replace_tags",
    "replace_tags_of_runs",
    "rhythms_of",
    "tables",
]
