"""Keep secrets out of everything mltidy prints: passwords in URIs, tokens in query strings."""

from __future__ import annotations

import re

_USERINFO = re.compile(
    r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.\-]*://)(?P<user>[^:/@\s]*):(?P<pw>[^@/\s]*)@"
)
_SECRET_PARAMS = re.compile(
    r"(?P<key>[?&](?:password|passwd|pwd|token|access_token|secret|api_key|apikey|key|auth)=)"
    r"(?P<val>[^&#\s]+)",
    re.IGNORECASE,
)
MASK = "***"


def redact(text: str) -> str:
    """Mask credentials in every URI inside ``text`` (user names stay, passwords go)."""
    text = _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)
    text = _SECRET_PARAMS.sub(lambda m: f"{m['key']}{MASK}", text)
    return text


def redact_notification_url(url: str) -> str:
    """Notification URLs are secrets as a whole (tokens live in their paths): keep the scheme."""
    scheme, sep, _ = url.partition("://")
    return f"{scheme}://{MASK}" if sep else MASK


__all__ = ["MASK", "redact", "redact_notification_url"]
