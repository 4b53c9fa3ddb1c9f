"""Shared SQL plumbing for the SQL backends: read-only engines and error translation.

SQLAlchemy is imported here lazily (this module is imported only when a SQL backend opens).

Size: the plumbing every SQL backend shares (read-only engines, the sqlite3 reader, error
translation, lock retries); one module keeps the two SQL families from growing their own copies.
Their batched writes are in :mod:`mltidy.backends.batch_writes`.
"""

from __future__ import annotations

import importlib.util
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar
from urllib.parse import quote, unquote, urlparse

from mltidy.backends.identity import sqlite_file
from mltidy.backends.translate import first_line, mentions
from mltidy.errors import (
    NotAStore,
    StoreAccessDenied,
    StoreError,
    StoreNotFound,
    StoreUnreachable,
    UnsupportedSchema,
)
from mltidy.redact import redact

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

SQLITE_MAGIC = b"SQLite format 3\x00"
CONNECT_TIMEOUT_S = 5
SQLITE_BUSY_TIMEOUT_S = 10.0
#: SQLite's page cache for a writer, in KiB (SQLite's default is 2,000): a batched close touches
#: index pages all over the tags table, and a small cache reads them again for every batch.
WRITER_CACHE_KIB = 32_768
#: Words in a DBAPI error that mean the server could not be reached (lower case).
UNREACHABLE = (
    "connection refused",
    "could not connect",
    "timeout expired",
    "timed out",
    "could not translate host name",
    "can't connect",
    "name or service not known",
)
#: libpq options that make every transaction of a session read-only (the library paths' guard).
PG_READ_ONLY_OPTIONS = "-c default_transaction_read_only=on"


#: The DBAPI drivers SQLAlchemy can read each server database with, in the order mltidy picks
#: one when a URL names none: (SQLAlchemy's driver name, the module it imports, what to install).
DRIVERS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "postgresql": (
        ("psycopg2", "psycopg2", "psycopg2-binary"),
        ("psycopg", "psycopg", "psycopg[binary]"),
        ("pg8000", "pg8000", "pg8000"),
    ),
    "mysql": (
        ("pymysql", "pymysql", "pymysql"),
        ("mysqldb", "MySQLdb", "mysqlclient"),
        ("mysqlconnector", "mysql.connector", "mysql-connector-python"),
    ),
    "mariadb": (
        ("pymysql", "pymysql", "pymysql"),
        ("mysqldb", "MySQLdb", "mysqlclient"),
        ("mariadbconnector", "mariadb", "mariadb"),
    ),
}
_SCHEMES = {"postgres": "postgresql"}


def installed(module: str) -> bool:
    """Whether a module can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def with_installed_driver(url: str, is_installed: Callable[[str], bool] = installed) -> str:
    """``url`` with a driver that is installed, when it names none and SQLAlchemy's default
    for its database is not: ``postgresql://`` with only psycopg2 installed (SQLAlchemy 2.1
    defaults to psycopg 3) becomes ``postgresql+psycopg2://``. URLs that name a driver, and
    databases with an installed default, are left as they are.

    Raises:
        StoreError: no driver for the database is installed; the hint names the packages.
    """
    scheme, sep, rest = url.partition("://")
    database = _SCHEMES.get(scheme.lower(), scheme.lower())
    if not sep or "+" in scheme or database not in DRIVERS:
        return url
    drivers = DRIVERS[database]
    default = _default_driver(database)
    if default is None or any(d == default and is_installed(m) for d, m, _ in drivers):
        return url
    for driver, module, _ in drivers:
        if is_installed(module):
            return f"{database}+{driver}://{rest}"
    raise StoreError(
        f"no database driver for {database}:// is installed",
        hint=driver_hint(database),
    )


def driver_hint(database: str, driver: str | None = None) -> str:
    """What to install to read ``database`` (through ``driver``, when the URL names one)."""
    options = DRIVERS.get(_SCHEMES.get(database, database), ())
    named = [package for name, _, package in options if name == driver]
    if named:
        return f"pip install {named[0]}, or drop +{driver} from the URL to use an installed driver"
    packages = [package for _, _, package in options]
    if not packages:
        return "install the DBAPI driver for this database"
    if len(packages) == 1:
        return f"pip install {packages[0]}"
    return f"pip install {packages[0]} (or {packages[1]})"


def _default_driver(database: str) -> str | None:
    """The driver SQLAlchemy uses for ``database://`` (its dialect's default)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        return str(make_url(f"{database}://").get_dialect().driver)
    except (ArgumentError, NoSuchModuleError, ImportError):
        return None


