"""What ``watch`` remembers between polls: a small SQLite file, so a restart re-notifies nothing.

* **Events, deduplicated.** Every event has a stable key; an event already recorded is never
  recorded (or sent) again, across polls, restarts and cron runs.
* **An outbox.** Delivery is tracked per target: an event whose delivery failed stays pending for
  that target and goes out with the next poll's message, until it is sent or older than
  :data:`OUTBOX_MAX_AGE` (then it is given up, and counted). A target added later receives only
  events recorded after it was first used.
* **Watermarks.** Per store: when it was first polled (events older than that are recorded as
  already known, not sent), the last successful poll (the ended-runs query starts a little
  before it), and how long it has been failing.
* **Experiment activity.** When ``watch`` last saw each experiment active, for "went idle".

The file holds no secrets: notification targets are stored as their redacted form and a hash
keyed with a per-installation secret (``secret`` in the state directory, mode 600), so the file
cannot confirm a guessed URL; stores by their identity (secret-free). One file per watch profile
(the stores and selection), under the user's state directory, unless ``--state PATH`` names one.

mltidy writes only files it owns (docs/watch.md, "The state file"): the state is a regular file
that mltidy created (``O_EXCL``, mode 600) or a valid watch state of this user. A symbolic link, a
device, another program's file or a tracking store is refused, never followed, changed or
chmod'ed.

Size: one file format and its guards: the refusal of foreign paths, locking, the outbox and
deduplication all depend on the same schema.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import secrets
import sqlite3
import stat
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

from mltidy.bounded import read_head
from mltidy.errors import ChangeRefused, UsageError
from mltidy.notify.events import Event

SCHEMA_VERSION = 1
#: A pending delivery older than this is given up (the target has been down for a week).
OUTBOX_MAX_AGE = timedelta(days=7)
#: Sent events are forgotten after this long (a record still dead then is reported again).
RETENTION = timedelta(days=30)
#: How long a poll waits for another poll holding the same state to finish.
LOCK_WAIT_S = 10.0
STATE_ENV = "MLTIDY_STATE_DIR"
#: The per-installation secret that keys the hashes of notification URLs.
SECRET_NAME = "secret"
#: The tables every watch state has (what tells a state file from any other SQLite file).
STATE_TABLES = frozenset({"meta", "stores", "events", "targets", "deliveries"})
SQLITE_MAGIC = b"SQLite format 3\x00"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS stores (
    uri TEXT PRIMARY KEY,
    first_polled_at REAL NOT NULL,
    last_ok_at REAL,
    failing_since REAL,
    failures INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    store TEXT,
    created_at REAL NOT NULL,
    baseline INTEGER NOT NULL DEFAULT 0,
    payload TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS targets (
    key TEXT PRIMARY KEY,
    shown TEXT NOT NULL,
    first_seen_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    event_key TEXT NOT NULL,
    target_key TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    sent_at REAL,
    gave_up_at REAL,
    PRIMARY KEY (event_key, target_key)
);
CREATE TABLE IF NOT EXISTS activity (
    store TEXT NOT NULL,
    experiment_id TEXT NOT NULL,
    experiment TEXT NOT NULL,
    last_active_at REAL NOT NULL,
    PRIMARY KEY (store, experiment_id)
);
"""


def state_dir(env: Mapping[str, str]) -> Path:
    """``$MLTIDY_STATE_DIR``, else ``$XDG_STATE_HOME/mltidy``, else ``~/.local/state/mltidy``."""
    if env.get(STATE_ENV):
        return Path(env[STATE_ENV]).expanduser()
    base = env.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base).expanduser() / "mltidy"


