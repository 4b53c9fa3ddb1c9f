"""The command classes every mltidy command is built from (Typer's, with what mltidy promises).

* **Commands load lazily.** The root group knows each command by name and one line of help;
  a command's module (and whatever it imports) is imported only when that command runs or shows
  its own help, so ``mltidy --help`` imports no command module at all.
* **Help is prose.** Docstrings are wrapped at 96 columns in the source; their paragraphs are
  reflowed to the terminal (Typer keeps single line breaks in its ``rich`` markup mode, which
  broke sentences mid-line), and flags show no ``<bool>`` type.
* **Global options work anywhere.** ``--debug`` is accepted before the command
  (``mltidy --debug scan``) and after it (``mltidy scan --debug``).
* **Help loads only what it shows.** Typer's help renderer (``typer.rich_utils``) imports
  ``rich.markdown`` (markdown-it, pygments) and ``rich.traceback`` (attrs) at its top, for its
  Markdown markup mode and its pretty exceptions, neither of which mltidy uses (74 ms of
  ``mltidy --help`` under ``python -X importtime``). :func:`load_help_renderer` imports it
  with stand-ins for those two classes that import the real ones only when used
  (bench/help_startup.py, docs/performance.md "Start-up floor").
* **JSON mode is JSON, usage errors included.** With ``-f json``/``-f jsonl`` (or
  ``MLTIDY_FORMAT``), Click's own usage errors (an unknown option, a bad value, no such command)
  are also written to stdout as ``{"error": {"code", "message", "hint"}}`` (docs/json.md).
"""

from __future__ import annotations

import difflib
import importlib
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any, ClassVar

import typer
from typer.core import TyperCommand, TyperGroup
from typer.main import get_command_from_info
from typer.models import CommandInfo

try:  # Typer vendors its own Click
    from typer._click import Command, Context, HelpFormatter, Parameter
    from typer._click.exceptions import ClickException, UsageError
except ImportError:  # pragma: no cover - older Typer runs on Click itself
    from click import Command, Context, HelpFormatter, Parameter  # type: ignore[assignment]
    from click.exceptions import ClickException, UsageError  # type: ignore[assignment]

from mltidy.cli.coercion import lighten
from mltidy.cli.errors import PIPE_CLOSED, stdout_closed
from mltidy.cli.state import STATE

#: The formats in which stdout must hold JSON only (``OutputFormat.is_machine``).
MACHINE_FORMATS = frozenset({"json", "jsonl"})
FORMAT_ENV = "MLTIDY_FORMAT"
_LIST_ITEM = re.compile(r"\s*(?:[-*+]|\d+[.)])\s")


@dataclass(frozen=True)
class Lazy:
    """A command the root group imports only when it runs.

    Attributes:
        module: the module that holds its function.
        function: the function's name.
        summary: one line for the root's command list (a test checks it against the
            function's docstring).
        context_settings: Click context settings of the command.
    """

    module: str
    function: str
    summary: str
    context_settings: dict[str, Any] | None = None

    def callback(self) -> Callable[..., Any]:
        """The command's function (imports its module)."""
        function: Callable[..., Any] = getattr(importlib.import_module(self.module), self.function)
        return function


class _Deferred(type):
    """A stand-in for a class of a module imported only when the class is used (called, or an
    attribute of it read)."""

    _module: str

    def _real(cls) -> Any:
        return getattr(importlib.import_module(cls._module), cls.__name__)

    def __call__(cls, *args: Any, **kwargs: Any) -> Any:
        return cls._real()(*args, **kwargs)

    def __getattr__(cls, name: str) -> Any:
        if name.startswith("__"):  # typing's probes (``__typing_subst__``...): not the class's
            raise AttributeError(name)
        return getattr(cls._real(), name)


#: What ``typer.rich_utils`` imports and mltidy's help never uses: the ``markdown`` markup mode's
#: renderer and the pretty exceptions' traceback (``pretty_exceptions_enable=False``).
_UNUSED_BY_HELP = {"rich.markdown": "Markdown", "rich.traceback": "Traceback"}


