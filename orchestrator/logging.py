"""structlog set-up: JSON lines, context from contextvars, secrets redacted in one place.

Every record, ours or a library's (dramatiq, httpx), goes through :func:`redact_secrets`:
values under secret-named keys are replaced at any depth, and in text (a library's
message, a traceback) what looks like a JWT or a ``password=...`` parameter is masked.
dramatiq's records name a message by its actor and id only, never its arguments (the
event). Each record is written as one line with a single ``write(2)``, unbuffered, so the
lines of several worker processes sharing one stderr never mix, and a record logged just
before a crash is not left in a buffer. The log is a view: the database is the record.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

from schemas.redaction import REDACTED_KEYS, redact

__all__ = [
    "REDACTED_KEYS",
    "configure_logging",
    "redact",
    "redact_secrets",
    "startup_logger",
    "write_line",
]


def redact_secrets(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: :func:`redact` the whole record."""
    return redact(event_dict)  # type: ignore[no-any-return]


def write_line(text: str) -> None:
    """Write ``text`` and a newline to stderr with one ``write(2)`` (see the module
    docstring); to the stream itself when it has no file descriptor (tests swap it)."""
    stream = sys.stderr
    data = text + "\n"
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        stream.write(data)
        stream.flush()
        return
    stream.flush()
    raw = data.encode("utf-8", errors="backslashreplace")
    while raw:
        raw = raw[os.write(fd, raw) :]


class _LineLogger:
    """structlog's logger: each rendered record is one :func:`write_line`."""

    def msg(self, message: str) -> None:
        write_line(message)

    log = debug = info = warn = warning = msg
    err = error = critical = exception = failure = fatal = msg


class _SafeMessages(logging.Filter):
    """dramatiq logs a message as ``handle_event({...the event...})``: name it by actor
    and id instead, before the record is formatted."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith("dramatiq") and record.args:
            from dramatiq import Message
            from dramatiq.broker import MessageProxy

            def safe(arg: Any) -> Any:
                if isinstance(arg, Message | MessageProxy):
                    return f"{arg.actor_name}(message_id={arg.message_id})"
                return arg

            if isinstance(record.args, tuple):
                record.args = tuple(safe(arg) for arg in record.args)
            elif isinstance(record.args, Mapping):
                record.args = {k: safe(v) for k, v in record.args.items()}
        return True


class _CurrentStderr(logging.Handler):
    """Writes each record with :func:`write_line` to whatever ``sys.stderr`` is then."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_line(self.format(record))
        except Exception:  # noqa: BLE001 - logging must never raise into the caller
            self.handleError(record)


def _line_logger(*_args: Any) -> _LineLogger:
    return _LineLogger()


def _shared_processors() -> list[Any]:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
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
        _LineLogger(),
        processors=[*_shared_processors(), _renderer(fmt)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
    )


def configure_logging(level: str = "INFO", fmt: str = "json") -> None:
    """Route structlog and the standard library's logging to stderr as JSON or console lines."""
    shared = _shared_processors()
    renderer = _renderer(fmt)
    structlog.configure(
        processors=[*shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level)),
        logger_factory=_line_logger,
        cache_logger_on_first_use=False,
    )
    handler = _CurrentStderr()
    handler.addFilter(_SafeMessages())
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
