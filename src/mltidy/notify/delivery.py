"""Notification delivery through apprise: one URL per target (``slack://``, ``mailto://``,
``ntfy://``, ``discord://``, ``json://``, ``workflows://`` for Teams, ...).

Notification URLs are secrets as a whole (webhook tokens live in their paths), so mltidy never
prints one: it shows ``scheme://***`` (:func:`mltidy.redact.redact_notification_url`), keeps only
a keyed hash of the URL in the watch state (:meth:`mltidy.watch.state.WatchState.target_key`),
and scrubs apprise's own log lines before using them as error details. apprise is imported only
when a message is validated or sent, so ``mltidy --help`` stays light.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mltidy.config import NOTIFY
from mltidy.errors import UsageError
from mltidy.notify.events import Message
from mltidy.redact import redact, redact_notification_url

if TYPE_CHECKING:
    from mltidy.config import Config

_ANY_URL = re.compile(r"\b[a-zA-Z][a-zA-Z0-9+.\-]*://\S+")
#: Secret parts of a URL shorter than this are not scrubbed from free text (too many false hits).
_MIN_SECRET = 4


@dataclass(frozen=True)
class Target:
    """One notification target.

    Attributes:
        url: the apprise URL (a secret: never print it; ``shown`` is for people).
        source: where mltidy found it (``--notify``, ``MLTIDY_NOTIFY``, the config file).
    """

    url: str = field(repr=False)
    source: str = "--notify"

    @property
    def shown(self) -> str:
        """The URL as mltidy prints it: the scheme only."""
        return redact_notification_url(self.url)

    def __str__(self) -> str:
        return self.shown


@dataclass(frozen=True)
class Delivery:
    """How sending one message to one target went."""

    target: str
    ok: bool
    events: int
    error: str | None = None


def resolve_targets(options: Sequence[str] | None, config: Config) -> list[Target]:
    """The targets a command notifies: ``--notify``, else ``MLTIDY_NOTIFY``, else the config
    file's ``notify`` (a string or a list); several URLs may be given space-separated."""
    urls = config.values(NOTIFY, options)
    source = config.source_of(NOTIFY, urls if options else None)
    return [Target(url, source) for url in urls]


@contextmanager
def _captured_apprise_logs() -> Iterator[list[logging.LogRecord]]:
    """Keep apprise's log lines (which can quote a whole URL) off stderr, and hand them back.

    Without a handler of its own, Python's last-resort handler would print apprise's warnings,
    secrets included, on stderr.
    """
    records: list[logging.LogRecord] = []

    class _Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    logger = logging.getLogger("apprise")
    handler = _Keep(level=logging.WARNING)
    propagate, level = logger.propagate, logger.level
    logger.addHandler(handler)
    logger.propagate = False
    if logger.level == logging.NOTSET or logger.level > logging.WARNING:
        logger.setLevel(logging.WARNING)
    try:
        yield records
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate
        logger.setLevel(level)


def scrub(text: str, url: str) -> str:
    """Free text with every URL (and every longer piece of the target's URL, the whole URL when
    it has no scheme) masked."""
    _, sep, rest = url.partition("://")
    secret = rest if sep else url
    if len(secret) >= _MIN_SECRET:
        text = text.replace(secret, "***")
    for piece in sorted(re.split(r"[/:@?&=#,\s]+", secret), key=len, reverse=True):
        if len(piece) >= _MIN_SECRET:
            text = text.replace(piece, "***")
    text = _ANY_URL.sub(lambda m: redact_notification_url(m.group(0)), text)
    return redact(text)


def _asset() -> Any:
    import apprise

    # In memory only: apprise must not write a cache of tokens next to the user's files.
    return apprise.AppriseAsset(storage_mode="memory", secure_logging=True)


def validate(targets: Sequence[Target]) -> None:
    """Check that apprise understands every URL, before any work is done.

    Raises:
        UsageError: a URL apprise cannot use (the message shows its scheme only).
    """
    if not targets:
        return
    import apprise

    asset = _asset()
    for target in targets:
        with _captured_apprise_logs() as logs:
            service = apprise.Apprise.instantiate(target.url, asset=asset)
        if service is None:
            why = next((scrub(r.getMessage(), target.url) for r in reversed(logs)), None)
            raise UsageError(
                f"notification URL {target.shown} ({target.source}) is not one apprise can use"
                + (f": {why}" if why else ""),
                hint="see https://github.com/caronc/apprise/wiki for each service's URL format",
            )


def deliver(message: Message, targets: Sequence[Target]) -> list[Delivery]:
    """Send one message to each target on its own, so that one failing target neither hides
    nor repeats the others. Never raises for a delivery problem: each comes back as a failed
    :class:`Delivery` with a scrubbed one-line reason."""
    if not targets:
        return []
    import apprise

    asset = _asset()
    done: list[Delivery] = []
    for target in targets:
        with _captured_apprise_logs() as logs:
            try:
                sender = apprise.Apprise(asset=asset)
                ok = bool(sender.add(target.url)) and bool(
                    sender.notify(
                        body=message.body,
                        title=message.title,
                        notify_type=message.severity.value,
                        body_format="text",
                    )
                )
                crash = None
            except Exception as exc:  # a plugin bug must not lose the other targets
                ok, crash = False, f"{type(exc).__name__}: {exc}"
        error = None
        if not ok:
            lines = [r.getMessage() for r in logs if r.levelno >= logging.WARNING]
            error = scrub(
                crash or (lines[-1] if lines else "apprise reported a failure"), target.url
            )
        done.append(Delivery(target.shown, ok, message.events, error))
    return done


__all__ = [
    "Delivery",
    "Target",
    "deliver",
    "resolve_targets",
    "scrub",
    "validate",
]