def is_sqlite_file(path: Path) -> bool:
    """Whether ``path`` is a SQLite database file (by its header, not its name)."""
    try:
        with path.open("rb") as handle:
            return handle.read(16) == SQLITE_MAGIC
    except OSError:
        return False


def create_reader_engine(url: str, *, writable: bool = False) -> Engine:
    """An engine that cannot create the database it points at.

    SQLite files are opened through a ``mode=ro`` (or ``mode=rw``) URI, which fails instead of
    creating a missing file. Server databases get a short connect timeout.

    Raises:
        StoreNotFound: a sqlite file does not exist.
        NotAStore: a sqlite path is not a SQLite file.
        StoreError: the URL cannot be used (driver missing, malformed).
    """
    from sqlalchemy import create_engine
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError
    from sqlalchemy.pool import NullPool, QueuePool

    if url.startswith("sqlite:"):
        resolved = checked_sqlite_file(url)
        open_file = sqlite_connector(resolved, writable=writable)

        def connect() -> sqlite3.Connection:
            if not writable:
                recover_hot_journal(resolved)
                return open_file()
            conn = open_file()
            conn.execute(f"PRAGMA cache_size = -{WRITER_CACHE_KIB}")
            return conn

        if not writable:
            return create_engine("sqlite://", creator=connect, poolclass=NullPool)
        # A writer keeps its connection between transactions: a batched close runs one
        # transaction per batch, and a new connection would start each with SQLite's page
        # cache cold. An idle connection holds no lock.
        return create_engine(
            "sqlite://", creator=connect, poolclass=QueuePool, pool_size=1, max_overflow=4
        )

    connect_args = server_connect_args(url)
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    url = with_installed_driver(url)
    try:
        if not writable:
            return create_engine(url, connect_args=connect_args, poolclass=NullPool)
        # As for SQLite: a batched close runs a transaction per batch, and a new connection for
        # each (a server process, an authentication) cost more than the batch's statements.
        return create_engine(
            url, connect_args=connect_args, poolclass=QueuePool, pool_size=1, max_overflow=4
        )
    except (ModuleNotFoundError, ImportError, NoSuchModuleError) as exc:
        scheme = url.split("://", 1)[0]
        database, _, driver = scheme.partition("+")
        raise StoreError(
            f"no database driver for {scheme}:// ({exc})",
            hint=driver_hint(database, driver or None),
        ) from exc
    except ArgumentError as exc:
        raise StoreError(f"{redact(url)} is not a database URL") from exc


def checked_sqlite_file(url: str) -> Path:
    """The existing SQLite file behind a ``sqlite:`` URL, resolved.

    Raises:
        StoreNotFound: the URL names no file, or the file does not exist.
        NotAStore: the path is not a SQLite file.
    """
    path = sqlite_file(url)
    if path is None:
        raise StoreNotFound(f"{url} is not a sqlite file", hint="give sqlite:///path/to/file.db")
    if not path.exists():
        raise StoreNotFound(
            f"{path} does not exist", hint="check the path; mltidy never creates a store"
        )
    if not path.is_file() or not is_sqlite_file(path):
        raise NotAStore(f"{path} is not a SQLite database")
    return path.resolve()


class SqliteReader:
    """Read-only queries on a SQLite file through the standard library's ``sqlite3``.

    The SQL backends read SQLite files this way on the paths a scan takes (the schema check,
    the RUNNING records, the re-read before a close), because importing SQLAlchemy costs more
    CPU than scanning a 100,000-run store (docs/performance.md). Writes, and the reads only
    ``watch``, ``declutter`` and ``link`` make, go through SQLAlchemy. Each use is a new
    connection (``mode=ro``, after rolling back a dead writer's journal), as with SQLAlchemy's
    ``NullPool``: no connection outlives the read that needed it.
    """

    #: What the queries raise; callers translate it (:func:`translate_sql_error`).
    Error = sqlite3.Error

    def __init__(self, path: Path) -> None:
        self.path = path
        self._connect = sqlite_connector(path, writable=False)

    @contextmanager
    def connect(self) -> Iterator[sqlite3.Connection]:
        """A read-only connection, closed after use."""
        recover_hot_journal(self.path)
        conn = self._connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def connection(self, engine: Engine | None) -> Iterator[sqlite3.Connection]:
        """A connection to read on: the writer's, when a writable ``engine`` is at hand (its
        page cache is warm from the batches it wrote), else a read-only one of our own."""
        if engine is None:
            with self.connect() as conn:
                yield conn
            return
        with engine.connect() as wrapped:
            raw = wrapped.connection.driver_connection
            assert isinstance(raw, sqlite3.Connection)
            yield raw

    @staticmethod
    def table_names(conn: sqlite3.Connection) -> set[str]:
        """The tables of the database."""
        rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return {str(row[0]) for row in rows}


