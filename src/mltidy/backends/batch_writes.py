"""Batched writes of the SQL backends: the compare-and-set that ends many records, and the
key/value rows (tags, attributes) of many records, each inside the caller's transaction.

Each database gets the statements that cost it least, measured by ``bench/close_speed.py``:

* SQLite (in-process) gets ``sqlite3``'s ``executemany``: SQLAlchemy's handling of each row's
  parameters costs more than SQLite's own work.
* PostgreSQL gets whole columns as arrays (``unnest``): one statement and one round trip per
  few thousand rows, with a fixed text that SQLAlchemy compiles once. SQLAlchemy's multi-row
  ``INSERT`` and ``VALUES`` lists are compiled anew for every batch, which cost more CPU than
  the server's work.
* Other databases (MySQL, MariaDB) get SQLAlchemy's multi-row statements.

SQLAlchemy is imported lazily, as in :mod:`mltidy.backends.sql`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from mltidy.backends.sql import chunks, marks, retry_locked
from mltidy.errors import StoreError

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

T = TypeVar("T")
K = TypeVar("K")

#: Rows per statement when PostgreSQL gets whole columns as arrays.
ARRAY_ROWS = 10_000


class ConcurrentChange(Exception):
    """A batched compare-and-set without ``RETURNING`` changed other rows than it had locked:
    its transaction is rolled back and tried again (:func:`retry_batch`)."""


#: Tries of a batched write whose rows kept changing under it.
CONFLICT_RETRIES = 3


def retry_batch(attempt: Callable[[], T], where: str) -> T:
    """:func:`~mltidy.backends.sql.retry_locked`, also trying again (from the start, in a new
    transaction) when :func:`set_if_running` saw rows change under it.

    Raises:
        StoreError: any other failure, or the rows kept changing.
    """
    for _ in range(CONFLICT_RETRIES):
        try:
            return retry_locked(attempt, where)
        except ConcurrentChange:
            continue
    raise StoreError(
        f"{where}: the records kept changing while mltidy closed them", hint="try again"
    )


def set_if_running(
    conn: Connection,
    columns: tuple[Any, Any, Any],
    guards: Sequence[Any],
    changes: Sequence[tuple[K, str, Any]],
) -> set[K]:
    """Inside the caller's transaction, end the rows that the ``guards`` (``state =
    'RUNNING'``, ...) still hold for, and return the ids of the rows changed.

    Args:
        conn: a connection inside a transaction.
        columns: the table's id, state and end-time columns.
        guards: the conditions a row must still meet to be changed.
        changes: ``(id, new state, end time)`` per row.

    On PostgreSQL one ``UPDATE ... FROM unnest(ids, end times) ... RETURNING`` per new state
    sets each row's state and its own end time and names the rows it changed. Where the
    database has ``UPDATE ... RETURNING`` otherwise (SQLite 3.35 and newer), one statement per
    :data:`~mltidy.backends.sql.STATEMENT_CHUNK` rows changes their state and names the rows
    it changed. Elsewhere (MySQL, MariaDB, older SQLite) the rows still running are first read
    and locked (``SELECT ... FOR UPDATE``; a SQLite writer locks the whole file anyway) and
    then updated with the same guards; if the update changes another number of rows than it
    locked, :class:`ConcurrentChange` is raised and the caller's transaction rolls back. Then
    (but on PostgreSQL) each changed row gets its own end time (one ``executemany``), in the
    same transaction: the rows are the caller's until it commits.
    """
    from sqlalchemy import select, update

    key, state, end = columns
    table = key.table
    returning = bool(getattr(conn.dialect, "update_returning", False))
    by_state: dict[str, list[K]] = {}
    ends: dict[K, Any] = {}
    for record_id, new_state, end_time in changes:
        by_state.setdefault(new_state, []).append(record_id)
        ends[record_id] = end_time
    if returning and conn.dialect.name == "postgresql":
        return _set_from_arrays(conn, columns, guards, by_state, ends)
    changed: set[K] = set()
    for new_state, ids in by_state.items():
        for chunk in chunks(ids):
            if returning:
                statement = (
                    update(table).where(key.in_(chunk), *guards).values({state.name: new_state})
                )
                changed.update(row[0] for row in conn.execute(statement.returning(key)))
                continue
            still = select(key).where(key.in_(chunk), *guards).with_for_update()
            locked = [row[0] for row in conn.execute(still)]
            if not locked:
                continue
            statement = update(table).where(key.in_(locked), *guards)
            count = conn.execute(statement.values({state.name: new_state})).rowcount
            if count != len(locked):
                raise ConcurrentChange
            changed.update(locked)
    if changed:
        set_rows(conn, key, end, {k: ends[k] for k in changed})
    return changed


def _set_from_arrays(
    conn: Connection,
    columns: tuple[Any, Any, Any],
    guards: Sequence[Any],
    by_state: Mapping[str, Sequence[K]],
    ends: Mapping[K, Any],
) -> set[K]:
    """:func:`set_if_running` on PostgreSQL: ``UPDATE ... FROM unnest(ids, end times) AS
    given(id, "end") ... RETURNING`` sets each row's state and its own end time at once; the
    planner finds the rows through the key's index."""
    from sqlalchemy import bindparam, cast, func, update
    from sqlalchemy.dialects.postgresql import ARRAY
    from sqlalchemy.types import NullType

    key, state, end = columns

    def array(name: str, column: Any) -> Any:
        if isinstance(column.type, NullType):  # psycopg2 sends a list as an array of its type
            return bindparam(name)
        return cast(bindparam(name, type_=ARRAY(column.type)), ARRAY(column.type))

    given = (
        func.unnest(array("ids", key), array("ends", end))
        .table_valued("id", "end")
        .render_derived(name="given")
    )
    statement = (
        update(key.table)
        .where(key == given.c.id, *guards)
        .values({state.name: bindparam("new_state", type_=state.type), end.name: given.c.end})
        .returning(key)
    )
    changed: set[K] = set()
    for new_state, ids in by_state.items():
        for chunk in chunks(ids, ARRAY_ROWS):
            parameters = {"ids": list(chunk), "ends": [ends[k] for k in chunk]}
            rows = conn.execute(statement, {**parameters, "new_state": new_state})
            changed.update(row[0] for row in rows)
    return changed


