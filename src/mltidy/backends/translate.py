"""What every backend's error translation shares: the one line of a library's message it shows.

Each backend keeps its own translation (which library error becomes which
:class:`~mltidy.errors.StoreError`); they all show the first line of the library's message,
without secrets.
"""

from __future__ import annotations

from mltidy.redact import redact
from mltidy.text import safe


def first_line(exc: BaseException, text: str | None = None) -> str:
    """The first line of ``text`` (default: the exception's message), redacted and safe to show
    (:func:`mltidy.text.safe`); the exception's type name when there is no message."""
    stripped = (str(exc) if text is None else text).strip()
    return safe(redact(stripped.splitlines()[0] if stripped else type(exc).__name__))


def mentions(text: str, markers: tuple[str, ...]) -> bool:
    """Whether ``text`` contains one of ``markers`` (lower case), ignoring case."""
    lowered = text.lower()
    return any(marker in lowered for marker in markers)


__all__ = ["first_line", "mentions"]
