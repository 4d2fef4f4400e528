"""Finding protocol handlers through the ``logout_orchestrator.protocols`` entry points.

The host (the composition root) picks the enabled ones with :func:`handler_classes`, builds
each handler's settings from its own sources, and makes it with :func:`make_handler`.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any

from schemas.errors import HandlerLoadError
from schemas.hints import did_you_mean

if TYPE_CHECKING:
    from pydantic import BaseModel

    from protocols.base import HostInfo, ProtocolHandler

__all__ = ["ENTRY_POINT_GROUP", "available_protocols", "handler_classes", "make_handler"]

ENTRY_POINT_GROUP = "logout_orchestrator.protocols"


def _entry_points() -> dict[str, EntryPoint]:
    return {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_protocols() -> list[str]:
    """Names of every installed protocol handler, enabled or not."""
    return sorted(_entry_points())


def _load_class(entry: EntryPoint) -> type[ProtocolHandler[Any]]:
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
    _check_contract(entry, factory.contract_version)
    if factory.protocol != entry.name:
        raise HandlerLoadError(
            f"entry point {entry.name!r} loads a handler for protocol {factory.protocol!r}"
        )
    return factory


def _check_contract(entry: EntryPoint, version: str) -> None:
    from protocols.base import CONTRACT_VERSION

    major = CONTRACT_VERSION.split(".")[0]
    if str(version).split(".")[0] != major:
        raise HandlerLoadError(
            f"protocol handler {entry.name!r} ({entry.value}) was built for protocol contract "
            f"{version}; this host speaks {CONTRACT_VERSION}: install a release of the handler "
            f"built for contract {major}.x"
        )


def handler_classes(
    enabled: Sequence[str] | None, origin: str
) -> dict[str, type[ProtocolHandler[Any]]]:
    """The classes of the enabled handlers (``enabled``, or every installed one).

    Raises :class:`HandlerLoadError` when an enabled handler is missing or fails to import;
    ``origin`` names the setting that enabled them (``protocols (LOGOUT_PROTOCOLS)``).
    """
    installed = _entry_points()
    wanted = list(enabled) if enabled is not None else sorted(installed)
    missing = [name for name in wanted if name not in installed]
    if missing:
        hints = "".join(did_you_mean(name, installed) for name in missing)
        raise HandlerLoadError(
            f"{origin}: {', '.join(missing)} enabled but not installed{hints} (installed: "
            f"{', '.join(sorted(installed)) or 'none'}); fix the names, or install the handlers"
        )
    return {name: _load_class(installed[name]) for name in wanted}


def make_handler(
    handler_class: type[ProtocolHandler[Any]], settings: BaseModel, host: HostInfo
) -> ProtocolHandler[Any]:
    """An instance of ``handler_class`` with its validated ``settings`` (not started: the host
    calls :meth:`~protocols.base.ProtocolHandler.start` before it delivers).

    A handler that fails to initialise raises :class:`HandlerLoadError` naming it and why.
    """
    try:
        return handler_class(settings, host)
    except Exception as exc:
        raise HandlerLoadError(
            f"protocol handler {handler_class.protocol!r} failed to start: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