def load_help_renderer() -> None:
    """Import Typer's help renderer without its unused heavy imports (:data:`_UNUSED_BY_HELP`).

    While it is imported, those modules are stand-in modules holding a :class:`_Deferred`
    class; they leave ``sys.modules`` right after, so that anything importing them later gets
    the real module. A Typer that imports more from them gets them whole (the import is
    repeated without stand-ins).
    """
    importlib.import_module("mltidy.cli.console")  # Rich's closed-pipe handling, first
    if "typer.rich_utils" in sys.modules:
        return
    placed: dict[str, ModuleType] = {}
    for module, name in _UNUSED_BY_HELP.items():
        if module not in sys.modules:
            stand_in = ModuleType(module)
            setattr(stand_in, name, _Deferred(name, (), {"_module": module}))
            placed[module] = sys.modules[module] = stand_in
    try:
        importlib.import_module("typer.rich_utils")
    except ImportError:
        _remove(placed)
        placed = {}
        importlib.import_module("typer.rich_utils")
    finally:
        _remove(placed)


def _remove(placed: dict[str, ModuleType]) -> None:
    for module, stand_in in placed.items():
        if sys.modules.get(module) is stand_in:
            del sys.modules[module]


def reflow(text: str | None) -> str | None:
    """Help text with each paragraph on one line, so the terminal wraps it as prose.

    Paragraphs that are lists (lines starting with ``-``, ``*`` or ``1.``) or start with Click's
    ``\\b`` (no rewrap) keep their line breaks.
    """
    if not text:
        return text
    paragraphs = []
    for paragraph in text.split("\n\n"):
        lines = paragraph.splitlines()
        if paragraph.startswith("\b") or any(_LIST_ITEM.match(line) for line in lines):
            paragraphs.append(paragraph)
        else:
            paragraphs.append(" ".join(line.strip() for line in lines if line.strip()))
    return "\n\n".join(paragraphs)


def requests_json(args: Sequence[str], env: dict[str, str] | None = None) -> bool:
    """Whether a command line asks for JSON on stdout (``-f json``, ``--format=jsonl``, ...)."""
    chosen = (env if env is not None else os.environ).get(FORMAT_ENV, "")
    items = list(args)
    for index, arg in enumerate(items):
        if arg == "--":
            break
        if arg in ("-f", "--format") and index + 1 < len(items):
            chosen = items[index + 1]
        elif arg.startswith("--format="):
            chosen = arg.split("=", 1)[1]
        elif arg.startswith("-f") and not arg.startswith("--") and len(arg) > 2:
            chosen = arg[2:]
    return chosen.strip().lower() in MACHINE_FORMATS


def write_json_error(exc: UsageError, args: Sequence[str], path: str = "mltidy") -> None:
    """Click's usage error as mltidy's JSON error on stdout, when the command line asks for
    JSON (the human form still goes to stderr). ``path`` names the command when the error does
    not (an option's missing value is found before the command's context exists)."""
    if type(exc).__name__ == "NoArgsIsHelpError" or not requests_json(args):
        return
    import json

    path = exc.ctx.command_path if exc.ctx is not None else path
    error = {"code": "usage", "message": exc.format_message(), "hint": f"see {path} --help"}
    sys.stdout.write(json.dumps({"error": error}) + "\n")
    sys.stdout.flush()


def pipe_closed() -> typer.Exit:
    """The quiet end of a command whose stdout was closed (:data:`PIPE_CLOSED`)."""
    stdout_closed()
    return typer.Exit(PIPE_CLOSED)


def _path(info_name: str | None, parent: Context | None) -> str:
    """How help calls a command (``mltidy scan``)."""
    names = [parent.command_path] if parent is not None else []
    return " ".join([*names, info_name or ""]).strip() or "mltidy"


def _set_debug(value: bool) -> None:
    if value:
        STATE.debug = True
        log_debug_to_stderr()


def log_debug_to_stderr() -> None:
    """``--debug`` also shows mltidy's debug messages, such as which read path a store took."""
    import logging

    logger = logging.getLogger("mltidy")
    logger.setLevel(logging.DEBUG)
    for handler in list(logger.handlers):
        if getattr(handler, "mltidy_debug", False):
            logger.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("mltidy: debug: %(message)s"))
    handler.mltidy_debug = True  # type: ignore[attr-defined]
    logger.addHandler(handler)


DEBUG_HELP = (
    "Show tracebacks of errors, and debug messages such as the read path a store took. Also "
    "accepted before the command (mltidy --debug scan)."
)


