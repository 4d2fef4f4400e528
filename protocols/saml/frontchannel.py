"""An SP's LogoutResponse brought back by the browser after a native step (HTTP-POST or
HTTP-Redirect), checked against the LogoutRequest that step carried.

The request's ``ID`` is read back from the step itself (the signed XML of a POST form,
or the DEFLATEd ``SAMLRequest`` of a redirect URL), so nothing needs to be remembered
between the step and its answer.
"""

from __future__ import annotations

import base64
import binascii
import zlib
from collections.abc import Mapping
from urllib.parse import parse_qsl, unquote_plus, urlsplit

import xmlsec
from lxml import etree

from protocols.base import FrontchannelAnswer, FrontchannelEntry
from protocols.saml.logout_response import LogoutStatus, read_logout_response
from protocols.saml.parsing import MessageError, parse_xml
from protocols.saml.refusals import KeyMismatchError
from protocols.saml.settings import SamlProviderSettings
from protocols.saml.signing import signature_method
from protocols.saml.trust import Trust

__all__ = ["read_frontchannel_answer", "sent_request_id"]


def _b64(value: str, what: str) -> bytes:
    """Strict base64; line breaks (some SPs wrap at 76 characters) are ignored."""
    try:
        return base64.b64decode("".join(value.split()).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise MessageError(f"{what} is not base64") from exc


def _inflate(data: bytes, limit: int, what: str) -> bytes:
    inflater = zlib.decompressobj(-15)
    try:
        raw = inflater.decompress(data, limit)
    except zlib.error as exc:
        raise MessageError(f"{what} is not raw DEFLATE data") from exc
    if inflater.unconsumed_tail:
        raise MessageError(f"{what} inflates to more than the {limit} byte limit")
    return raw


def _root(data: bytes, limit: int, what: str) -> etree._Element:
    return parse_xml(data, limit=limit, what=what)


def sent_request_id(sent: FrontchannelEntry, *, limit: int) -> str:
    """The ``ID`` of the LogoutRequest a native step carried (POST form or redirect URL)."""
    posted = sent.form.get("SAMLRequest")
    if posted is not None:
        root = _root(_b64(posted, "the step's SAMLRequest"), limit, "the request")
    else:
        fields = dict(parse_qsl(urlsplit(sent.url).query))
        if "SAMLRequest" not in fields:
            raise MessageError("the step carries no SAMLRequest")
        deflated = _b64(fields["SAMLRequest"], "the step's SAMLRequest")
        root = _root(_inflate(deflated, limit, "the request"), limit, "the request")
    request_id = root.get("ID")
    if not request_id:
        raise MessageError("the step's LogoutRequest has no ID")
    return request_id


def _raw_fields(query: str) -> dict[str, str]:
    """Each parameter's value exactly as sent (still URL-encoded); a repeated one is refused."""
    fields: dict[str, str] = {}
    for piece in query.split("&"):
        if not piece:
            continue
        name, _, value = piece.partition("=")
        name = unquote_plus(name)
        if name in fields:
            raise MessageError(f"the query repeats {name}")
        fields[name] = value
    return fields


def _verify_query(raw: Mapping[str, str], trust: Trust) -> None:
    """Bindings §3.4.4.1: the signature covers ``SAMLResponse=..&RelayState=..&SigAlg=..``
    as they were encoded by the sender."""
    what = "the query signature"
    transform = signature_method(unquote_plus(raw.get("SigAlg", "")), trust, what)
    if not trust.keys:
        raise MessageError("no certificate to verify the query signature with")
    signed = "&".join(
        f"{name}={raw[name]}" for name in ("SAMLResponse", "RelayState", "SigAlg") if name in raw
    ).encode("ascii", "replace")
    signature = _b64(unquote_plus(raw["Signature"]), "Signature")
    for key in trust.keys:
        context = xmlsec.SignatureContext()
        context.key = key
        try:
            context.verify_binary(signed, transform, signature)
        except xmlsec.Error:
            continue
        return
    raise KeyMismatchError(
        what,
        trust.fingerprints,
        None,
        tail="a query carries no certificate: another key and an altered query look alike",
    )


def read_frontchannel_answer(
    sp: SamlProviderSettings,
    sent: FrontchannelEntry,
    answer: FrontchannelAnswer,
    *,
    limit: int,
) -> LogoutStatus:
    """Check the SP's LogoutResponse to the step ``sent`` and return its status.

    HTTP-POST: ``SAMLResponse`` in the form, base64 of the XML (signed enveloped when the
    SP signs). HTTP-Redirect: ``SAMLResponse`` in the query, DEFLATEd; its signature, if
    any, is over the query. Either way the signature must be there when the SP's settings
    require it, and ``InResponseTo`` (the step's request ``ID``), ``Issuer`` (the SP) and
    ``Version`` must match. Raises :class:`MessageError` saying what is wrong.
    """
    request_id = sent_request_id(sent, limit=limit)
    trust = sp.trust
    if answer.method == "POST":
        value = answer.form.get("SAMLResponse")
        if not value:
            raise MessageError("the POST carries no SAMLResponse")
        root = _root(_b64(value, "SAMLResponse"), limit, "the LogoutResponse")
        required = sp.require_signed_responses
    else:
        raw = _raw_fields(answer.query)
        if "SAMLResponse" not in raw:
            raise MessageError("the query carries no SAMLResponse")
        deflated = _b64(unquote_plus(raw["SAMLResponse"]), "SAMLResponse")
        root = _root(_inflate(deflated, limit, "the LogoutResponse"), limit, "the LogoutResponse")
        if "Signature" in raw and trust.certificates:
            _verify_query(raw, trust)
        elif sp.require_signed_responses:  # it implies a certificate: so no signature here
            raise MessageError("the query is not signed, and require_signed_responses is set")
        required = False  # a Redirect-binding message is signed over the query, not inside
    return read_logout_response(
        root,
        request_id=request_id,
        sp_entity_id=sp.entity_id,
        trust=trust,
        require_signature=required,
    )
