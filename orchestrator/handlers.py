"""The composition root of the protocol handlers: each enabled one gets its own settings,
read from its ``[protocols.<name>]`` section and ``LOGOUT_<NAME>_*`` variables, and is
started (keys loaded or generated) before any work is taken."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar, cast

from pydantic import BaseModel, ValidationError

from orchestrator.errors import ConfigurationError, HandlerLoadError

if TYPE_CHECKING:
    from orchestrator.settings import Settings
    from protocols.base import HostInfo, ProtocolHandler

__all__ = ["build_handler", "handler_settings", "load_handlers", "start_each", "start_handlers"]

H = TypeVar("H", bound="ProtocolHandler[Any]")


def handler_settings(settings: Settings, handler_class: type[ProtocolHandler[Any]]) -> BaseModel:
    """``handler_class``'s settings model validated from its section of ``settings``.

    A refused value raises :class:`ConfigurationError` naming where it came from, the
    section and field, and the reason: ``LOGOUT_SAML_KEY_FILE (environment):
    protocols.saml.key_file: ...``.
    """
    protocol = handler_class.protocol
    section = _with_shared_keys(settings, handler_class)
    try:
        return handler_class.settings_model.model_validate(section)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            loc = [str(part) for part in error["loc"]]
            field = loc[0] if loc else ""
            where = settings.protocol_origin(protocol, field)
            place = ".".join(["protocols", protocol, *loc])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                known = ", ".join(handler_class.settings_model.model_fields) or "none"
                message += f" (the {protocol} handler's settings: {known})"
            problems.append(f"{where}{place}: {message}")
        raise ConfigurationError(f"invalid settings: {'; '.join(problems)}") from exc


def _with_shared_keys(
    settings: Settings, handler_class: type[ProtocolHandler[Any]]
) -> dict[str, Any]:
    """``handler_class``'s section; for a signing handler whose section names neither
    ``key_files`` nor ``active_kid``, with those of the protocol it shares keys with
    (``keys_of``: SSF signs with OIDC's keys, configured once)."""
    from protocols.oidc.signing import SigningHandler

    section = dict(settings.protocol_settings.get(handler_class.protocol, {}))
    if not issubclass(handler_class, SigningHandler) or handler_class.keys_of is None:
        return section
    if "key_files" in section or "active_kid" in section:
        return section
    shared = settings.protocol_settings.get(handler_class.keys_of, {})
    return {**section, **{k: shared[k] for k in ("key_files", "active_kid") if k in shared}}


def _host(settings: Settings) -> HostInfo:
    from protocols.base import HostInfo

    return HostInfo(
        issuer=settings.issuer,
        data_dir=settings.data_dir,
        response_body_limit=settings.response_body_limit,
    )


def build_handler(settings: Settings, handler_class: type[H], *, start: bool = True) -> H:
    """One handler made with its own settings, started unless ``start`` is false (a command
    that prints its keys or metadata)."""
    from protocols.loading import make_handler

    own = handler_settings(settings, handler_class)
    handler = make_handler(handler_class, own, _host(settings))
    if start:
        _start(handler)
    return cast(H, handler)


def load_handlers(settings: Settings) -> dict[str, ProtocolHandler[Any]]:
    """The enabled handlers (``settings.protocols``, or every installed one), each made with
    its own settings; :func:`start_handlers` starts them before they deliver.

    Raises :class:`~orchestrator.errors.HandlerLoadError` when one is missing or fails to
    load, :class:`ConfigurationError` when its settings are refused or a section names no
    installed handler.
    """
    from protocols.loading import available_protocols, handler_classes, make_handler

    classes = handler_classes(settings.protocols, settings.origin("protocols"))
    unknown = sorted(set(settings.protocol_settings) - set(available_protocols()))
    if unknown:
        raise ConfigurationError(
            f"invalid settings: {settings.protocol_origin(unknown[0], '')}protocols."
            f"{unknown[0]}: no handler {unknown[0]!r} is installed; remove the section, or "
            "install the handler"
        )
    host = _host(settings)
    return {
        name: make_handler(handler_class, handler_settings(settings, handler_class), host)
        for name, handler_class in classes.items()
    }


def _start(handler: ProtocolHandler[Any]) -> None:
    try:
        handler.start()
    except ConfigurationError:
        raise
    except Exception as exc:
        raise HandlerLoadError(
            f"protocol handler {handler.protocol!r} failed to start: {type(exc).__name__}: {exc}"
        ) from exc


def start_each(handlers: Mapping[str, ProtocolHandler[Any]]) -> None:
    """Start every handler: each loads or generates its keys and certificates now, never on
    the request path (starting one again changes nothing)."""
    for handler in handlers.values():
        _start(handler)


def start_handlers(settings: Settings, handlers: Mapping[str, ProtocolHandler[Any]]) -> None:
    """Before a command delivers: check that every directory it will write is writable
    (:func:`~orchestrator.writable.check_writable`), then :func:`start_each` handler."""
    from orchestrator.writable import check_writable

    check_writable(settings, handlers)
    start_each(handlers)
