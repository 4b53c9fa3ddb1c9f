"""optuna-dashboard's trial notes, and mltidy's own section inside notes and descriptions.

optuna-dashboard keeps a trial's Markdown note in its *study's* system attributes (so notes work
on finished trials): ``dashboard:{trial_id}:note_ver`` holds a version number and
``dashboard:{trial_id}:note_str:{i}`` the text in chunks of 2045 characters. mltidy writes the
same keys, so the dashboard shows and edits the note as its own (``tests/test_link.py`` checks
the format against optuna-dashboard's ``get_note``).

mltidy owns only the part of a note (or of an MLflow run description) between its markers and
keeps whatever the user wrote around it.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from mltidy import names

CHUNK = 2045
# Markdown link reference definitions render as nothing (HTML comments are shown as text by
# optuna-dashboard), so they mark mltidy's section invisibly. They need blank lines around them.
# mltidy has one section per job: "link" (the other UI's page) and "close" (why it was closed).
BEGIN = "[//]: # (mltidy:link)"
END = "[//]: # (/mltidy:link)"


def _markers(section: str) -> tuple[str, str]:
    return f"[//]: # (mltidy:{section})", f"[//]: # (/mltidy:{section})"


def _section_pattern(begin: str, end: str) -> re.Pattern[str]:
    """mltidy's section: the markers on lines of their own. Text mltidy writes between them
    holds names only inside code spans on longer lines, so a name that contains a marker can
    never make a marker line, and a second ``link`` finds the same section and changes nothing."""
    return re.compile(
        rf"^{re.escape(begin)}[ \t\r]*$.*?^{re.escape(end)}[ \t\r]*$", re.DOTALL | re.MULTILINE
    )


def read_note(study_attrs: Mapping[str, Any], trial_id: int | str) -> tuple[int, str, int]:
    """A trial's note from its study's system attributes: (version, text, chunk count)."""
    version = names.dashboard_note_version(trial_id)
    if version not in study_attrs:
        return 0, "", 0
    prefix = names.dashboard_note_chunk(trial_id)
    chunks = {k: v for k, v in study_attrs.items() if k.startswith(prefix)}
    text = "".join(str(chunks.get(f"{prefix}{i}", "")) for i in range(len(chunks)))
    return int(study_attrs[version]), text, len(chunks)


def note_attrs(trial_id: int | str, version: int, text: str, old_chunks: int) -> dict[str, Any]:
    """The study system attributes that store ``text`` as version ``version``.

    Chunks beyond the new text's are blanked, as optuna-dashboard does.
    """
    prefix = names.dashboard_note_chunk(trial_id)
    count = math.ceil(len(text) / CHUNK)
    attrs: dict[str, Any] = {names.dashboard_note_version(trial_id): version}
    for i in range(count):
        attrs[f"{prefix}{i}"] = text[i * CHUNK : (i + 1) * CHUNK]
    for i in range(count, old_chunks):
        attrs[f"{prefix}{i}"] = ""
    return attrs


def with_section(text: str, body: str, section: str = "link") -> str:
    """``text`` with mltidy's section ``section`` set to ``body``; everything else (the user's
    text, mltidy's other sections) is kept as it was."""
    begin, end = _markers(section)
    block = f"{begin}\n\n{body}\n\n{end}"
    pattern = _section_pattern(begin, end)
    if pattern.search(text):
        return pattern.sub(lambda _: block, text, count=1)
    if not text.strip():
        return block
    return text.rstrip("\n") + "\n\n" + block


_MARKDOWN = re.compile(r"([\\`*_\[\]<>#|~])")


def markdown_text(text: str) -> str:
    """Plain text (a reason, a command line) shown as itself in Markdown: its special
    characters escaped, its lines joined."""
    return _MARKDOWN.sub(r"\\\1", " ".join(text.split()))
