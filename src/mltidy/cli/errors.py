"""Turning exceptions into one clear line and the contract's exit code.

Imported by every invocation (``mltidy --help`` included), so what only an error needs (JSON,
redaction, terminal-safe text) is imported when an error is reported.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterable, Iterator, Sized
from contextlib import contextmanager
from typing import TYPE_CHECKING

import typer

from mltidy.cli.state import STATE
from mltidy.errors import ExitCode, MltidyError

if TYPE_CHECKING:
    from mltidy.model import StoreStatus

#: An unexpected exception is a bug in mltidy, kept apart from the contract's codes 0-4.
INTERNAL_ERROR = 70
#: stdout was closed before mltidy finished writing (``mltidy scan -f jsonl | head -3``): the
#: status a shell reports for a Unix tool that SIGPIPE ended (128 + 13), with no message.
PIPE_CLOSED = 141


def stdout_closed() -> None:
    """Point stdout at /dev/null, so that nothing more is written to the closed pipe (not even
    the interpreter's last flush, which would print "Exception ignored ... BrokenPipeError")."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass  # not a real file descriptor (a test runner's stdout): nothing left to protect


def print_error(message: str, hint: str | None = None) -> None:
    """The one-line error (and hint) on stderr: redacted, and safe to show (a server's or a
    store's text inside cannot control the terminal, :func:`mltidy.text.safe`)."""
    from mltidy.redact import redact
    from mltidy.text import safe

    sys.stderr.write(f"mltidy: error: {safe(redact(message))}\n")
    if hint:
        sys.stderr.write(f"  hint: {safe(redact(hint))}\n")


def report_store_failure(status: StoreStatus) -> None:
    """The one line for a store that could not be read."""
    print_error(f"cannot read {status.kind.value} store: {status.error or 'unknown error'}")


@contextmanager
def translated_errors(json_mode: bool = False) -> Iterator[None]:
    """Run a command body; turn mltidy errors into their exit codes, and bugs into one line.

    In JSON mode the error is also written to stdout as ``{"error": {code, message, hint}}``.
    """
    try:
        yield
    except MltidyError as exc:
        if STATE.debug:
            traceback.print_exc()
        print_error(exc.message, exc.hint)
        if json_mode:
            import json

            from mltidy.redact import redact

            hint = redact(exc.hint) if exc.hint else None
            payload = {"code": exc.code, "message": redact(exc.message), "hint": hint}
            sys.stdout.write(json.dumps({"error": payload}) + "\n")
        raise typer.Exit(int(exc.exit_code)) from None
    except (typer.Exit, typer.Abort, KeyboardInterrupt):
        raise
    except BrokenPipeError:
        stdout_closed()
        raise typer.Exit(PIPE_CLOSED) from None
    except Exception as exc:
        if STATE.debug:
            raise
        print_error(
            f"internal error: {type(exc).__name__}: {exc}",
            "this is a bug in mltidy; run again with --debug for the traceback and report it",
        )
        raise typer.Exit(INTERNAL_ERROR) from None


def report_store_failures(stores: Iterable[StoreStatus]) -> None:
    """One line on stderr for each store that could not be read."""
    for status in stores:
        if not status.ok:
            report_store_failure(status)


def outcome_code(stores: Iterable[StoreStatus], failed: Sized) -> int:
    """The exit code of a changing command: 3 a store could not be read, else 4 a change
    failed, else 0."""
    if any(not status.ok for status in stores):
        return int(ExitCode.STORE)
    if failed:
        return int(ExitCode.CHANGE)
    return int(ExitCode.OK)
