"""structlog set-up: JSON lines, context from contextvars, secrets redacted in one place."""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

__all__ = ["REDACTED_KEYS", "configure_logging", "redact_secrets", "startup_logger"]

#: Keys whose values are never logged, at any depth.
REDACTED_KEYS = frozenset(
    {
        "logout_token",
        "token",
        "id_token_hint",
        "samlrequest",
        "samlresponse",
        "saml_request",
        "saml_response",
        "signature",
        "private_key",
        "key",
        "password",
        "secret",
        "client_secret",
        "authorization",
        "cookie",
        "content",
        "body",
    }
)


def _scrub(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {
            k: "[redacted]" if str(k).lower() in REDACTED_KEYS else _scrub(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return value


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: replace the value of every secret-named key with ``[redacted]``."""
    return _scrub(event_dict)  # type: ignore[no-any-return]


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of writing (tests swap it)."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def _print_logger(*_args: Any) -> structlog.PrintLogger:
    return structlog.PrintLogger(sys.stderr)


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redact_secrets,
    ]


def _renderer(fmt: str) -> Any:
    if fmt == "json":
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=False)


def startup_logger(level: str = "INFO", fmt: str = "json") -> Any:
    """A logger for what happens before :func:`configure_logging` (reading the settings).

    Once structlog is configured, that configuration's logger; until then, one writing the
    lines :func:`configure_logging` would (``fmt``, at ``level``) to stderr, so a JSON log
    stays JSON and standard output stays clean.
    """
    if structlog.is_configured():
        return structlog.get_logger("logout.settings")
    return structlog.wrap_logger(
        structlog.PrintLogger(sys.stderr),
        processors=[*_shared_processors(), _renderer(fmt)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
    )


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library's logging to stderr as JSON or console lines."""
    shared = _shared_processors()
    renderer = _renderer(fmt)
    structlog.configure(
        processors=[*shared, structlog.processors.format_exc_info, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_print_logger,
        cache_logger_on_first_use=False,
    )
    handler = _CurrentStderr()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                renderer,
            ],
            foreign_pre_chain=shared,
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
    # pika logs every failed connection attempt at ERROR, several lines each; the failure
    # reaches us as an exception and is reported once, in one sentence.
    logging.getLogger("pika").setLevel(logging.CRITICAL)
