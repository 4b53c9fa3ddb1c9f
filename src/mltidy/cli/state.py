"""Process-wide CLI settings set by the root callback (``--debug``)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CliState:
    """Mutable on purpose: the root callback fills it before any command runs."""

    debug: bool = False


STATE = CliState()