def _debug_holder(
    debug: bool = typer.Option(
        False,
        "--debug",
        envvar="MLTIDY_DEBUG",
        help=DEBUG_HELP,
        callback=_set_debug,
        is_eager=True,
        expose_value=False,
    ),
) -> None:
    """Only here for its parameter: every command takes --debug."""


def _debug_option() -> Parameter:
    holder = get_command_from_info(
        CommandInfo(callback=_debug_holder), pretty_exceptions_short=True, rich_markup_mode="rich"
    )
    return holder.params[0]


def _without_bool_metavar(params: list[Parameter]) -> list[Parameter]:
    """Flags take no value: show none (Typer shows ``<bool>``)."""
    for param in params:
        if getattr(param, "is_flag", False) and param.metavar is None:
            param.metavar = ""
    return params


class _Boundary(Command):
    """What every mltidy command and the root share at the command line: boolean flags
    without a metavar, usage errors also as JSON when JSON was asked for, and a reader that
    went away (``--help | head``) ending quietly."""

    def get_params(self, ctx: Context) -> list[Parameter]:
        params = _without_bool_metavar(super().get_params(ctx))
        lighten(params)  # plain option values are converted without importing pydantic
        return params

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        load_help_renderer()
        super().format_help(ctx, formatter)

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Context | None = None,
        **extra: Any,
    ) -> Context:
        given = list(args)
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            write_json_error(exc, given, _path(info_name, parent))
            load_help_renderer()  # Typer renders the error (and help, for no arguments)
            raise
        except BrokenPipeError:  # --help into `| head`
            raise pipe_closed() from None


class MltidyCommand(_Boundary, TyperCommand):
    """A command: prose help, ``--debug`` after the command, JSON usage errors in JSON mode."""

    def __init__(self, name: str | None, **attrs: Any) -> None:
        attrs["help"] = reflow(attrs.get("help"))
        super().__init__(name, **attrs)
        if not any("--debug" in p.opts for p in self.params):
            self.params.append(_debug_option())


class _Listed(TyperCommand):
    """A command as the root's help lists it: its name and one line, nothing imported."""


class LazyGroup(_Boundary, TyperGroup):
    """The root: commands by name (:data:`COMMANDS`), each imported when it runs."""

    #: name -> :class:`Lazy`, set by a subclass (the root module's).
    lazy: ClassVar[dict[str, Lazy]] = {}

    def __init__(self, **attrs: Any) -> None:
        attrs["help"] = reflow(attrs.get("help"))
        super().__init__(**attrs)
        self._listing = False
        self._loaded: dict[str, Command] = {}

    def list_commands(self, ctx: Context) -> list[str]:
        return [*self.lazy, *super().list_commands(ctx)]

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        lazy = self.lazy.get(cmd_name)
        if lazy is None:
            return super().get_command(ctx, cmd_name)
        if self._listing:
            return _Listed(cmd_name, help=lazy.summary, short_help=lazy.summary)
        if cmd_name not in self._loaded:
            self._loaded[cmd_name] = load(cmd_name, lazy)
        return self._loaded[cmd_name]

    def format_help(self, ctx: Context, formatter: HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False

    def invoke(self, ctx: Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError:  # a command that wrote to `| head` outside translated_errors
            raise pipe_closed() from None
        except ClickException:  # Typer shows it through Rich: with mltidy's closed-pipe handling
            importlib.import_module("mltidy.cli.console")
            raise

    def resolve_command(
        self, ctx: Context, args: list[str]
    ) -> tuple[str | None, Command | None, list[str]]:
        try:
            return self._click_resolve_command(ctx, args)
        except UsageError as exc:
            close = difflib.get_close_matches(args[0], list(self.lazy)) if args else []
            if close:
                exc.message = (
                    f"{exc.message.rstrip('.')}. Did you mean {', '.join(map(repr, close))}?"
                )
            write_json_error(exc, args)
            load_help_renderer()
            raise


def load(name: str, lazy: Lazy) -> Command:
    """Import a command's module and build its Click command."""
    return get_command_from_info(
        CommandInfo(
            name=name,
            callback=lazy.callback(),
            cls=MltidyCommand,
            context_settings=lazy.context_settings,
        ),
        pretty_exceptions_short=True,
        rich_markup_mode="rich",
    )


__all__ = [
    "Lazy",
    "LazyGroup",
    "MltidyCommand",
    "load",
    "load_help_renderer",
    "log_debug_to_stderr",
    "reflow",
    "requests_json",
    "write_json_error",
]