def default_state_path(
    uris: Iterable[str],
    experiments: Iterable[str],
    studies: Iterable[str],
    env: Mapping[str, str],
    filters: Mapping[str, Sequence[str]] | None = None,
) -> Path:
    """One state file per watch profile (the stores' identities and the selection), so that two
    watches with different stores never share deduplication, while a daemon and a cron
    ``--once`` over the same stores do, wherever each was started. ``filters`` are the
    selection's other filters (``Selection.narrowing``); without any, the profile (and the
    file) is what it was before they existed."""
    profile_data: dict[str, list[str]] = {
        "stores": sorted(uris),
        "experiments": sorted(experiments),
        "studies": sorted(studies),
    }
    profile_data.update({k: sorted(v) for k, v in (filters or {}).items() if v})
    profile = json.dumps(profile_data)
    digest = hashlib.sha256(profile.encode()).hexdigest()[:12]
    return state_dir(env) / f"watch-{digest}.db"


def _refuse(path: Path, why: str) -> UsageError:
    return UsageError(
        f"cannot use {path} as the watch state: {why}",
        hint="pass --state a new path (mltidy creates it) or a state file an earlier watch wrote",
    )


def _private_folder(folder: Path) -> None:
    """Create ``folder`` (and its parents) if missing; the folders mltidy creates are its owner's
    only. Existing folders are left as they are."""
    if folder.is_dir():
        return
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o700)


def _is_watch_state(path: Path) -> str | None:
    """``None`` when ``path`` (a regular file) holds a watch state, else what it holds instead.
    Reads without writing: the header, then the table names on a read-only connection."""
    head = read_head(path, len(SQLITE_MAGIC))
    if head is None:
        return "it cannot be read as a file"
    if head != SQLITE_MAGIC:
        return "it is not a watch state (not an SQLite file mltidy wrote)"
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=LOCK_WAIT_S)
        try:
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
            schema = (
                conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
                if tables >= STATE_TABLES
                else None
            )
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"it cannot be read as SQLite ({exc})"
    if schema is None:
        if {"runs", "experiments"} <= tables or {"studies", "trials"} <= tables:
            return "it is a tracking store, not a watch state"
        return "it is an SQLite file of another program, not a watch state"
    return None


def _claim(path: Path) -> tuple[int, int]:
    """Create the state file, or check that the existing one may be used; returns its
    ``(st_dev, st_ino)``.

    Raises:
        UsageError: the path is a symbolic link, not a regular file, another user's, or a file
            that is not a watch state (a tracking store, another program's database).
    """
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        _private_folder(path.parent)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600)
        except FileExistsError:
            return _claim(path)  # made in the meantime: judge it like any existing file
        try:
            info = os.fstat(fd)
        finally:
            os.close(fd)
        return info.st_dev, info.st_ino
    if stat.S_ISLNK(info.st_mode):
        raise _refuse(path, "it is a symbolic link (mltidy does not follow links for its state)")
    if not stat.S_ISREG(info.st_mode):
        raise _refuse(path, "it is not a regular file")
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise _refuse(path, "it belongs to another user")
    if info.st_size == 0:
        # What mltidy leaves when it stops between creating the file and writing its tables;
        # an empty file anyone else made would not be private.
        if info.st_mode & 0o077:
            raise _refuse(path, "it is an empty file mltidy did not create")
        return info.st_dev, info.st_ino
    why = _is_watch_state(path)
    if why is not None:
        raise _refuse(path, why)
    return info.st_dev, info.st_ino


def installation_secret(folder: Path) -> bytes:
    """The secret that keys the hashes of notification URLs in every watch state of this user:
    ``folder/secret``, created on first use (mode 600, never through a link).

    Raises:
        UsageError: the secret cannot be created or read, or is not private.
    """
    path = folder / SECRET_NAME
    for _ in range(2):
        try:
            fd = os.open(path, os.O_RDONLY | _NOFOLLOW | _CLOEXEC)
        except FileNotFoundError:
            try:
                _private_folder(folder)
                fd = os.open(
                    path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _NOFOLLOW | _CLOEXEC, 0o600
                )
            except FileExistsError:
                continue  # another mltidy made it first: read that one
            except OSError as exc:
                raise UsageError(f"cannot create {path} ({exc.strerror})") from exc
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            continue
        except OSError as exc:
            raise UsageError(f"cannot read {path} ({exc.strerror})") from exc
        with os.fdopen(fd, "rb") as handle:
            info = os.fstat(handle.fileno())
            value = handle.read(4096).strip()
        private = stat.S_ISREG(info.st_mode) and not info.st_mode & 0o077
        if not private or (hasattr(os, "geteuid") and info.st_uid != os.geteuid()):
            raise UsageError(
                f"{path} is not a private file of this user",
                hint="remove it; mltidy creates a new one (mode 600)",
            )
        if len(value) >= 32:
            return value
        raise UsageError(f"{path} holds no secret", hint="remove it; mltidy creates a new one")
    raise UsageError(f"cannot create {path}")


