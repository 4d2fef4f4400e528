"""Finding protocol handlers through the ``logout_orchestrator.protocols`` entry points."""

from __future__ import annotations

from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING

from schemas.errors import HandlerLoadError
from schemas.hints import did_you_mean

if TYPE_CHECKING:
    from orchestrator.settings import Settings
    from protocols.base import ProtocolHandler

__all__ = ["ENTRY_POINT_GROUP", "available_protocols", "load_handlers"]

ENTRY_POINT_GROUP = "logout_orchestrator.protocols"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_protocols() -> list[str]:
    """Names of every installed protocol handler, enabled or not."""
    return sorted(_entry_points())


def _load(entry: EntryPoint, settings: Settings) -> ProtocolHandler:
    from protocols.base import ProtocolHandler  # what listing the installed ones needs not

    try:
        factory = entry.load()
    except Exception as exc:
        raise HandlerLoadError(
            f"protocol handler {entry.name!r} ({entry.value}) failed to load: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(factory, type) and issubclass(factory, ProtocolHandler)):
        raise HandlerLoadError(
            f"protocol handler {entry.name!r} ({entry.value}) is not a ProtocolHandler subclass"
        )
    try:
        handler = factory(settings)
    except Exception as exc:
        raise HandlerLoadError(
            f"protocol handler {entry.name!r} failed to start: {type(exc).__name__}: {exc}"
        ) from exc
    if handler.protocol != entry.name:
        raise HandlerLoadError(
            f"entry point {entry.name!r} loads a handler for protocol {handler.protocol!r}"
        )
    return handler


def load_handlers(settings: Settings) -> dict[str, ProtocolHandler]:
    """Load the enabled handlers (``settings.protocols``, or every installed one).

    Raises :class:`HandlerLoadError` when an enabled handler is missing or fails to load.
    """
    installed = _entry_points()
    wanted = settings.protocols if settings.protocols is not None else sorted(installed)
    missing = [name for name in wanted if name not in installed]
    if missing:
        hints = "".join(did_you_mean(name, installed) for name in missing)
        raise HandlerLoadError(
            f"{settings.origin('protocols')}: {', '.join(missing)} enabled but not "
            f"installed{hints} (installed: {', '.join(sorted(installed)) or 'none'}); fix "
            "the names, or install the handlers"
        )
    return {name: _load(installed[name], settings) for name in wanted}
