"""mltidy's exceptions and the exit codes they map to (a contract: docs/scan.md, "Exit codes")."""

from __future__ import annotations

from enum import IntEnum
from typing import Any


class ExitCode(IntEnum):
    """Process exit codes. Scripts and CI jobs rely on these numbers."""

    OK = 0
    FINDINGS = 1
    USAGE = 2
    STORE = 3
    CHANGE = 4


class MltidyError(Exception):
    """Base of every error mltidy raises on purpose.

    ``message`` is one human sentence; ``hint`` says what to try next. Neither may hold a secret.
    """

    exit_code: ExitCode = ExitCode.USAGE
    code: str = "error"

    def __init_subclass__(
        cls, *, code: str | None = None, exit_code: ExitCode | None = None, **kwargs: Any
    ) -> None:
        """A subclass names its JSON error code and exit code in its class line."""
        super().__init_subclass__(**kwargs)
        if code is not None:
            cls.code = code
        if exit_code is not None:
            cls.exit_code = exit_code

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(MltidyError, code="usage"):
    """The command line or configuration is wrong (exit 2)."""


class StoreError(MltidyError, code="store", exit_code=ExitCode.STORE):
    """A store could not be reached or read (exit 3). Backends raise only subclasses of this."""


class StoreNotFound(StoreError, code="store_not_found"):
    """The store does not exist. mltidy never creates it."""


class StoreUnreachable(StoreError, code="store_unreachable"):
    """A server did not answer (connection refused, timeout, DNS)."""


class StoreAccessDenied(StoreError, code="store_access_denied"):
    """The store answered but refused the credentials."""


class NotAStore(StoreError, code="not_a_store"):
    """The location exists but holds something else than the expected kind of store."""


class UnsupportedSchema(StoreError, code="unsupported_schema"):
    """The store's schema is one mltidy does not know how to read safely."""


class ChangeRefused(MltidyError, code="change_refused", exit_code=ExitCode.CHANGE):
    """A change was refused or only partly applied (exit 4)."""
