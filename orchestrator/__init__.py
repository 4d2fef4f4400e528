"""Discovery, planning, fan-out and audit of logouts; no protocol details live here."""

from typing import TYPE_CHECKING

from schemas._lazy import lazy_exports

if TYPE_CHECKING:
    from orchestrator.activity import (
        SessionActivity,
    )
    from orchestrator.audit import (
        AuditEntry,
        write_audit,
    )
    from orchestrator.audit_query import (
        AuditQuery,
        iter_audit,
        query_audit,
    )
    from orchestrator.binding_check import (
        BindingChecker,
    )
    from orchestrator.errors import (
        BrokerUnavailableError,
        ConfigurationError,
        DatabaseUnavailableError,
        DeliveryError,
        HandlerLoadError,
        IncompleteError,
        InputError,
        LogoutError,
        PermanentDeliveryError,
        Problem,
        SchemaOutdatedError,
        TransientDeliveryError,
        UnavailableError,
    )
    from orchestrator.expiry import (
        ExpirySweeper,
        SweepReport,
    )
    from orchestrator.logout import (
        EventProcessor,
        HandleResult,
        LogoutEngine,
    )
    from orchestrator.outbox import (
        OutboxMessage,
    )
    from orchestrator.publishing import (
        Publisher,
        publish,
    )
    from orchestrator.registry import (
        ImportSummary,
        SessionRegistry,
    )
    from orchestrator.relay import (
        BrokerSender,
        OutboxRelay,
        RelayReport,
    )
    from orchestrator.retry import (
        RetryPolicy,
    )
    from orchestrator.runtime import (
        Runtime,
    )
    from orchestrator.session_policy import (
        SessionPolicy,
    )
    from orchestrator.settings import (
        Settings,
    )
    from orchestrator.timeline import (
        Timeline,
        read_timeline,
    )
    from orchestrator.validation import (
        parse_event,
        parse_event_lines,
    )
    from orchestrator.waiting import (
        Completion,
        LogoutWaiter,
        PlanWait,
    )

__all__ = [
    "AuditEntry",
    "AuditQuery",
    "BindingChecker",
    "BrokerSender",
    "BrokerUnavailableError",
    "Completion",
    "ConfigurationError",
    "DatabaseUnavailableError",
    "DeliveryError",
    "EventProcessor",
    "ExpirySweeper",
    "HandleResult",
    "HandlerLoadError",
    "ImportSummary",
    "IncompleteError",
    "InputError",
    "LogoutEngine",
    "LogoutError",
    "LogoutWaiter",
    "OutboxMessage",
    "OutboxRelay",
    "PermanentDeliveryError",
    "PlanWait",
    "Problem",
    "Publisher",
    "RelayReport",
    "RetryPolicy",
    "Runtime",
    "SchemaOutdatedError",
    "SessionActivity",
    "SessionPolicy",
    "SessionRegistry",
    "Settings",
    "SweepReport",
    "Timeline",
    "TransientDeliveryError",
    "UnavailableError",
    "iter_audit",
    "parse_event",
    "parse_event_lines",
    "publish",
    "query_audit",
    "read_timeline",
    "write_audit",
]

__getattr__, __dir__ = lazy_exports(__name__)
