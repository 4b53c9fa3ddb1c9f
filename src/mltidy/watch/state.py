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

The file holds no secrets: notification targets are stored as a hash and their redacted form,
stores by their identity (secret-free). One file per watch profile (the stores and selection),
under the user's state directory, unless ``--state PATH`` names one.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

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


def _owner_only(path: Path) -> None:
    """The state names stores, experiments and runs: readable by its owner only."""
    with contextlib.suppress(OSError):
        path.chmod(0o600)


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
    """The state file, open. Not thread-safe; one poll at a time holds :meth:`lock`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            if not path.parent.exists():
                path.parent.mkdir(parents=True)
                path.parent.chmod(0o700)  # a folder of its own: the owner's only
            self._conn = sqlite3.connect(path, timeout=LOCK_WAIT_S, isolation_level=None)
            _owner_only(path)
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
        with lock_path.open("a") as handle:
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
    "state_dir",
]
