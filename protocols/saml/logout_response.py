"""``<samlp:LogoutResponse>`` (SAML Core §3.7.2): reading an SP's, building the IdP's own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import xmlsec
from lxml import etree

from protocols.saml.logout_request import instant, message_id
from protocols.saml.parsing import MessageError
from protocols.saml.signing import enveloped_signature, sign_enveloped, verify_enveloped
from protocols.saml.trust import Trust
from protocols.saml.uris import (
    ASSERTION_NS,
    PROTOCOL_NS,
    STATUS_PARTIAL_LOGOUT,
    STATUS_SUCCESS,
)
from schemas.fields import printable

__all__ = ["LogoutStatus", "logout_response", "read_logout_response"]

_P = f"{{{PROTOCOL_NS}}}"
_A = f"{{{ASSERTION_NS}}}"
_NSMAP = {"samlp": PROTOCOL_NS, "saml": ASSERTION_NS}


#: Most nested ``StatusCode`` levels kept, characters of a code and of the StatusMessage:
#: the SP writes them, an auditor reads them.
STATUS_LEVELS = 3
CODE_CHARS = 200
MESSAGE_CHARS = 300


@dataclass(frozen=True, slots=True)
class LogoutStatus:
    """A response's status: its ``StatusCode`` values, top-level first, and the
    ``StatusMessage``; SP-written text, so bounded and with control characters escaped."""

    codes: tuple[str, ...]
    message: str | None = None

    @property
    def code(self) -> str:
        """The top-level code."""
        return self.codes[0]

    @property
    def success(self) -> bool:
        return self.code == STATUS_SUCCESS

    def audit_detail(self) -> dict[str, Any]:
        """The status as an audit record carries it: ``{"codes": [...], "message": ...}``."""
        return {"codes": list(self.codes), "message": self.message}

    def __str__(self) -> str:
        codes = " / ".join(self.codes)
        return f"{codes}: {self.message}" if self.message else codes


def _status(response: etree._Element) -> LogoutStatus:
    code = response.find(f"{_P}Status/{_P}StatusCode")
    value = (code.get("Value") or "").strip() if code is not None else ""
    if code is None or not value:
        raise MessageError("LogoutResponse has no Status/StatusCode Value")
    codes = [printable(value, CODE_CHARS)]
    nested = code.find(f"{_P}StatusCode")
    while nested is not None and len(codes) < STATUS_LEVELS:
        value = (nested.get("Value") or "").strip()
        if value:
            codes.append(printable(value, CODE_CHARS))
        nested = nested.find(f"{_P}StatusCode")
    message = " ".join((response.findtext(f"{_P}Status/{_P}StatusMessage") or "").split())
    return LogoutStatus(tuple(codes), printable(message, MESSAGE_CHARS) or None)


def read_logout_response(
    response: etree._Element,
    *,
    request_id: str,
    sp_entity_id: str,
    trust: Trust,
    require_signature: bool,
) -> LogoutStatus:
    """Check an SP's LogoutResponse to our request ``request_id`` and return its status.

    The signature is verified first, against ``trust`` (the SP's certificates, and whether
    SHA-1 passes), whenever the response is signed and certificates are known, and must be
    there when ``require_signature``.
    Then ``Version``, ``InResponseTo`` and ``Issuer`` must be what was expected. Raises
    :class:`MessageError` saying what is wrong; a non-success status is returned, not raised.
    """
    if response.tag != f"{_P}LogoutResponse":
        raise MessageError(f"expected a LogoutResponse, got {etree.QName(response).localname}")
    if enveloped_signature(response) is not None and trust.certificates:
        verify_enveloped(response, trust)
    elif require_signature:
        raise MessageError("LogoutResponse is not signed, and require_signed_responses is set")
    if response.get("Version") != "2.0":
        raise MessageError(f"LogoutResponse Version is {response.get('Version')!r}, not '2.0'")
    in_response_to = response.get("InResponseTo")
    if in_response_to != request_id:
        raise MessageError(
            f"LogoutResponse InResponseTo {in_response_to!r} is not the request's ID {request_id!r}"
        )
    issuer = response.findtext(f"{_A}Issuer")
    if issuer is None or issuer.strip() != sp_entity_id:
        raise MessageError(
            f"LogoutResponse Issuer {issuer and issuer.strip()!r} is not the SP's entity_id "
            f"{sp_entity_id!r}"
        )
    return _status(response)


def logout_response(
    *,
    issuer: str,
    destination: str | None,
    in_response_to: str,
    partial: bool,
    now: datetime,
    key: xmlsec.Key | None,
) -> etree._Element:
    """The IdP's answer to an SP-initiated LogoutRequest: ``Success``, and ``PartialLogout``
    as second-level status when any participant failed or could not be reached.

    Signed (enveloped, after ``Issuer``) when ``key`` is given: for the POST and SOAP
    bindings; the Redirect binding signs the query instead.
    """
    root = etree.Element(f"{_P}LogoutResponse", nsmap=_NSMAP)
    root.set("ID", message_id())
    root.set("Version", "2.0")
    root.set("IssueInstant", instant(now))
    if destination is not None:  # none over SOAP: the answer goes back on the connection
        root.set("Destination", destination)
    root.set("InResponseTo", in_response_to)
    issuer_element = etree.SubElement(root, f"{_A}Issuer")
    issuer_element.text = issuer
    code = etree.SubElement(etree.SubElement(root, f"{_P}Status"), f"{_P}StatusCode")
    code.set("Value", STATUS_SUCCESS)
    if partial:
        etree.SubElement(code, f"{_P}StatusCode").set("Value", STATUS_PARTIAL_LOGOUT)
    if key is not None:
        sign_enveloped(root, key, after=issuer_element)
    return root
