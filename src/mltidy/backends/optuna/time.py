"""Optuna's naive datetimes, made aware, and written back in the storage's own convention.

Optuna before 5.0 wrote naive *local* time of the writing process; Optuna 5.0 RDB storages write
naive *UTC* and old rows are not migrated. Journal files carry an explicit offset from 5.0 on,
naive local before. A naive local time means nothing without the writer's UTC offset, which the
storage does not record. :class:`StorageTimes` holds what mltidy knows about it for one storage:

* set explicitly (``--optuna-utc-offset``, ``MLTIDY_OPTUNA_UTC_OFFSET``, ``optuna_utc_offset``
  in the config file), or
* inferred from the storage itself (:func:`infer_offset`: trials linked to MLflow runs, whose
  start times are epoch milliseconds, tell the offset to the quarter hour), or
* unknown: the rows are read in this machine's zone and each record says so
  (:attr:`~mltidy.model.Record.assumed_utc_offset`), so the judge never states an age that
  rests on that guess.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone, tzinfo

from mltidy.durations import format_offset
from mltidy.model import naive_local_to_utc, naive_utc_to_utc

#: A naive value read as UTC that lands further than this in the future was written as local time.
FUTURE_TOLERANCE = timedelta(minutes=2)
#: UTC offsets are whole quarter hours, between UTC-12:00 and UTC+14:00.
QUARTER_HOUR = timedelta(minutes=15)
EARLIEST_OFFSET = timedelta(hours=-12)
LATEST_OFFSET = timedelta(hours=14)
#: A trial starts shortly before the MLflow run it trains in; pairs further apart than this
#: from a whole quarter hour say nothing about the offset.
PAIR_SLACK = timedelta(minutes=5)
#: Share of the telling pairs that must agree on one offset.
AGREEMENT = 2 / 3

_OFFSET = re.compile(r"^(?:UTC|GMT)?\s*([+-])(\d{1,2})(?::?(\d{2}))?$", re.IGNORECASE)


def writes_naive_utc(library_version: str | None) -> bool:
    """Whether an RDB storage set up by this Optuna version writes naive UTC (5.0 and newer)."""
    match = re.match(r"\s*(\d+)", library_version or "")
    return match is not None and int(match.group(1)) >= 5


def parse_zone(text: str) -> tzinfo:
    """A writer's zone: ``+09:00``, ``-0700``, ``UTC``, ``UTC+5:30`` or an IANA name such as
    ``Asia/Tokyo`` (which follows daylight saving time).

    Raises:
        ValueError: none of these.
    """
    value = text.strip()
    if value.upper() in ("UTC", "Z", "GMT", "+00:00", "-00:00"):
        return timezone.utc
    match = _OFFSET.match(value)
    if match:
        sign, hours, minutes = match.groups()
        offset = timedelta(hours=int(hours), minutes=int(minutes or 0))
        offset = -offset if sign == "-" else offset
        if not EARLIEST_OFFSET <= offset <= LATEST_OFFSET:
            raise ValueError(f"{value} is not between -12:00 and +14:00")
        return timezone(offset)
    if "/" in value:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            return ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value}") from None
    raise ValueError(f"{value} is not a UTC offset or a time zone name")


def local_offset(value: datetime | None = None) -> timedelta:
    """This machine's UTC offset at ``value`` (a naive local time), or now."""
    aware = (value or datetime.now()).astimezone()
    return aware.utcoffset() or timedelta(0)


@dataclass(frozen=True)
class Inference:
    """What the linked pairs of a storage say about its writer's offset."""

    offset: timedelta | None
    pairs: int
    why: str


