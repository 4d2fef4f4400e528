"""The command line's exit statuses, defined once, and which error gives which.

Cheap to import (no third-party module): the CLI maps an error to its status at the boundary,
and errors of libraries that were never imported cannot have been raised.
"""

from __future__ import annotations

import re
import sys
from enum import IntEnum

from schemas.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    DatabaseUnavailableError,
    IncompleteError,
    InputError,
    LogoutError,
    SchemaOutdatedError,
)

__all__ = ["ExitCode", "broker_unreachable_message", "exit_code_for", "foreign_error"]


class ExitCode(IntEnum):
    """``logout-orchestrator``'s exit statuses (README: *Exit codes*)."""

    OK = 0
    """Done."""
    INTERNAL = 1
    """An unexpected error: a bug, or a failure no other status names."""
    INPUT = 2
    """Input refused or wrong usage (click's own usage errors exit 2 too); nothing applied."""
    BINDING_BROKEN = 3
    """``binding check``: the session's binding is broken."""
    BROKER_UNAVAILABLE = 4
    """The broker cannot be reached: nothing was published, or the events wait in the outbox."""
    DATABASE_UNAVAILABLE = 5
    """The database cannot be reached."""
    CONFIGURATION = 6
    """Settings, config file, database URL, key or data directory cannot work."""
    SCHEMA_OUTDATED = 7
    """The database schema is missing or behind: run ``logout-orchestrator db upgrade``."""
    INCOMPLETE = 8
    """The command stopped before its work was done; the message says what is left."""
    TRAIL_BROKEN = 9
    """``audit verify`` (and ``audit purge``, which refuses): the audit trail's chain does not
    verify; each altered, deleted, inserted or reordered record is named."""


# The first matching type wins: subclasses before their parents.
_CODES: tuple[tuple[type[LogoutError], ExitCode], ...] = (
    (InputError, ExitCode.INPUT),
    (ConfigurationError, ExitCode.CONFIGURATION),
    (DatabaseUnavailableError, ExitCode.DATABASE_UNAVAILABLE),
    (BrokerUnavailableError, ExitCode.BROKER_UNAVAILABLE),
    (SchemaOutdatedError, ExitCode.SCHEMA_OUTDATED),
    (IncompleteError, ExitCode.INCOMPLETE),
)


def exit_code_for(error: LogoutError) -> ExitCode:
    """The exit status of a command that failed with ``error``."""
    for kind, code in _CODES:
        if isinstance(error, kind):
            return code
    return ExitCode.INTERNAL


#: A missing table or column: SQLite's and PostgreSQL's wording.
_MISSING_TABLE = re.compile(r"no such (table|column)|relation .* does not exist|UndefinedTable")
#: Failures to reach the server (PostgreSQL) or open the file (SQLite).
_UNREACHABLE = re.compile(
    r"connect|connection|could not translate host|timeout expired|unable to open database",
    re.IGNORECASE,
)


def foreign_error(exc: BaseException, database: str, broker: str) -> LogoutError | None:
    """A library's connection error that reached the boundary untranslated, as ours.

    ``database`` and ``broker`` are the (redacted) URLs in force. None when ``exc`` is not
    a connection error of the database or broker clients.
    """
    reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(
        exc, sqlalchemy_exc.OperationalError | sqlalchemy_exc.ProgrammingError
    ):
        origin = getattr(exc, "orig", None)
        reason = (str(origin).strip().splitlines() or [reason])[0].rstrip(".") if origin else reason
        if _MISSING_TABLE.search(reason):
            return SchemaOutdatedError(
                f"the database schema at {database} is missing a table ({reason}); "
                "run `logout-orchestrator db upgrade` (or turn auto_migrate on)"
            )
        if isinstance(exc, sqlalchemy_exc.ProgrammingError):
            return None  # a bug, not the database's state: reported as an internal error
        if _UNREACHABLE.search(reason):
            return DatabaseUnavailableError(
                f"database unreachable: {database}: {reason}; check that it runs and that "
                "database_url (LOGOUT_DATABASE_URL) is right"
            )
        return DatabaseUnavailableError(
            f"the database refused the work: {database}: {reason}; nothing of this command "
            "was committed, run it again once that is fixed"
        )
    broker_errors = [
        getattr(sys.modules.get(module), name, None)
        for module, name in (
            ("redis.exceptions", "ConnectionError"),
            ("redis.exceptions", "TimeoutError"),
            ("pika.exceptions", "AMQPConnectionError"),
            ("dramatiq.errors", "BrokerConnectionError"),
        )
    ]
    if any(isinstance(kind, type) and isinstance(exc, kind) for kind in broker_errors):
        return BrokerUnavailableError(broker_unreachable_message(broker, reason))
    return None


#: What a broker answers when it refuses the login (RabbitMQ, Redis ACL or requirepass).
_LOGIN_REFUSED = re.compile(
    r"ACCESS_REFUSED|authenticat|WRONGPASS|NOAUTH|username-password", re.IGNORECASE
)


def broker_unreachable_message(broker: str, reason: str) -> str:
    """What to say when ``broker`` (its URL, password masked) did not take a connection:
    a refused login is fixed in the URL, anything else by starting the broker."""
    if _LOGIN_REFUSED.search(reason):
        return (
            f"the broker refused the login: {broker}: {reason}; fix the user and password "
            "in broker_url (LOGOUT_BROKER_URL)"
        )
    advice = "start it, or fix broker_url (LOGOUT_BROKER_URL)"
    return f"broker unreachable: {broker}: {reason}; {advice}"
