"""mltidy's Rich consoles, and Rich's closed-pipe handling made mltidy's.

Importing Rich costs about as much CPU as the rest of the CLI's imports, and a report in JSON
needs none of it: this module is imported only when something is shown through Rich (a table,
a summary, help). Whatever imports Rich for mltidy imports it through here
(:func:`mltidy.cli.render.stdout_console`, :func:`mltidy.cli.core.load_help_renderer`), so the
closed pipe is handled the same way whichever console meets it.
"""

from __future__ import annotations

from rich.console import Console, HighlighterType, JustifyMethod, OverflowMethod
from rich.style import Style
from rich.text import Text

from mltidy.text import safe_lines


class SafeConsole(Console):
    """A console that shows every string as text: no markup or emoji codes unless a call asks
    for markup (with escaped values), and no control or bidi characters whatever the call
    (:func:`mltidy.text.safe_lines`), as a backstop behind the :func:`cell` of each value."""

    def render_str(
        self,
        text: str,
        *,
        style: str | Style = "",
        justify: JustifyMethod | None = None,
        overflow: OverflowMethod | None = None,
        emoji: bool | None = None,
        markup: bool | None = None,
        highlight: bool | None = None,
        highlighter: HighlighterType | None = None,
    ) -> Text:
        return super().render_str(
            safe_lines(text, limit=None),
            style=style,
            justify=justify,
            overflow=overflow,
            emoji=emoji,
            markup=markup,
            highlight=highlight,
            highlighter=highlighter,
        )


def _on_broken_pipe(self: Console) -> None:
    self.quiet = True
    raise BrokenPipeError


# Rich ends the process with status 1 when stdout is a closed pipe (``Console.on_broken_pipe``,
# meant to be overridden); raised as the error it is, the closed pipe ends with ``PIPE_CLOSED``
# like any other write to it, help and tables included. Every console, Typer's too.
Console.on_broken_pipe = _on_broken_pipe  # type: ignore[method-assign]


__all__ = ["SafeConsole"]