def replace_keyed_rows(
    conn: Connection,
    table: Any,
    owner: str,
    values: Mapping[K, Mapping[str, Any]],
    row: Callable[[K, str, Any], dict[str, Any]],
) -> None:
    """Set the key/value rows of many owners (runs' tags, trials' or studies' attributes)
    inside the caller's transaction: ``row(owner id, key, value)`` for each value, replacing
    the row of the same owner and key.

    On PostgreSQL one ``INSERT ... SELECT * FROM unnest(column arrays) ON CONFLICT (owner, key)
    DO UPDATE`` per few thousand rows (the fast path's schemas, MLflow's and Optuna's, have
    that unique key in every such table). Elsewhere each ``(owner, key)`` is deleted first (on
    SQLite one ``executemany`` of the pairs, on other databases one ``DELETE`` per set of keys
    and :data:`~mltidy.backends.sql.STATEMENT_CHUNK` owners), then the rows are inserted
    (:func:`insert_rows`).

    Args:
        owner: the table's column that holds the owner's id.
    """
    from sqlalchemy import delete

    rows = [row(owner_id, k, v) for owner_id, owned in values.items() for k, v in owned.items()]
    if not rows:
        return
    if conn.dialect.name == "postgresql":
        _pg_insert(conn, table, rows, conflict=(owner, "key"))
        return
    if conn.dialect.name == "sqlite":
        quote = conn.dialect.identifier_preparer.quote
        sql = f"DELETE FROM {quote(table.name)} WHERE {quote(owner)} = ? AND {quote('key')} = ?"
        conn.exec_driver_sql(sql, [(r[owner], r["key"]) for r in rows])
    else:
        by_keys: dict[tuple[str, ...], list[K]] = {}
        for owner_id, owned in values.items():
            by_keys.setdefault(tuple(sorted(owned)), []).append(owner_id)
        for keys_of, owner_ids in by_keys.items():
            for part in chunks(owner_ids):
                conn.execute(
                    delete(table).where(table.c[owner].in_(part), table.c.key.in_(keys_of))
                )
    insert_rows(conn, table, rows)


def _pg_arrays(conn: Connection, columns: Sequence[Any]) -> list[str]:
    """A ``%s`` placeholder per column for an array of its values, cast to an array of the
    column's type when the table declares one (psycopg2 sends lists as arrays of the values'
    own types)."""
    from sqlalchemy.types import NullType

    return [
        "%s" if isinstance(c.type, NullType) else f"CAST(%s AS {c.type.compile(conn.dialect)}[])"
        for c in columns
    ]


