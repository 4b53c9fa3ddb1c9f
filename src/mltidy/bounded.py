"""Reading the start of a file that may be anything: bounded in size, never blocking.

Discovery looks at every file of a folder to recognise stores by content. A candidate may be
huge (a 2 GB ``meta.yaml``), a FIFO that blocks on open, a device, or a file swapped for one of
those between two calls; none of that may cost more than a few kilobytes and a moment.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

#: How much of a candidate file discovery reads, at most.
HEAD_BYTES = 4096
_FLAGS = (
    os.O_RDONLY
    | getattr(os, "O_NONBLOCK", 0)
    | getattr(os, "O_NOCTTY", 0)
    | getattr(os, "O_CLOEXEC", 0)
)


def read_head(path: Path, limit: int = HEAD_BYTES) -> bytes | None:
    """The first ``limit`` bytes of ``path`` if it is a regular file, else ``None`` (missing,
    unreadable, a folder, a FIFO, a device). Checks the file it opened, not the name."""
    try:
        fd = os.open(path, _FLAGS)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        return os.read(fd, limit)
    except OSError:
        return None
    finally:
        os.close(fd)


__all__ = ["HEAD_BYTES", "read_head"]
