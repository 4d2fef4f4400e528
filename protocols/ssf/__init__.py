"""OpenID Shared Signals (SSF 1.0) transmitter: CAEP ``session-revoked`` Security Event
Tokens pushed to each receiver's stream (RFC 8417, RFC 8935, RFC 9493)."""

from protocols.ssf.handler import SsfHandler
from protocols.ssf.push import PUSH_DELIVERY, classify_push
from protocols.ssf.settings import (
    SESSION_REVOKED,
    SUPPORTED_EVENTS,
    VERIFICATION,
    SsfIdentifiers,
    SsfSettings,
    StreamSettings,
    StreamStatus,
    SubjectFormat,
    parse_stream_settings,
)
from protocols.ssf.tokens import SET_TYPE, initiating_entity

__all__ = [
    "PUSH_DELIVERY",
    "SESSION_REVOKED",
    "SET_TYPE",
    "SUPPORTED_EVENTS",
    "VERIFICATION",
    "SsfHandler",
    "SsfIdentifiers",
    "SsfSettings",
    "StreamSettings",
    "StreamStatus",
    "SubjectFormat",
    "classify_push",
    "initiating_entity",
    "parse_stream_settings",
]
