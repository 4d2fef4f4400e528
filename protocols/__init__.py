"""Protocol handlers: one package per protocol, sans-IO, found through entry points."""

from typing import TYPE_CHECKING

from schemas._lazy import lazy_exports

if TYPE_CHECKING:
    from protocols.base import (
        CONTRACT_VERSION,
        TRANSIENT_STATUS_CODES,
        BackchannelRequest,
        BackchannelResponse,
        Channel,
        FrontchannelAnswer,
        FrontchannelEntry,
        HostInfo,
        LogoutContext,
        NoSettings,
        OpaqueIdentifiers,
        ProtocolHandler,
        ProviderInfo,
        ProviderSessionInfo,
        classify_status,
        parse_retry_after,
    )
    from protocols.keyfiles import KeyDirectory
    from protocols.loading import (
        ENTRY_POINT_GROUP,
        available_protocols,
        handler_classes,
        make_handler,
    )

__all__ = [
    "CONTRACT_VERSION",
    "ENTRY_POINT_GROUP",
    "TRANSIENT_STATUS_CODES",
    "BackchannelRequest",
    "BackchannelResponse",
    "Channel",
    "FrontchannelAnswer",
    "FrontchannelEntry",
    "HostInfo",
    "KeyDirectory",
    "LogoutContext",
    "NoSettings",
    "OpaqueIdentifiers",
    "ProtocolHandler",
    "ProviderInfo",
    "ProviderSessionInfo",
    "available_protocols",
    "classify_status",
    "handler_classes",
    "make_handler",
    "parse_retry_after",
]

__getattr__, __dir__ = lazy_exports(__name__)
