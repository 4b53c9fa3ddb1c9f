"""Keep secrets out of everything mltidy prints: passwords in URIs, tokens in query strings.

Two layers. Every secret mltidy is handed (the password of a store URI, a notification URL) is
*registered* and masked wherever it appears, whatever characters it holds (``@``, ``/``, spaces).
On top, a pattern masks the password part of any other URI in free text (a server's error body
quoting a URI mltidy was never given).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import quote, unquote

_SCHEME = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)")
#: ``scheme://user:password@`` where the password may hold anything but whitespace; the greedy
#: match up to the last ``@`` before the next whitespace keeps ``@`` and ``/`` in passwords masked.
_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^\s]*)@(?=[^\s@]*(?:\s|$))"
)
_USERINFO_SHORT = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@\s]*)@"
)
#: ``user:password@host`` without a scheme (a URI typed without ``postgresql://``, a DSN in a
#: driver's message): masked too, when what follows the ``@`` looks like a host.
_BARE_USERINFO = re.compile(
    r"(?<![\w:/@.%+-])(?P<user>[A-Za-z0-9._~-]+):(?P<pw>[^\s@/:]+)@(?=[A-Za-z0-9\[])"
)
_SECRET_PARAMS = re.compile(
    r"(?P<key>[?&;](?:password|passwd|pwd|token|access_token|secret|api_key|apikey|key|auth|"
    r"sig|signature)=)(?P<val>[^&#\s]+)",
    re.IGNORECASE,
)
MASK = "***"
#: Secrets shorter than this are not masked by value (they would mask ordinary words).
MIN_SECRET = 3

_registered: set[str] = set()


def register_secret(secret: str) -> None:
    """Mask ``secret`` (and its percent-encoded and decoded forms) in everything redacted."""
    for form in {secret, unquote(secret), quote(secret, safe="")}:
        if len(form) >= MIN_SECRET:
            _registered.add(form)


@dataclass(frozen=True)
class Credentials:
    """A URI split at its credentials: ``scheme://`` ``user`` ``password`` ``@rest``."""

    scheme: str
    user: str | None
    password: str | None
    rest: str


def split_credentials(uri: str) -> Credentials:
    """Split ``uri`` at the last ``@`` of its authority, so a password may hold any character.

    ``postgresql://u:p@ss/w rd@db:5432/x`` -> user ``u``, password ``p@ss/w rd``, rest
    ``db:5432/x``. A URI without ``://`` or without ``@`` has no credentials.
    """
    scheme, sep, after = uri.partition("://")
    if not sep:
        return _bare_credentials(uri)
    at = after.rfind("@")
    # An "@" after the first "/" that follows it belongs to a path, not to the credentials,
    # unless what precedes it looks like user:password (a raw "/" in a password).
    if at < 0:
        return Credentials(scheme + "://", None, None, after)
    userinfo, rest = after[:at], after[at + 1 :]
    if "/" in userinfo and ":" not in userinfo.split("/", 1)[0]:
        return Credentials(scheme + "://", None, None, after)
    user, colon, password = userinfo.partition(":")
    return Credentials(scheme + "://", user, password if colon else None, rest)


def _bare_credentials(uri: str) -> Credentials:
    """``user:password@host/...`` without a scheme (a mistyped store URI): split it the same way,
    so its password is registered and masked too. Paths (``/``, ``./``) have no credentials."""
    at = uri.rfind("@")
    if at <= 0 or uri.startswith(("/", ".", "~")):
        return Credentials("", None, None, uri)
    userinfo, rest = uri[:at], uri[at + 1 :]
    user, colon, password = userinfo.partition(":")
    if not colon or not user or "/" in user or any(c.isspace() for c in user):
        return Credentials("", None, None, uri)
    return Credentials("", user, password, rest)


def redact(text: str) -> str:
    """Mask credentials in every URI inside ``text`` (user names stay, passwords go)."""
    for secret in sorted(_registered, key=len, reverse=True):
        if secret in text:
            text = text.replace(secret, MASK)
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _USERINFO_SHORT.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _BARE_USERINFO.sub(lambda m: f"{m['user']}:{MASK}@", text)
    text = _SECRET_PARAMS.sub(lambda m: f"{m['key']}{MASK}", text)
    return text


def redact_notification_url(url: str) -> str:
    """Notification URLs are secrets as a whole (tokens live in their paths): keep the scheme,
    and nothing at all of a URL without one."""
    scheme, sep, _ = url.partition("://")
    if sep and _SCHEME.fullmatch(scheme + "://") and len(scheme) <= 20:
        return f"{scheme}://{MASK}"
    return MASK


__all__ = [
    "MASK",
    "Credentials",
    "redact",
    "redact_notification_url",
    "register_secret",
    "split_credentials",
]
