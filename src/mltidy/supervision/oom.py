"""OOM evidence: was a SIGKILL the kernel's OOM killer? The kernel log and the cgroups' memory
events say so where they can be read; otherwise the answer says it could not be confirmed."""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mltidy.supervision.process import ExitFacts

KMSG = Path("/dev/kmsg")
CGROUP_ROOT = Path("/sys/fs/cgroup")
_KMSG_KILLED = re.compile(r"Killed process (\d+) \(([^)]*)\)")
_KMSG_OOM = re.compile(r"oom-kill:.*?\bpid=(\d+)")


def cgroup_files(pid: int) -> list[Path]:
    """The memory-event files of a process's cgroups (v2 ``memory.events``, v1
    ``memory.oom_control``) that exist and can be read."""
    try:
        lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    except OSError:
        return []
    found: list[Path] = []
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":
            for base in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
                found.append(base / rel / "memory.events")
        elif "memory" in controllers.split(","):
            found.append(CGROUP_ROOT / "memory" / rel / "memory.oom_control")
    return [p for p in found if oom_kills(p) is not None]


def oom_kills(path: Path) -> int | None:
    """The ``oom_kill`` counter of a memory-events file, or ``None`` when unreadable."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == "oom_kill":
                return int(value)
    except (OSError, ValueError):
        return None
    return None


def kernel_log_kills(pids: set[int]) -> dict[int, str]:
    """``pid -> name`` of the given processes the kernel log says the OOM killer killed.

    Reads ``/dev/kmsg`` without blocking (root, or ``kernel.dmesg_restrict=0``); ``{}`` when it
    cannot be read.
    """
    killed: dict[int, str] = {}
    try:
        fd = os.open(KMSG, os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return killed
    try:
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            try:
                chunk = os.read(fd, 8192)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno == 32:  # EPIPE: the ring buffer moved on under us; keep reading
                    continue
                break
            if not chunk:
                break
            text = chunk.decode("utf-8", "replace")
            for match in _KMSG_KILLED.finditer(text):
                if int(match.group(1)) in pids:
                    killed[int(match.group(1))] = match.group(2)
            for match in _KMSG_OOM.finditer(text):
                if int(match.group(1)) in pids:
                    killed.setdefault(int(match.group(1)), "?")
    finally:
        os.close(fd)
    return killed


def with_oom(
    facts: ExitFacts, processes: Mapping[int, float | None], cgroups: Mapping[str, int | None]
) -> ExitFacts:
    pids = {facts.pid, *processes}
    killed = kernel_log_kills(pids)
    if killed:
        which = ", ".join(f"{pid} ({name})" for pid, name in sorted(killed.items()))
        return _replace_oom(
            facts, f"the kernel log says the OOM killer killed process {which}", True
        )
    grew: list[str] = []
    readable = False
    for path, before in cgroups.items():
        after = oom_kills(Path(path))
        if after is None or before is None:
            continue
        readable = True
        if after > before:
            grew.append(f"{Path(path).parent} ({after - before} OOM kill(s) while the job ran)")
    if grew:
        return _replace_oom(facts, "the cgroup's memory events count " + "; ".join(grew), True)
    if readable:
        return _replace_oom(
            facts,
            "not the OOM killer: the cgroup's memory events count no OOM kill while the job "
            "ran, so something else sent SIGKILL (a scheduler, a person, a timeout)",
            False,
        )
    return _replace_oom(
        facts,
        "likely the OOM killer (SIGKILL / exit 137), but neither the kernel log nor the "
        "cgroup's memory events could be read to confirm it",
        None,
    )


def _replace_oom(facts: ExitFacts, text: str, killed: bool | None) -> ExitFacts:
    return dataclasses.replace(facts, oom=text, oom_killed=killed)


__all__ = ["cgroup_files", "kernel_log_kills", "oom_kills", "with_oom"]
