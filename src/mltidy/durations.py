"""Durations as people write them: ``90s``, ``30m``, ``2h``, ``7d`` (a contract), and back."""

from __future__ import annotations

import re
from datetime import timedelta

from mltidy.errors import UsageError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
#: The longest duration mltidy takes: a century. Longer ones mean nothing for runs and trials,
#: and "now minus" them leaves the calendar (datetime's year 1).
MAX_DURATION = timedelta(days=36525)


def parse_duration(text: str) -> timedelta:
    """Parse ``90s``, ``30m``, ``2h``, ``7d``, ``1w`` or a compound such as ``1h30m``.

    Raises:
        UsageError: the text is not a positive duration of at most :data:`MAX_DURATION`.
    """
    cleaned = text.strip().lower().replace(" ", "")
    pos = 0
    seconds = 0.0
    for match in _PART.finditer(cleaned):
        if match.start() != pos:
            break
        seconds += float(match.group(1)) * _UNITS[match.group(2)]
        pos = match.end()
    if not cleaned or pos != len(cleaned):
        raise UsageError(
            f"{text!r} is not a duration",
            hint="write a number and a unit: 90s, 30m, 2h, 7d (or a compound such as 1h30m)",
        )
    if seconds <= 0:
        raise UsageError(f"{text!r} must be longer than zero")
    if seconds > MAX_DURATION.total_seconds():
        raise UsageError(f"{text!r} is longer than mltidy takes (at most 100 years, 36525d)")
    return timedelta(seconds=seconds)


def format_duration(delta: timedelta) -> str:
    """A short human form: ``45 s``, ``12 min``, ``2 h 14 min``, ``3 d 4 h``."""
    total = int(abs(delta.total_seconds()))
    days, rest = divmod(total, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    if minutes:
        return f"{minutes} min"
    return f"{seconds} s"


def format_offset(offset: timedelta) -> str:
    """A UTC offset as people write it: ``UTC+09:00``, ``UTC-07:00``."""
    sign = "-" if offset < timedelta(0) else "+"
    minutes = int(abs(offset).total_seconds()) // 60
    return f"UTC{sign}{minutes // 60:02d}:{minutes % 60:02d}"
