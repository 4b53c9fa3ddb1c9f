"""Optuna's naive datetimes, made aware.

Optuna before 5.0 wrote naive *local* time; Optuna 5.0 RDB storages write naive *UTC* and old
rows are not migrated. Journal files carry an explicit offset from 5.0 on, naive local before.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from mltidy.model import naive_local_to_utc, naive_utc_to_utc

#: A naive value read as UTC that lands further than this in the future was written as local time.
FUTURE_TOLERANCE = timedelta(minutes=2)


def writes_naive_utc(library_version: str | None) -> bool:
    """Whether an RDB storage set up by this Optuna version writes naive UTC (5.0 and newer)."""
    match = re.match(r"\s*(\d+)", library_version or "")
    return match is not None and int(match.group(1)) >= 5


def rdb_to_utc(value: datetime | None, *, naive_utc: bool, now: datetime) -> datetime | None:
    """An RDB trial datetime as aware UTC.

    ``naive_utc`` says how the storage's version writes. A value that would lie in the future
    under that reading was written the other way (a store set up by 4.x and written by 5.x, or
    the reverse), so the other reading is used.
    """
    if value is None:
        return None
    if value.tzinfo is not None:
        return value.astimezone(timezone.utc)
    first = naive_utc_to_utc(value) if naive_utc else naive_local_to_utc(value)
    if first - now > FUTURE_TOLERANCE:
        return naive_local_to_utc(value) if naive_utc else naive_utc_to_utc(value)
    return first


def journal_to_utc(value: datetime | None) -> datetime | None:
    """A trial datetime from Optuna's journal replay (naive local by then) as aware UTC."""
    if value is None:
        return None
    if value.tzinfo is not None:
        return value.astimezone(timezone.utc)
    return naive_local_to_utc(value)


def heartbeat_to_utc(value: datetime, offset: timedelta) -> datetime:
    """A heartbeat as aware UTC. Optuna writes heartbeats with the database's clock, naive in
    the session's time zone; ``offset`` is how far that clock is ahead of UTC (see
    ``tables.db_clock_offset``)."""
    if value.tzinfo is not None:
        return value
    return (value - offset).replace(tzinfo=timezone.utc)
