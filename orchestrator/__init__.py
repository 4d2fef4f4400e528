"""Discovery, planning, fan-out and audit of logouts; no protocol details live here."""

from orchestrator.activity import SessionActivity
from orchestrator.audit import AuditEntry, AuditQuery, iter_audit, query_audit, write_audit
from orchestrator.binding_check import BindingChecker
from orchestrator.errors import (
    ConfigurationError,
    DeliveryError,
    HandlerLoadError,
    InputError,
    LogoutError,
    PermanentDeliveryError,
    Problem,
    TransientDeliveryError,
)
from orchestrator.expiry import ExpirySweeper, SweepReport
from orchestrator.outbox import OutboxMessage
from orchestrator.pipeline import EventProcessor, HandleResult
from orchestrator.publishing import Publisher, publish
from orchestrator.registry import ImportSummary, SessionRegistry
from orchestrator.relay import BrokerSender, OutboxRelay, RelayReport
from orchestrator.retry import RetryPolicy
from orchestrator.runtime import Runtime
from orchestrator.session_policy import SessionPolicy
from orchestrator.settings import Settings
from orchestrator.validation import parse_event, parse_event_lines
from orchestrator.waiting import Completion, LogoutWaiter, PlanWait

__all__ = [
    "AuditEntry",
    "AuditQuery",
    "BindingChecker",
    "BrokerSender",
    "Completion",
    "ConfigurationError",
    "DeliveryError",
    "EventProcessor",
    "ExpirySweeper",
    "HandleResult",
    "HandlerLoadError",
    "ImportSummary",
    "InputError",
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
    "SessionActivity",
    "SessionPolicy",
    "SessionRegistry",
    "Settings",
    "SweepReport",
    "TransientDeliveryError",
    "iter_audit",
    "parse_event",
    "parse_event_lines",
    "publish",
    "query_audit",
    "write_audit",
]
