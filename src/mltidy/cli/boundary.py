"""The process boundary: command-line bytes in, text out, whatever either holds.

Python turns argument bytes that are not UTF-8 into lone surrogates, which fail later, deep inside
a library (a SQLite driver, a JSON encoder, a terminal write) as a crash. mltidy refuses them at
the door with a usage error instead. And a terminal or pipe whose encoding cannot show some
character (a name in another script under ``LANG=C``) gets an escape, not a ``UnicodeEncodeError``
after half a report.
"""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence

from mltidy.errors import UsageError
from mltidy.text import is_utf8


def check_arguments(argv: Sequence[str]) -> None:
    """Refuse arguments that are not valid UTF-8.

    Raises:
        UsageError: names the argument (by position; its bytes are shown escaped).
    """
    for position, argument in enumerate(argv, start=1):
        if not is_utf8(argument):
            shown = argument.encode("utf-8", "surrogateescape").decode("ascii", "backslashreplace")
            raise UsageError(
                f"argument {position} ({shown[:60]}) is not valid UTF-8",
                hint="mltidy takes names, paths and URLs as UTF-8 text",
            )


def tolerant_streams() -> None:
    """Make stdout and stderr escape what their encoding cannot show, instead of raising."""
    for stream in (sys.stdout, sys.stderr):
        if isinstance(stream, io.TextIOWrapper):
            stream.reconfigure(errors="backslashreplace")


__all__ = ["check_arguments", "tolerant_streams"]
