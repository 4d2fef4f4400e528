"""``<samlp:LogoutResponse>`` (SAML Core §3.7.2): reading an SP's, building the IdP's own."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

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

__all__ = ["LogoutStatus", "logout_response", "read_logout_response"]

_P = f"{{{PROTOCOL_NS}}}"
_A = f"{{{ASSERTION_NS}}}"
_NSMAP = {"samlp": PROTOCOL_NS, "saml": ASSERTION_NS}


@dataclass(frozen=True, slots=True)
class LogoutStatus:
    """A response's status: top-level code, second-level code, message (SP-written text)."""

    code: str
    subcode: str | None = None
    message: str | None = None

    @property
    def success(self) -> bool:
        return self.code == STATUS_SUCCESS

    def __str__(self) -> str:
        codes = " / ".join(c for c in (self.code, self.subcode) if c)
        return f"{codes}: {self.message}" if self.message else codes


def _status(response: etree._Element) -> LogoutStatus:
    code = response.find(f"{_P}Status/{_P}StatusCode")
    value = code.get("Value") if code is not None else None
    if code is None or not value:
        raise MessageError("LogoutResponse has no Status/StatusCode Value")
    sub = code.find(f"{_P}StatusCode")
    subcode = (sub.get("Value") or "").strip() if sub is not None else ""
    message = " ".join((response.findtext(f"{_P}Status/{_P}StatusMessage") or "").split())
    return LogoutStatus(value.strip(), subcode or None, message[:200] or None)


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
