"""Local facts for the judge: this host's name, its boot id, its pid namespace and process table.

The judge never looks these up itself; it is handed an object with this shape, so tests can give
it real facts (:class:`LocalProbe`) or constructed ones (:class:`StaticFacts`).

A pid means something only inside its pid namespace: containers on one kernel share the host
name and the boot id (host networking, ``hostNetwork`` pods), but each has its own pids. So a
process is looked up in the namespace the record's provenance names: in mltidy's own namespace
directly, in another one through ``/proc/<pid>/status`` (``NSpid``: the pid in every namespace
the process belongs to), which works for namespaces nested below mltidy's. Namespaces mltidy
cannot see into (its parent's, a sibling container's) are reported as invisible, never as empty.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from mltidy.provenance.facts import (
    INITIAL_PID_NS,
    host_name,
    read_boot_id,
    read_pid_namespace,
)

PROC = Path("/proc")


@dataclass(frozen=True)
class ProcessInfo:
    """A process as the process table shows it now."""

    pid: int
    started_at: float | None
    command: str
    zombie: bool = False


@dataclass(frozen=True)
class NamespaceLookup:
    """A pid looked up in another pid namespace.

    Attributes:
        visible: whether mltidy can see every process of that namespace (it is nested in
            mltidy's own and /proc could be read); without it, nothing may be concluded.
        exists: whether the namespace still has any process (a container that ended has none).
        process: the process with that pid inside the namespace, if any.
    """

    visible: bool
    exists: bool = False
    process: ProcessInfo | None = None


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

    @property
    def pid_ns(self) -> int | None:
        """The inode of mltidy's own pid namespace, where the OS has one."""
        ...

    def process(self, pid: int) -> ProcessInfo | None:
        """The live process with this pid in mltidy's own pid namespace, or ``None``."""
        ...

    def process_in_namespace(self, namespace: int, pid: int) -> NamespaceLookup:
        """The process with this pid inside another pid namespace."""
        ...


class LocalProbe:
    """The real facts of this machine, read with psutil and /proc (cached per scan)."""

    def __init__(self) -> None:
        self._host = host_name()
        self._boot_id = read_boot_id()
        self._pid_ns = read_pid_namespace()
        self._cache: dict[int, ProcessInfo | None] = {}
        self._namespaces: dict[int, dict[int, int]] | None = None
        self._complete = False

    @property
    def host(self) -> str:
        return self._host

    @property
    def boot_id(self) -> str | None:
        return self._boot_id

    @property
    def pid_ns(self) -> int | None:
        return self._pid_ns

    def process(self, pid: int) -> ProcessInfo | None:
        if pid not in self._cache:
            self._cache[pid] = _lookup(pid)
        return self._cache[pid]

    def process_in_namespace(self, namespace: int, pid: int) -> NamespaceLookup:
        if self._namespaces is None:
            self._namespaces, self._complete = _namespace_table()
        members = self._namespaces.get(namespace)
        if members is None:
            # Not one of ours: a parent's or a sibling's namespace, or one that ended. Only a
            # complete view from the initial namespace can tell that it ended.
            ended = self._complete and self._pid_ns == INITIAL_PID_NS
            return NamespaceLookup(visible=ended, exists=False)
        found = members.get(pid)
        return NamespaceLookup(
            visible=self._complete,
            exists=True,
            process=None if found is None else self.process(found),
        )


def _namespace_table() -> tuple[dict[int, dict[int, int]], bool]:
    """``namespace inode -> {pid inside it: pid here}`` for every process mltidy can see, and
    whether it could read every one of them."""
    table: dict[int, dict[int, int]] = {}
    complete = True
    try:
        entries = [e.name for e in PROC.iterdir() if e.name.isdigit()]
    except OSError:
        return table, False
    for entry in entries:
        try:
            inode = (PROC / entry / "ns" / "pid").stat().st_ino
            status = (PROC / entry / "status").read_text()
        except FileNotFoundError:
            continue  # it ended while we looked
        except OSError:
            # Our own namespace's init (pid 1) may be closed even to root; it can never belong to
            # a namespace below ours, so it does not make the view incomplete.
            complete = complete and entry == "1"
            continue
        for line in status.splitlines():
            if line.startswith("NSpid:"):
                pids = line.split()[1:]
                if pids:
                    table.setdefault(inode, {})[int(pids[-1])] = int(entry)
                break
    return table, complete


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
    pid_ns: int | None = None
    namespaces: Mapping[int, Mapping[int, ProcessInfo]] = field(default_factory=dict)

    def process(self, pid: int) -> ProcessInfo | None:
        return self.processes.get(pid)

    def process_in_namespace(self, namespace: int, pid: int) -> NamespaceLookup:
        if namespace not in self.namespaces:
            return NamespaceLookup(visible=False)
        return NamespaceLookup(True, True, self.namespaces[namespace].get(pid))


__all__ = ["LocalFacts", "LocalProbe", "NamespaceLookup", "ProcessInfo", "StaticFacts"]
