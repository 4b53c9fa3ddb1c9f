"""text.py: someone else's text made safe to show, and literal in Markdown."""

from __future__ import annotations

import re

import pytest

from mltidy.text import http_url, md_code, md_escape, md_link, safe, safe_lines, shell_word


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("plain name", "plain name"),
        ("clear\x1b[2J", "clear\\x1b[2J"),
        ("clip\x1b]52;c;eA==\x07", "clip\\x1b]52;c;eA==\\x07"),
        ("c1\x9b31m", "c1\\x9b31m"),
        ("del\x7f", "del\\x7f"),
        ("two\nlines\ttab\r", "two\\nlines\\ttab\\r"),
        ("nul\x00", "nul\\x00"),
        ("\u202egnp.exe", "\\u202egnp.exe"),
        ("iso\u2066late\u2069", "iso\\u2066late\\u2069"),
        ("zero\u200bwidth\ufeff", "zero\\u200bwidth\\ufeff"),
        ("soft\u00adhyphen", "soft\\xadhyphen"),
        ("line\u2028sep", "line\\u2028sep"),
        ("tag\U000e0041", "tag\\U000e0041"),
        ("bytes\udcff", "bytes\\udcff"),
        ("emoji 👩\u200d💻", "emoji 👩\u200d💻"),  # a joiner between two visible characters
        ("\u200dleading", "\\u200dleading"),
        ("trailing \u200d", "trailing \\u200d"),
        ("\u0645\u0644\u0641\u200c\u0646\u0645", "\u0645\u0644\u0641\u200c\u0646\u0645"),
        ("日本語 ü é", "日本語 ü é"),
        ("[/oops] [link=javascript:x]", "[/oops] [link=javascript:x]"),  # markup is text
    ],
)
def test_safe_shows_controls_as_escapes(raw: str, shown: str) -> None:
    assert safe(raw) == shown
    assert safe(safe(raw)) == shown  # idempotent: safe text stays as it is


def test_safe_cuts_long_values_and_says_so() -> None:
    text = safe("x" * 5000, limit=100)
    assert text.startswith("x" * 100) and text.endswith("(4900 more characters)")


def test_safe_lines_keeps_line_breaks() -> None:
    assert safe_lines("a\x1b\nb\u202e") == "a\\x1b\nb\\u202e"


@pytest.mark.parametrize(
    "raw",
    ["a`b", "``", "`lead", "trail`", "a | b", "<img src=x>", "[x](javascript:y)", " "],
)
def test_md_code_is_one_literal_code_span(raw: str) -> None:
    span = md_code(raw)
    fence = span[: len(span) - len(span.lstrip("`"))]
    longest = max((len(run) for run in re.findall(r"`+", raw)), default=0)
    assert len(fence) == longest + 1 and span.endswith(fence)
    assert span[len(fence) : -len(fence)].strip() == raw.strip()
    assert md_code("a | b", table=True) == "`a \\| b`"


def test_md_escape_escapes_all_punctuation() -> None:
    assert md_escape("*b* [l](u) <i> www.x.org a@b.c") == (
        "\\*b\\* \\[l\\]\\(u\\) \\<i\\> www\\.x\\.org a\\@b\\.c"
    )


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("http://127.0.0.1:5000/#/experiments/1/runs/abc", True),
        ("https://ui.example/x?numbers=3", True),
        ("javascript:alert(1)", False),
        ("data:text/html,x", False),
        ("http://ui.example/a) [evil](javascript:x", False),
        ("http://ui.example/a b", False),
        ("http://ui.example/\x1b", False),
        ("//ui.example/x", False),
    ],
)
def test_only_http_links(url: str, ok: bool) -> None:
    assert (http_url(url) is not None) is ok
    assert (md_link("label", url) == f"[label]({url})") is ok


def test_shell_word_quotes() -> None:
    assert shell_word("abc123") == "abc123"
    assert shell_word("$(rm -rf ~)") == "'$(rm -rf ~)'"
