"""mltidy's exceptions and the exit codes they map to (a contract: docs/scan.md, "Exit codes")."""

from __future__ import annotations

from enum import IntEnum


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

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(MltidyError):
    """The command line or configuration is wrong (exit 2)."""

    exit_code = ExitCode.USAGE
    code = "usage"


class StoreError(MltidyError):
    """A store could not be reached or read (exit 3). Backends raise only subclasses of this."""

    exit_code = ExitCode.STORE
    code = "store"


class StoreNotFound(StoreError):
    """The store does not exist. mltidy never creates it."""

    code = "store_not_found"


class StoreUnreachable(StoreError):
    """A server did not answer (connection refused, timeout, DNS)."""

    code = "store_unreachable"


class StoreAccessDenied(StoreError):
    """The store answered but refused the credentials."""

    code = "store_access_denied"


class NotAStore(StoreError):
    """The location exists but holds something else than the expected kind of store."""

    code = "not_a_store"


class UnsupportedSchema(StoreError):
    """The store's schema is one mltidy does not know how to read safely."""

    code = "unsupported_schema"


class ChangeRefused(MltidyError):
    """A change was refused or only partly applied (exit 4)."""

    exit_code = ExitCode.CHANGE
    code = "change_refused"