def legacy_target_key(url: str) -> str:
    """The unkeyed hash earlier versions stored (migrated to the keyed one on first use)."""
    return hashlib.sha256(url.encode()).hexdigest()[:24]


def _ts(value: datetime) -> float:
    return value.timestamp()


def _dt(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=timezone.utc)


@dataclass(frozen=True)
class StoreMark:
    """What the state knows about one store."""

    last_ok_at: datetime | None
    failing_since: datetime | None
    failures: int


class WatchState:
    """The state file, open. Not thread-safe; one poll at a time holds :meth:`lock`.

    Args:
        path: the state file: created if missing (mode 600), else it must be a watch state of
            this user (see the module docstring).
        secret_dir: where the per-installation secret lives (default: the state directory).

    Raises:
        UsageError: the path may not be used, or cannot be opened.
    """

    def __init__(self, path: Path, secret_dir: Path | None = None) -> None:
        self.path = path
        self._secret_dir = secret_dir
        self._secret: bytes | None = None
        try:
            identity = _claim(path)
            self._conn = sqlite3.connect(
                f"file:{quote(str(path))}?mode=rw",
                uri=True,
                timeout=LOCK_WAIT_S,
                isolation_level=None,
            )
            after = os.lstat(path)
            if stat.S_ISLNK(after.st_mode) or (after.st_dev, after.st_ino) != identity:
                self._conn.close()
                raise _refuse(path, "it was replaced while mltidy opened it")
            self._conn.executescript(_SCHEMA)
            self._conn.execute(
                "INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)",
                (str(SCHEMA_VERSION),),
            )
            version = self._conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
        except (OSError, sqlite3.Error) as exc:
            raise UsageError(
                f"cannot use {path} as the watch state ({exc})",
                hint="pass --state PATH to a writable file",
            ) from exc

        if version and int(version[0]) > SCHEMA_VERSION:
            raise UsageError(f"{path} was written by a newer mltidy; pass another --state PATH")

    def close(self) -> None:
        """Close the file."""
        self._conn.close()

    def __enter__(self) -> WatchState:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the state for one poll: a second watch on the same state waits, then gives up.

        Raises:
            ChangeRefused: another poll kept the state longer than :data:`LOCK_WAIT_S`.
        """
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no cross-process lock
            yield
            return
        lock_path = self.path.with_name(self.path.name + ".lock")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | _CLOEXEC, 0o600)
        except OSError as exc:
            raise UsageError(
                f"cannot use {lock_path} as the watch state's lock ({exc.strerror}; a symbolic "
                "link is never followed)"
            ) from exc
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise UsageError(f"cannot use {lock_path} as the watch state's lock: not a file")
        with os.fdopen(fd, "r+b") as handle:
            deadline = time.monotonic() + LOCK_WAIT_S
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise ChangeRefused(
                            f"another mltidy watch is polling with the state {self.path}",
                            hint="wait for it, or give this watch its own --state PATH",
                        ) from None
                    time.sleep(0.1)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # -- notification targets ---------------------------------------------------------

    def target_key(self, url: str) -> str:
        """A notification URL's identity in this state: keyed with the installation's secret,
        so the file cannot confirm a guessed URL.

        Raises:
            UsageError: the secret cannot be created or read.
        """
        if self._secret is None:
            folder = self._secret_dir or state_dir(os.environ)
            self._secret = installation_secret(folder)
        return hmac.new(self._secret, url.encode(), hashlib.sha256).hexdigest()[:32]

    def targets(self, targets: Sequence[tuple[str, str]], now: datetime) -> list[str]:
        """Register this poll's targets (``(url, shown)``) and return their keys. A target an
        earlier version recorded under an unkeyed hash keeps its outbox under the keyed one."""
        keys = [self.target_key(url) for url, _ in targets]
        with self._tx():
            for (url, _), key in zip(targets, keys, strict=True):
                old = legacy_target_key(url)
                if self._conn.execute("SELECT 1 FROM targets WHERE key = ?", (old,)).fetchone():
                    self._conn.execute(
                        "UPDATE OR IGNORE targets SET key = ? WHERE key = ?", (key, old)
                    )
                    self._conn.execute(
                        "UPDATE OR IGNORE deliveries SET target_key = ? WHERE target_key = ?",
                        (key, old),
                    )
                    self._conn.execute("DELETE FROM targets WHERE key = ?", (old,))
                    self._conn.execute("DELETE FROM deliveries WHERE target_key = ?", (old,))
        self.register(zip(keys, (shown for _, shown in targets), strict=True), now)
        return keys

    # -- stores -----------------------------------------------------------------------

    def store_mark(self, uri: str) -> StoreMark | None:
        """The store's marks, or ``None`` before its first poll."""
        row = self._conn.execute(
            "SELECT last_ok_at, failing_since, failures FROM stores WHERE uri = ?",
            (uri,),
        ).fetchone()
        if row is None:
            return None
        return StoreMark(_dt(row[0]), _dt(row[1]), int(row[2]))

    def mark_ok(self, uri: str, at: datetime) -> None:
        """A poll read the store: move its watermark, clear its failure count."""
        self._conn.execute(
            "INSERT INTO stores (uri, first_polled_at, last_ok_at) VALUES (?, ?, ?) "
            "ON CONFLICT (uri) DO UPDATE SET last_ok_at = excluded.last_ok_at, "
            "failing_since = NULL, failures = 0",
            (uri, _ts(at), _ts(at)),
        )

    def mark_failed(self, uri: str, at: datetime) -> StoreMark:
        """A poll could not read the store; returns the updated marks (failures in a row)."""
        self._conn.execute(
            "INSERT INTO stores (uri, first_polled_at, failing_since, failures) "
            "VALUES (?, ?, ?, 1) ON CONFLICT (uri) DO UPDATE SET "
            "failing_since = COALESCE(failing_since, excluded.failing_since), "
            "failures = failures + 1",
            (uri, _ts(at), _ts(at)),
        )
        mark = self.store_mark(uri)
        assert mark is not None
        return mark

    # -- events -----------------------------------------------------------------------

    def add(self, events: Sequence[Event], now: datetime, *, baseline: bool = False) -> list[Event]:
        """Record events; returns those that were new (an event already known is skipped).

        ``baseline`` records them as already known: deduplicated, never sent.
        """
        added: list[Event] = []
        with self._tx():
            for event in events:
                cursor = self._conn.execute(
                    "INSERT OR IGNORE INTO events (key, kind, store, created_at, baseline, payload)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    (
                        event.key,
                        event.kind.value,
                        event.store,
                        _ts(now),
                        int(baseline),
                        json.dumps(event.to_dict()),
                    ),
                )
                if cursor.rowcount == 1:
                    added.append(event)
        return added

    def register(self, target_keys: Iterable[tuple[str, str]], now: datetime) -> None:
        """Note the targets of this poll (``(key, shown)``); a new one starts receiving now."""
        with self._tx():
            for key, shown in target_keys:
                self._conn.execute(
                    "INSERT OR IGNORE INTO targets (key, shown, first_seen_at) VALUES (?, ?, ?)",
                    (key, shown, _ts(now)),
                )

    def pending(self, target_key: str) -> list[Event]:
        """Events not yet sent to (nor given up for) a target, oldest first."""
        rows = self._conn.execute(
            "SELECT e.payload FROM events e JOIN targets t ON t.key = ? "
            "WHERE e.baseline = 0 AND e.created_at >= t.first_seen_at AND NOT EXISTS ("
            "  SELECT 1 FROM deliveries d WHERE d.event_key = e.key AND d.target_key = t.key"
            "  AND (d.sent_at IS NOT NULL OR d.gave_up_at IS NOT NULL)) "
            "ORDER BY e.created_at, e.rowid",
            (target_key,),
        )
        return [Event.from_dict(json.loads(payload)) for (payload,) in rows]

    def delivered(
        self, keys: Sequence[str], target_key: str, ok: bool, error: str | None, now: datetime
    ) -> None:
        """Record one delivery attempt of these events to a target."""
        with self._tx():
            for key in keys:
                self._conn.execute(
                    "INSERT INTO deliveries (event_key, target_key, attempts, last_error, sent_at) "
                    "VALUES (?, ?, 1, ?, ?) ON CONFLICT (event_key, target_key) DO UPDATE SET "
                    "attempts = attempts + 1, last_error = excluded.last_error, "
                    "sent_at = excluded.sent_at",
                    (key, target_key, error, _ts(now) if ok else None),
                )

    def give_up(self, target_key: str, now: datetime, max_age: timedelta = OUTBOX_MAX_AGE) -> int:
        """Stop retrying events pending for a target longer than ``max_age``; returns how many."""
        stale = [
            e.key for e in self.pending(target_key) if self._created_at(e.key) < _ts(now - max_age)
        ]
        with self._tx():
            for key in stale:
                self._conn.execute(
                    "INSERT INTO deliveries (event_key, target_key, gave_up_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (event_key, target_key) DO UPDATE SET "
                    "gave_up_at = excluded.gave_up_at",
                    (key, target_key, _ts(now)),
                )
        return len(stale)

    def _created_at(self, key: str) -> float:
        row = self._conn.execute("SELECT created_at FROM events WHERE key = ?", (key,)).fetchone()
        return float(row[0]) if row else 0.0

    def prune(self, now: datetime, retention: timedelta = RETENTION) -> None:
        """Forget events older than ``retention`` (any delivery still pending by then was given
        up long ago, after :data:`OUTBOX_MAX_AGE`)."""
        cutoff = _ts(now - retention)
        with self._tx():
            self._conn.execute("DELETE FROM events WHERE created_at < ?", (cutoff,))
            self._conn.execute(
                "DELETE FROM deliveries WHERE event_key NOT IN (SELECT key FROM events)"
            )
            self._conn.execute("DELETE FROM activity WHERE last_active_at < ?", (cutoff,))

    # -- experiment activity ----------------------------------------------------------

    def touch(self, store: str, experiment_id: str, experiment: str, at: datetime) -> None:
        """``watch`` saw an experiment active at ``at`` (keeps the newest time)."""
        self._conn.execute(
            "INSERT INTO activity (store, experiment_id, experiment, last_active_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (store, experiment_id) DO UPDATE SET "
            "experiment = excluded.experiment, "
            "last_active_at = MAX(last_active_at, excluded.last_active_at)",
            (store, experiment_id, experiment, _ts(at)),
        )

    def activity(self, store: str) -> dict[str, tuple[str, datetime]]:
        """``experiment_id -> (name, last seen active)`` for one store."""
        rows = self._conn.execute(
            "SELECT experiment_id, experiment, last_active_at FROM activity WHERE store = ?",
            (store,),
        )
        found: dict[str, tuple[str, datetime]] = {}
        for experiment_id, name, at in rows:
            when = _dt(at)
            assert when is not None
            found[experiment_id] = (name, when)
        return found

    @contextlib.contextmanager
    def _tx(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        self._conn.execute("COMMIT")


__all__ = [
    "OUTBOX_MAX_AGE",
    "RETENTION",
    "StoreMark",
    "WatchState",
    "default_state_path",
    "installation_secret",
    "legacy_target_key",
    "state_dir",
]
