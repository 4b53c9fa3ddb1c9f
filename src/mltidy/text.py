"""Text that others wrote, made safe to show: everything from a store, a server, a file or a clock
is data, never markup and never a terminal control.

mltidy prints names, tags, study names and server error bodies that other people and programs
wrote. Shown raw, such text can clear the screen or write the clipboard (ESC, CSI and OSC
sequences, OSC 52), plant a hyperlink (OSC 8, Rich's ``[link=...]`` markup), reorder what a
person reads (bidi overrides and isolates), hide itself (zero-width and other invisible format
characters), or break a Markdown table or note. Every human-facing rendering passes such text
through one of these functions; JSON output keeps the exact value.

* :func:`safe`: one line for a terminal, a log or a notification. Control and invisible format
  characters become visible escapes (``\\x1b``, ``\\u202e``), so a person sees that something was
  there. Use the result as plain text (``rich.text.Text``, ``markup=False``), never as markup.
* :func:`md_escape` and :func:`md_code`: the same text as literal Markdown (every punctuation
  character escaped, so no emphasis, link, HTML or autolink can form; or a code span).
* :func:`md_link`: a Markdown link, only for the http(s) URLs mltidy built.
* :func:`shell_word`: a value inside a command line mltidy suggests.

Pure: no I/O, no Rich import.
"""

from __future__ import annotations

import re
import shlex
import unicodedata
from urllib.parse import quote, urlsplit

#: Bidirectional embeddings, overrides and isolates, and the marks that steer them: they make a
#: terminal or a web page show characters in another order than they are stored (CVE-2021-42574).
BIDI = frozenset(
    {chr(c) for c in range(0x202A, 0x202F)}
    | {chr(c) for c in range(0x2066, 0x206A)}
    | {"\u200e", "\u200f", "\u061c"}
)
#: Zero-width joiners have honest uses (emoji sequences, Indic and Persian scripts) between two
#: visible characters; anywhere else they only hide something.
JOINERS = frozenset({"\u200c", "\u200d"})
_SHORT = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}
#: How much of one value a human rendering shows at most (a name of a megabyte is an attack on
#: the reader, not information).
DEFAULT_LIMIT = 1000
#: The characters CommonMark lets a backslash escape: all of ASCII punctuation.
_MD_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")


def _dangerous(char: str) -> bool:
    """Whether a character must not reach a terminal or a page as itself."""
    code = ord(char)
    if code < 0x20 or 0x7F <= code <= 0x9F:
        return True  # C0 controls (ESC among them), DEL, C1 controls (CSI, OSC, ST as one byte)
    category = unicodedata.category(char)
    # Cf: invisible format characters (bidi controls, zero-width space, word joiner, BOM, tag
    # characters); Cs: lone surrogates (bytes that were not UTF-8); Zl/Zp: line and paragraph
    # separators, which some terminals and editors treat as newlines.
    return category in ("Cf", "Cs", "Zl", "Zp") or 0x2060 <= code <= 0x206F


def _escape(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _visible(char: str) -> bool:
    return not char.isspace() and not _dangerous(char)


def is_utf8(text: str) -> bool:
    """Whether ``text`` can be written as UTF-8 (Python keeps undecodable bytes of arguments
    and environment variables as lone surrogates, which cannot)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def safe(value: object, limit: int | None = DEFAULT_LIMIT) -> str:
    """``value`` as one line of plain text that cannot control a terminal or hide itself.

    Control characters (C0 including newline and ESC, DEL, C1), bidi controls, lone surrogates,
    line separators and invisible format characters become visible escapes (``\\x1b``,
    ``\\u202e``); a zero-width joiner stays only between two visible characters. Text longer than
    ``limit`` characters is cut, and says so. The result is plain text: render it with
    ``rich.text.Text`` or ``markup=False``, never as Rich markup.
    """
    text = value if isinstance(value, str) else str(value)
    if limit is not None and len(text) > limit:
        text = text[:limit] + f"... ({len(text) - limit} more characters)"
    if text.isprintable() and not (JOINERS & set(text)):
        return text  # the common case: nothing to do
    out: list[str] = []
    last = len(text) - 1
    for i, char in enumerate(text):
        if char in JOINERS:
            keep = 0 < i < last and _visible(text[i - 1]) and _visible(text[i + 1])
            out.append(char if keep else _escape(char))
        elif _dangerous(char):
            out.append(_escape(char))
        else:
            out.append(char)
    return "".join(out)


def safe_lines(value: object, limit: int | None = None) -> str:
    """Like :func:`safe`, but keeps line breaks (``\\n``): for multi-line text mltidy shows as
    such (a notification body assembled from safe parts, a server's multi-line message)."""
    text = value if isinstance(value, str) else str(value)
    return "\n".join(safe(line, limit) for line in text.split("\n"))


def md_escape(value: object, limit: int | None = DEFAULT_LIMIT) -> str:
    """``value`` as literal Markdown text: :func:`safe`, then every ASCII punctuation character
    backslash-escaped, so no emphasis, link, image, HTML tag, table cell break or autolink
    (``www.``, ``https:``, ``@``) can form, in CommonMark, GFM and showdown alike."""
    return _MD_PUNCTUATION.sub(r"\\\1", safe(value, limit))


def md_code(value: object, *, table: bool = False, limit: int | None = 200) -> str:
    """``value`` as a Markdown code span: shown literally by every renderer (no markup, no
    links, no HTML inside). ``table=True`` escapes ``|``, which GFM tables split cells at even
    inside code spans."""
    text = safe(value, limit)
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") or not text.strip() else ""
    span = f"{fence}{pad}{text}{pad}{fence}"
    return span.replace("|", "\\|") if table else span


def http_url(url: str) -> str | None:
    """``url`` if it is an absolute http(s) URL that is safe inside a Markdown link target (no
    spaces, quotes, brackets, backslashes or controls), else ``None``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return None
    if any(c.isspace() or c in "<>()\"'`\\" or _dangerous(c) for c in url):
        return None
    return url


def md_link(label: str, url: str | None) -> str:
    """A Markdown link with an already-escaped ``label``, only to an http(s) ``url`` that
    :func:`http_url` accepts; otherwise the label alone (no link at all beats a bad one)."""
    target = http_url(url) if url else None
    return f"[{label}]({target})" if target else label


def url_part(value: object) -> str:
    """One path segment or query value of a URL mltidy builds from a store's ids: everything but
    unreserved characters percent-encoded, so an id cannot leave its segment."""
    return quote(str(value), safe="")


def shell_word(value: object) -> str:
    """``value`` as one word of a shell command mltidy suggests (quoted when it needs it)."""
    return shlex.quote(str(value))


__all__ = [
    "BIDI",
    "DEFAULT_LIMIT",
    "JOINERS",
    "http_url",
    "is_utf8",
    "md_code",
    "md_escape",
    "md_link",
    "safe",
    "safe_lines",
    "shell_word",
    "url_part",
]