def marks(count: int) -> str:
    """``count`` question-mark placeholders, comma separated (for ``IN (...)`` in sqlite3)."""
    return ", ".join("?" * count)


def sqlite_connector(path: Path, *, writable: bool) -> Callable[[], sqlite3.Connection]:
    """Connections to an existing sqlite file that never create it: ``mode=ro`` (``mode=rw``
    to write)."""
    target = f"file:{quote(str(path))}?mode={'rw' if writable else 'ro'}"

    def connect() -> sqlite3.Connection:
        conn = sqlite3.connect(
            target, uri=True, timeout=SQLITE_BUSY_TIMEOUT_S, check_same_thread=False
        )
        # SQLite stores whatever bytes a writer gave it: a name that is not UTF-8 is shown with
        # replacement characters instead of failing the whole store.
        conn.text_factory = _lenient_text
        return conn

    return connect


def _lenient_text(raw: bytes) -> str:
    return raw.decode("utf-8", "replace")


def server_connect_args(url: str) -> dict[str, object]:
    """DBAPI connect arguments for a database server: a short connect timeout."""
    if url.startswith(("postgresql", "postgres", "mysql", "mariadb")):
        return {"connect_timeout": CONNECT_TIMEOUT_S}
    return {}


def side_connection(engine: Engine, conn: Connection) -> AbstractContextManager[Connection]:
    """A connection for lookups while ``conn`` streams a result.

    sqlite and PostgreSQL run other statements on a connection whose server-side cursor is
    still open; MySQL's unbuffered cursors do not, so there the lookups get their own connection.
    """
    if conn.dialect.name in ("sqlite", "postgresql"):
        return nullcontext(conn)
    return engine.connect()


