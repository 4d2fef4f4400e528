"""``<samlp:LogoutRequest>`` (SAML Core §3.7.1), built with lxml for one provider session."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from lxml import etree

from protocols.saml.uris import (
    ASSERTION_NS,
    PROTOCOL_NS,
    REASON_ADMIN,
    REASON_GLOBAL_TIMEOUT,
    REASON_USER,
)

__all__ = [
    "REASONS",
    "LogoutRequest",
    "NameId",
    "instant",
    "logout_request",
    "message_id",
    "reason_for",
]

#: ``Reason`` per event type: who ended the session, in SAML's words.
REASONS: dict[str, str] = {
    "logout.user": REASON_USER,
    "logout.provider": REASON_USER,
    "session.revoke": REASON_ADMIN,
    "user.revoke_all": REASON_ADMIN,
    "session.terminate_others": REASON_ADMIN,
    "session.binding_violation": REASON_ADMIN,
    "session.expired": REASON_GLOBAL_TIMEOUT,
}

_NSMAP = {"samlp": PROTOCOL_NS, "saml": ASSERTION_NS}
_P = f"{{{PROTOCOL_NS}}}"
_A = f"{{{ASSERTION_NS}}}"


def reason_for(event_type: str) -> str | None:
    """The ``Reason`` URI of an event type (None for a type this version does not know)."""
    return REASONS.get(event_type)


def message_id() -> str:
    """A fresh message ``ID``: 160 random bits, an NCName (starts with ``_``)."""
    return f"_{secrets.token_hex(20)}"


def instant(moment: datetime) -> str:
    """A SAML ``dateTime``: UTC, whole seconds, ``Z``."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class NameId:
    """A ``<saml:NameID>`` exactly as it was issued to the SP."""

    value: str
    format: str | None = None
    name_qualifier: str | None = None
    sp_name_qualifier: str | None = None


@dataclass(frozen=True, slots=True)
class LogoutRequest:
    """A built request: its ``ID``, the element, and its ``Issuer`` (a signature goes after)."""

    id: str
    element: etree._Element
    issuer: etree._Element


def logout_request(
    *,
    issuer: str,
    destination: str,
    name_id: NameId,
    session_index: str | None,
    reason: str | None,
    now: datetime,
    lifetime: int,
) -> LogoutRequest:
    """An unsigned LogoutRequest with a fresh ``ID``, valid ``lifetime`` seconds from ``now``.

    Without a ``session_index`` the SP ends every session it holds for the ``NameID``.
    """
    request_id = message_id()
    root = etree.Element(f"{_P}LogoutRequest", nsmap=_NSMAP)
    root.set("ID", request_id)
    root.set("Version", "2.0")
    root.set("IssueInstant", instant(now))
    root.set("Destination", destination)
    root.set("NotOnOrAfter", instant(now + timedelta(seconds=lifetime)))
    if reason is not None:
        root.set("Reason", reason)
    issuer_element = etree.SubElement(root, f"{_A}Issuer")
    issuer_element.text = issuer
    name = etree.SubElement(root, f"{_A}NameID")
    for attribute, value in (
        ("Format", name_id.format),
        ("NameQualifier", name_id.name_qualifier),
        ("SPNameQualifier", name_id.sp_name_qualifier),
    ):
        if value is not None:
            name.set(attribute, value)
    name.text = name_id.value
    if session_index is not None:
        etree.SubElement(root, f"{_P}SessionIndex").text = session_index
    return LogoutRequest(request_id, root, issuer_element)