def _processed(conn: Connection, column: Any, values: list[Any]) -> list[Any]:
    """``values`` as SQLAlchemy would bind them for ``column`` (SQLite keeps DateTime as text,
    for instance)."""
    process = column.type.bind_processor(conn.dialect)
    return values if process is None else [process(v) for v in values]


def insert_rows(conn: Connection, table: Any, rows: Sequence[Mapping[str, Any]]) -> None:
    """Insert many rows (all with the same keys) in the caller's transaction: on SQLite one
    ``executemany``, on PostgreSQL ``INSERT ... SELECT * FROM unnest(column arrays)`` per few
    thousand rows, elsewhere SQLAlchemy's multi-row ``INSERT``."""
    from sqlalchemy import insert

    if not rows:
        return
    dialect = conn.dialect.name
    if dialect not in ("sqlite", "postgresql"):
        conn.execute(insert(table), list(rows))
        return
    if dialect == "postgresql":
        _pg_insert(conn, table, rows)
        return
    names = list(rows[0])
    quote = conn.dialect.identifier_preparer.quote
    into = f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in names)})"
    columns = [_processed(conn, table.c[c], [r[c] for r in rows]) for c in names]
    conn.exec_driver_sql(f"{into} VALUES ({marks(len(names))})", list(zip(*columns, strict=True)))


def _pg_insert(
    conn: Connection,
    table: Any,
    rows: Sequence[Mapping[str, Any]],
    conflict: tuple[str, str] | None = None,
) -> None:
    """:func:`insert_rows` on PostgreSQL: ``INSERT ... SELECT * FROM unnest(column arrays)``;
    a row whose ``conflict`` columns match an existing row's replaces that row's other
    columns."""
    names = list(rows[0])
    quote = conn.dialect.identifier_preparer.quote
    casts = _pg_arrays(conn, [table.c[c] for c in names])
    sql = (
        f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in names)}) "
        f"SELECT * FROM unnest({', '.join(casts)})"
    )
    if conflict is not None:
        others = [quote(c) for c in names if c not in conflict]
        sql += f" ON CONFLICT ({', '.join(quote(c) for c in conflict)}) DO UPDATE SET " + ", ".join(
            f"{c} = EXCLUDED.{c}" for c in others
        )
    for chunk in chunks(rows, ARRAY_ROWS):
        arrays = [_processed(conn, table.c[c], [r[c] for r in chunk]) for c in names]
        conn.exec_driver_sql(sql, tuple(arrays))


def set_rows(conn: Connection, key: Any, column: Any, values: Mapping[Any, Any]) -> None:
    """``UPDATE table SET column = value WHERE key = id`` for each ``id: value``, in the
    caller's transaction (on SQLite through ``sqlite3``'s ``executemany``, as
    :func:`insert_rows`)."""
    from sqlalchemy import bindparam, update

    if not values:
        return
    if conn.dialect.name != "sqlite":
        statement = (
            update(key.table)
            .where(key == bindparam("b_key"))
            .values({column.name: bindparam("b_value", type_=column.type)})
        )
        conn.execute(statement, [{"b_key": k, "b_value": v} for k, v in values.items()])
        return
    quote = conn.dialect.identifier_preparer.quote
    sql = f"UPDATE {quote(key.table.name)} SET {quote(column.name)} = ? WHERE {quote(key.name)} = ?"
    new = _processed(conn, column, list(values.values()))
    conn.exec_driver_sql(sql, list(zip(new, values, strict=True)))


def current_states(conn: Connection, key: Any, state: Any, ids: Sequence[K]) -> dict[K, Any]:
    """The state of each of these rows that exists, by id."""
    from sqlalchemy import select

    found: dict[K, Any] = {}
    for chunk in chunks(ids):
        found.update(
            (row[0], row[1]) for row in conn.execute(select(key, state).where(key.in_(chunk)))
        )
    return found


__all__ = [
    "ARRAY_ROWS",
    "CONFLICT_RETRIES",
    "ConcurrentChange",
    "current_states",
    "insert_rows",
    "replace_keyed_rows",
    "retry_batch",
    "set_if_running",
    "set_rows",
]
