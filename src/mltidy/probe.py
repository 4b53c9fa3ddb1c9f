"""Local facts for the judge: this host's name, its boot id, and its process table.

The judge never looks these up itself; it is handed an object with this shape, so tests can give
it real facts (:class:`LocalProbe`) or constructed ones (:class:`StaticFacts`).
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol

from mltidy.provenance.facts import read_boot_id


@dataclass(frozen=True)
class ProcessInfo:
    """A process as the process table shows it now."""

    pid: int
    started_at: float | None
    command: str
    zombie: bool = False


class LocalFacts(Protocol):
    """What the judge may know about the machine it runs on."""

    @property
    def host(self) -> str:
        """This machine's host name."""
        ...

    @property
    def boot_id(self) -> str | None:
        """This boot's id, where the OS has one."""
        ...

    def process(self, pid: int) -> ProcessInfo | None:
        """The live process with this pid, or ``None``."""
        ...


class LocalProbe:
    """The real facts of this machine, read with psutil (process lookups are cached per scan)."""

    def __init__(self) -> None:
        self._host = socket.gethostname()
        self._boot_id = read_boot_id()
        self._cache: dict[int, ProcessInfo | None] = {}

    @property
    def host(self) -> str:
        return self._host

    @property
    def boot_id(self) -> str | None:
        return self._boot_id

    def process(self, pid: int) -> ProcessInfo | None:
        if pid not in self._cache:
            self._cache[pid] = _lookup(pid)
        return self._cache[pid]


def _lookup(pid: int) -> ProcessInfo | None:
    import psutil

    if pid <= 0:
        return None
    try:
        proc = psutil.Process(pid)
        with proc.oneshot():
            started = float(proc.create_time())
            zombie = proc.status() == psutil.STATUS_ZOMBIE
            try:
                command = " ".join(proc.cmdline()[:3]) or proc.name()
            except (psutil.AccessDenied, psutil.ZombieProcess):
                command = proc.name()
    except psutil.NoSuchProcess:
        return None
    except psutil.AccessDenied:
        # It exists, but belongs to someone we may not inspect.
        return ProcessInfo(pid, None, "?")
    return ProcessInfo(pid, started, command, zombie)


@dataclass(frozen=True)
class StaticFacts:
    """Facts given by hand (tests, and judging records of another machine)."""

    host: str
    boot_id: str | None = None
    processes: Mapping[int, ProcessInfo] = field(default_factory=dict)

    def process(self, pid: int) -> ProcessInfo | None:
        return self.processes.get(pid)
