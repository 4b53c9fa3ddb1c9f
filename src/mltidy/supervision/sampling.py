"""What the supervisor notes while the job runs: its descendants (pid and start time, so that a
worker's records are attributed even after it exits) and their cgroups (for OOM evidence)."""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass, field

from mltidy.supervision.oom import cgroup_files, oom_kills

SAMPLE_EVERY_S = 0.5


@dataclass
class Seen:
    """What the sampler saw while the child ran (shared with its thread under a lock)."""

    processes: dict[int, float | None] = field(default_factory=dict)
    cgroups: dict[str, int | None] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def sample(pid: int, seen: Seen, stop: threading.Event) -> None:
    """Note the child's descendants and cgroups until it ends (best effort)."""
    import psutil

    try:
        root = psutil.Process(pid)
        family = [root]
    except psutil.Error:
        return
    while True:
        with contextlib.suppress(psutil.Error):
            family = [root, *root.children(recursive=True)]
        for proc in family:
            with contextlib.suppress(psutil.Error):
                with seen.lock:
                    if proc.pid not in seen.processes:
                        seen.processes[proc.pid] = float(proc.create_time())
                for path in cgroup_files(proc.pid):
                    with seen.lock:
                        if str(path) not in seen.cgroups:
                            seen.cgroups[str(path)] = oom_kills(path)
        if stop.wait(SAMPLE_EVERY_S):
            return


__all__ = ["Seen", "sample"]
