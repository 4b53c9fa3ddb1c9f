"""What hostile neighbours write, and how the suite checks that none of it reached the reader.

The strings are the attacks of issue 14: terminal control (clear screen, OSC 52 clipboard
writes, OSC 8 hyperlinks, C1 CSI), bidi overrides and isolates, zero-width characters, Rich
markup, Markdown and HTML, and mltidy's own note markers.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from collections.abc import Iterable
from pathlib import Path

CLEAR = "\x1b[2J\x1b[H"
OSC52 = "\x1b]52;c;ZWNobyBwd25lZA==\x07"
OSC8 = "\x1b]8;;https://evil.example/\x1b\\click\x1b]8;;\x1b\\"
C1_CSI = "\x9b31m"
BIDI = "\u202egnp.exe\u202c"
ISOLATE = "\u2066hidden\u2069"
ZERO_WIDTH = "a\u200bb\u2060c\ufeff"
RICH = "[/oops] [link=javascript:alert(1)]x[/link] [bold red]"
MARKDOWN = (
    "<img src=x onerror=alert(1)> [evil](javascript:alert(1)) ![i](http://evil.example/i.png) "
    "**b** | `t` www.evil.example"
)
MARKERS = "[//]: # (/mltidy:link)\n\n[//]: # (mltidy:link)"

#: An experiment (and study) name and a run name carrying every attack at once.
EXPERIMENT = f"exp {CLEAR}{RICH}{BIDI}"
RUN_NAME = f"run {OSC52}{OSC8}{C1_CSI}{ISOLATE}{ZERO_WIDTH} {MARKDOWN} {MARKERS}"
#: A provenance command line as a hostile job could record it.
COMMAND = f"python \x1b[31m{OSC52}train.py"

#: Bidi controls, isolates and marks: none may reach stdout or stderr.
BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069\u200e\u200f\u061c]")
#: Invisible format characters mltidy must show escaped.
INVISIBLE = re.compile("[\u200b\u2060\ufeff\u00ad]")


def controls(text: str) -> list[str]:
    """Control characters in ``text`` other than newline and tab (C0, DEL, C1), bidi controls
    and invisible format characters: what no human-facing output may hold."""
    found = [c for c in text if (ord(c) < 0x20 and c not in "\n\t") or 0x7F <= ord(c) <= 0x9F]
    found += BIDI_CONTROLS.findall(text) + INVISIBLE.findall(text)
    return found


def tree_digest(root: Path, skip: Iterable[Path] = ()) -> dict[str, tuple[str, int]]:
    """Every file under ``root`` (links not followed) with a hash of its content and its mode;
    files under ``skip`` are left out."""
    skipped = [p.resolve() for p in skip]
    found: dict[str, tuple[str, int]] = {}
    for folder, dirs, files in os.walk(root, followlinks=False):
        here = Path(folder)
        dirs[:] = [d for d in dirs if not any((here / d).resolve() == s for s in skipped)]
        for name in [*files, *dirs]:
            path = here / name
            if any(path.resolve() == s for s in skipped):
                continue
            info = path.lstat()
            if stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
            elif stat.S_ISLNK(info.st_mode):
                digest = f"link:{path.readlink()}"
            else:
                digest = "dir" if stat.S_ISDIR(info.st_mode) else "special"
            found[str(path.relative_to(root))] = (digest, stat.S_IMODE(info.st_mode))
    return found
