"""Contracts: the events IdP components publish and the audit records auditors read."""

from typing import TYPE_CHECKING

from schemas._lazy import lazy_exports

if TYPE_CHECKING:
    from schemas.audit import (
        BINDING_LOGOUT_REASON,
        AuditRecord,
        AuditType,
    )
    from schemas.events import (
        ACTIVITY_EVENT_TYPES,
        ASN,
        BINDING_REASONS,
        EVENT_TYPES,
        Binding,
        Event,
        EventBase,
        Geo,
        GeoipBindingChange,
        HttpRequest,
        IpChange,
        LogoutProvider,
        LogoutUser,
        NetworkBindingChange,
        RequestInfo,
        SessionBindingViolation,
        SessionExpired,
        SessionRevoke,
        SessionSeen,
        SessionStarted,
        SessionTerminateOthers,
        UserRevokeAll,
        event_adapter,
    )
    from schemas.plan import (
        InitiatorResponse,
        LogoutPlan,
        PlanEntry,
        PlanStage,
    )
    from schemas.registry import (
        ProviderConfig,
        ProviderSessionRecord,
        RegistryRecord,
        SessionRecord,
        registry_record_adapter,
    )
    from schemas.session_view import (
        DEVICE_REASONS,
        DeviceQuestion,
        DeviceReason,
        DeviceVerdict,
        ProviderSessionView,
        SessionDevice,
        SessionLocation,
        SessionView,
    )

__all__ = [
    "ACTIVITY_EVENT_TYPES",
    "ASN",
    "BINDING_LOGOUT_REASON",
    "BINDING_REASONS",
    "DEVICE_REASONS",
    "EVENT_TYPES",
    "AuditRecord",
    "AuditType",
    "Binding",
    "DeviceQuestion",
    "DeviceReason",
    "DeviceVerdict",
    "Event",
    "EventBase",
    "Geo",
    "GeoipBindingChange",
    "HttpRequest",
    "InitiatorResponse",
    "IpChange",
    "LogoutPlan",
    "LogoutProvider",
    "LogoutUser",
    "NetworkBindingChange",
    "PlanEntry",
    "PlanStage",
    "ProviderConfig",
    "ProviderSessionRecord",
    "ProviderSessionView",
    "RegistryRecord",
    "RequestInfo",
    "SessionBindingViolation",
    "SessionDevice",
    "SessionExpired",
    "SessionLocation",
    "SessionRecord",
    "SessionRevoke",
    "SessionSeen",
    "SessionStarted",
    "SessionTerminateOthers",
    "SessionView",
    "UserRevokeAll",
    "event_adapter",
    "registry_record_adapter",
]

__getattr__, __dir__ = lazy_exports(__name__)