def takes_libpq_options(url: str) -> bool:
    """Whether ``url`` is PostgreSQL through a driver that passes libpq ``options`` through."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError:
        return False
    return parsed.get_backend_name() in ("postgresql", "postgres") and (
        parsed.get_driver_name() in ("psycopg2", "psycopg")
    )


def recover_hot_journal(path: Path) -> None:
    """Roll back the transaction of a writer that died mid-write, so the file can be read.

    A process killed inside a write transaction (SIGKILL, the OOM killer: exactly the jobs
    mltidy is about) leaves a "hot" rollback journal next to the database. SQLite must roll it
    back before anyone reads, and a read-only connection cannot ("attempt to write a readonly
    database"). Rolling back restores the last committed state, which is what the next writer
    (or the next ``mlflow``/``optuna`` call) does anyway; it creates and migrates nothing.

    Raises:
        sqlite3.OperationalError: the journal is hot and may not be rolled back (no write
            permission); the message says so.
    """
    journal = path.with_name(path.name + "-journal")
    try:
        if journal.stat().st_size == 0:
            return
    except OSError:
        return
    probe = sqlite3.connect(
        f"file:{quote(str(path))}?mode=ro", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S
    )
    try:
        probe.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return
    except sqlite3.OperationalError as exc:
        if "readonly" not in str(exc).lower():
            return  # not the hot journal: the real read reports it
    finally:
        probe.close()
    try:
        writer = sqlite3.connect(
            f"file:{quote(str(path))}?mode=rw", uri=True, timeout=SQLITE_BUSY_TIMEOUT_S
        )
    except sqlite3.OperationalError as exc:
        raise sqlite3.OperationalError(
            f"a process died while writing to {path.name}, and its journal cannot be rolled "
            f"back without write access ({exc})"
        ) from exc
    try:
        writer.execute("SELECT count(*) FROM sqlite_master").fetchone()
    finally:
        writer.close()


def translate_sql_error(exc: BaseException, where: str) -> StoreError:
    """Turn a SQLAlchemy/DBAPI error into one clear mltidy error without secrets."""
    text = str(getattr(exc, "orig", None) or exc)
    first = first_line(exc, text)
    lowered = text.lower()
    if "password authentication failed" in lowered or "access denied" in lowered:
        return StoreAccessDenied(f"{where}: access denied ({first})", hint="check the credentials")
    if "does not exist" in lowered and "database" in lowered:
        return StoreNotFound(f"{where}: {first}", hint="mltidy never creates a database")
    if mentions(text, UNREACHABLE):
        return StoreUnreachable(f"{where}: cannot connect ({first})", hint="is the server running?")
    if "file is not a database" in lowered or "file is encrypted" in lowered:
        return NotAStore(f"{where} is not a readable SQLite database ({first})")
    if "malformed" in lowered:
        return NotAStore(f"{where} is corrupt ({first})")
    if "no such table" in lowered or "no such column" in lowered or "undefined" in lowered:
        return UnsupportedSchema(f"{where}: unexpected schema ({first})")
    if "readonly database" in lowered or "read-only" in lowered or "permission denied" in lowered:
        return StoreAccessDenied(f"{where}: not allowed to write ({first})")
    if "database is locked" in lowered:
        return StoreError(f"{where} stayed locked by another process", hint="try again")
    return StoreError(f"{where}: {first}")


def database_now(conn: Connection) -> datetime | None:
    """The database server's clock as aware UTC (SQLite's is this machine's), or ``None``.

    PostgreSQL's ``CURRENT_TIMESTAMP`` carries its offset; MySQL's is in the session's time
    zone, so ``UTC_TIMESTAMP()`` is asked instead; SQLite's ``'now'`` is UTC.
    """
    from sqlalchemy import text

    queries = {
        "sqlite": "SELECT strftime('%Y-%m-%d %H:%M:%f', 'now')",
        "postgresql": "SELECT CURRENT_TIMESTAMP",
        "mysql": "SELECT UTC_TIMESTAMP(6)",
        "mariadb": "SELECT UTC_TIMESTAMP(6)",
    }
    query = queries.get(conn.dialect.name)
    if query is None:
        return None
    value = conn.execute(text(query)).scalar()
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value)
        except ValueError:
            return None
    if not isinstance(value, datetime):
        return None
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def newest_time(candidates: Iterable[tuple[datetime | None, str]]) -> tuple[datetime | None, str]:
    """The newest of ``(time, what)`` pairs, and what it is; ``(None, "")`` when none is set."""
    found = [(when, what) for when, what in candidates if when is not None]
    if not found:
        return None, ""
    return max(found, key=lambda pair: pair[0])


def table_names(engine: Engine) -> set[str]:
    """The tables of the default schema (raises SQLAlchemy errors; callers translate)."""
    from sqlalchemy import inspect

    return set(inspect(engine).get_table_names())


T = TypeVar("T")
K = TypeVar("K")
LOCK_RETRIES = 5


def retry_locked(attempt: Callable[[], T], where: str) -> T:
    """Run a write transaction, retrying a few times while SQLite reports the file locked.

    Raises:
        StoreError: any other failure, or still locked after the retries.
    """
    from sqlalchemy.exc import OperationalError, SQLAlchemyError

    for tries in range(LOCK_RETRIES):
        try:
            return attempt()
        except OperationalError as exc:
            if "locked" in str(exc).lower() and tries < LOCK_RETRIES - 1:
                time.sleep(0.2 * 2**tries)
                continue
            raise translate_sql_error(exc, where) from exc
        except SQLAlchemyError as exc:
            raise translate_sql_error(exc, where) from exc
    raise AssertionError("unreachable")  # pragma: no cover


#: Ids per statement of a batched write: a few hundred, so that a statement's parameters stay
#: below any database's limit (999 in SQLite before 3.32).
STATEMENT_CHUNK = 500


def chunks(items: Sequence[K], size: int = STATEMENT_CHUNK) -> Iterator[Sequence[K]]:
    """``items`` in slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


#: How many entries of a run's artifact folder ``declutter`` looks at, at most: it needs to know
#: whether the run holds anything, not how much.
ARTIFACT_WALK_LIMIT = 10_000


def local_artifact_count(artifact_uri: str | None, run_id: str) -> int | None:
    """Files under a run's own local artifact folder (``.../<run id>/artifacts``, as MLflow makes
    it), counted up to :data:`ARTIFACT_WALK_LIMIT` entries without following links; ``None``
    when the location is remote (s3://, gs://, mlflow-artifacts:/, ...) or is not the run's own
    folder (an ``artifact_uri`` of ``/`` must not make mltidy walk the machine)."""
    if not artifact_uri:
        return 0
    if artifact_uri.startswith("file:"):
        path = Path(unquote(urlparse(artifact_uri).path))
    elif artifact_uri.startswith("/"):
        path = Path(artifact_uri)
    else:
        return None
    if path.name != "artifacts" or path.parent.name != run_id or not run_id:
        return None
    if not path.is_dir():
        return 0
    files = seen = 0
    for _, dirs, names in os.walk(path, followlinks=False):
        files += len(names)
        seen += len(names) + len(dirs)
        if seen >= ARTIFACT_WALK_LIMIT:
            break
    return files