def infer_offset(pairs: Iterable[tuple[datetime, datetime]]) -> Inference:
    """The writer's UTC offset from (naive local trial start, aware UTC start of its MLflow run)
    pairs: each difference, rounded to the quarter hour, is one vote; pairs further than
    :data:`PAIR_SLACK` from a quarter hour, or outside UTC-12..+14, do not vote. An offset
    needs :data:`AGREEMENT` of the votes."""
    votes: Counter[timedelta] = Counter()
    for naive, run_start in pairs:
        diff = naive - run_start.astimezone(timezone.utc).replace(tzinfo=None)
        rounded = QUARTER_HOUR * round(diff / QUARTER_HOUR)
        if abs(diff - rounded) <= PAIR_SLACK and EARLIEST_OFFSET <= rounded <= LATEST_OFFSET:
            votes[rounded] += 1
    total = sum(votes.values())
    if not total:
        return Inference(None, 0, "no trial linked to an MLflow run that was read")
    offset, count = votes.most_common(1)[0]
    if count < AGREEMENT * total:
        seen = ", ".join(f"{format_offset(o)} ({n})" for o, n in votes.most_common())
        return Inference(None, total, f"trials linked to MLflow runs disagree: {seen}")
    noun = "trial" if count == 1 else "trials"
    return Inference(offset, count, f"inferred from {count} {noun} linked to MLflow runs")


class StorageTimes:
    """How one storage's naive datetimes are read and written; shared by a backend's parts.

    Attributes:
        naive_utc: the storage's version writes naive UTC (Optuna 5); else naive local time.
        zone: the writer's zone for naive local rows, when set or inferred.
        source: where ``zone`` came from, in words.
    """

    def __init__(self, naive_utc: bool) -> None:
        self.naive_utc = naive_utc
        self.zone: tzinfo | None = None
        self.source = ""

    @property
    def known(self) -> bool:
        """Whether naive rows are read with certainty (UTC, or a known writer's zone)."""
        return self.naive_utc or self.zone is not None

    def set_zone(self, zone: tzinfo, source: str) -> None:
        """Read (and write) naive local rows in ``zone``."""
        self.zone = zone
        self.source = source

    def _local(self, value: datetime) -> datetime:
        if self.zone is None:
            return naive_local_to_utc(value)
        return value.replace(tzinfo=self.zone).astimezone(timezone.utc)

    def to_utc(self, value: datetime | None, now: datetime) -> datetime | None:
        """A stored datetime as aware UTC. A value that would lie in the future under the
        storage's convention was written the other way (a store set up by 4.x and written by
        5.x, or the reverse), so the other reading is used."""
        if value is None:
            return None
        if value.tzinfo is not None:
            return value.astimezone(timezone.utc)
        first = naive_utc_to_utc(value) if self.naive_utc else self._local(value)
        if first - now > FUTURE_TOLERANCE:
            return self._local(value) if self.naive_utc else naive_utc_to_utc(value)
        return first

    def assumed(self, value: datetime | None, now: datetime) -> timedelta | None:
        """The UTC offset mltidy assumed to read a stored value (see :meth:`to_utc`): this
        machine's for a naive local value whose writer's zone is unknown, or UTC where that
        reading lay in the future; ``None`` when the reading is certain."""
        if value is None or value.tzinfo is not None or self.known:
            return None
        if naive_local_to_utc(value) - now > FUTURE_TOLERANCE:
            return timedelta(0)
        return local_offset(value)

    def to_store(self, value: datetime) -> datetime:
        """An aware time as this storage writes it: naive UTC (5.x), or naive local time of its
        writer (4.x: the known zone, else this machine's, the zone its rows were read in)."""
        if self.naive_utc:
            return value.astimezone(timezone.utc).replace(tzinfo=None)
        if self.zone is not None:
            return value.astimezone(self.zone).replace(tzinfo=None)
        return value.astimezone().replace(tzinfo=None)

    def describe(self) -> str:
        """How the storage's times are read, for doctor and ``--verbose``."""
        if self.naive_utc:
            return "naive UTC (Optuna 5)"
        if self.zone is not None:
            now = datetime.now(timezone.utc)
            offset = now.astimezone(self.zone).utcoffset() or timedelta(0)
            name = str(self.zone) if "/" in str(self.zone) else format_offset(offset)
            return f"naive local time of {name} ({self.source})"
        return (
            "naive local time of an unknown zone (read as this machine's, "
            f"{format_offset(local_offset())}): set optuna_utc_offset"
        )


def rdb_to_utc(value: datetime | None, *, naive_utc: bool, now: datetime) -> datetime | None:
    """An RDB trial datetime as aware UTC, with no zone known for naive local rows (this
    machine's is used); see :meth:`StorageTimes.to_utc`."""
    return StorageTimes(naive_utc).to_utc(value, now)


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
