"""The one exception root, and the failure types retries follow from.

Defined here, below every other package, so protocol handlers and the orchestrator share
them without import cycles; ``orchestrator.errors`` re-exports them.

Every error this project raises is a :class:`LogoutError`. Delivery failures come in
two kinds: :class:`PermanentDeliveryError` is never retried, :class:`TransientDeliveryError`
is retried with backoff until the retry policy gives up.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "BrokerUnavailableError",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DeliveryError",
    "EgressRefusedError",
    "HandlerLoadError",
    "IncompleteError",
    "InputError",
    "LogoutError",
    "PermanentDeliveryError",
    "Problem",
    "SchemaOutdatedError",
    "TransientDeliveryError",
    "UnavailableError",
]


class LogoutError(Exception):
    """Root of every error raised by logout-orchestrator."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One thing wrong with an input: where it is, which field, and what is wrong."""

    where: str
    field: str
    message: str

    def __str__(self) -> str:
        location = f"{self.where}: " if self.where else ""
        field = f"{self.field}: " if self.field else ""
        return f"{location}{field}{self.message}"


class InputError(LogoutError):
    """An input (event, providers file, sessions file) was refused; nothing of it was applied."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


class ConfigurationError(LogoutError):
    """The settings or the provider configuration cannot work."""


class HandlerLoadError(ConfigurationError):
    """An enabled protocol handler could not be loaded from its entry point."""


class UnavailableError(LogoutError):
    """A server this process needs (the database, the broker) cannot be reached right now.

    Waiting may help: a worker retries with a growing back-off; a command stops and says so.
    """


class DatabaseUnavailableError(UnavailableError):
    """The database cannot be reached (refused, unknown host, wrong credentials...)."""


class BrokerUnavailableError(UnavailableError):
    """The broker (Redis, RabbitMQ) cannot be reached."""


class SchemaOutdatedError(LogoutError):
    """The database schema is missing or older than this version: run ``db upgrade``."""


class IncompleteError(LogoutError):
    """A command stopped before all of its work was done; the message says what is left."""


class DeliveryError(LogoutError):
    """A logout delivery to one provider failed.

    ``detail`` is safe to log and audit: it never holds a token or a SAML message.
    ``facts`` (JSON values, as safe) go into the audit record's detail as they are, for what
    an auditor reads field by field (a SAML SP's status codes and message, say).
    """

    def __init__(
        self,
        detail: str,
        *,
        status_code: int | None = None,
        facts: Mapping[str, Any] | None = None,
    ) -> None:
        self.detail = detail
        self.status_code = status_code
        self.facts: Mapping[str, Any] = facts or {}
        super().__init__(detail)


class PermanentDeliveryError(DeliveryError):
    """The provider refused the logout; sending it again cannot help."""


class EgressRefusedError(PermanentDeliveryError):
    """The egress policy refuses the destination: nothing was sent, and no retry is made
    (the detail names the policy and the setting that admits it, never reachability)."""


class TransientDeliveryError(DeliveryError):
    """The provider could not be reached or asked us to come back later."""

    def __init__(
        self, detail: str, *, status_code: int | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(detail, status_code=status_code)
        self.retry_after = retry_after
