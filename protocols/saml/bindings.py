"""SAML bindings (SAML Bindings §3.2 SOAP, §3.4 HTTP-Redirect, §3.5 HTTP-POST).

Each function turns a built message into what goes over the wire, or reads it back.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Mapping
from urllib.parse import quote_plus, unquote_plus, urlsplit, urlunsplit

import xmlsec
from lxml import etree

from protocols.saml.parsing import MessageError
from protocols.saml.signing import enveloped_signature, sign_binary
from protocols.saml.uris import RSA_SHA256, SOAP_ACTION, SOAP_ENV_NS

__all__ = [
    "MAX_RELAY_STATE",
    "SOAP_HEADERS",
    "post_value",
    "redirect_url",
    "serialize",
    "soap_body",
    "soap_envelope",
]

#: Bytes a ``RelayState`` may hold (Bindings §3.4.3 and §3.5.3).
MAX_RELAY_STATE = 80

#: Headers of a SAML SOAP request: SOAP 1.1, ``SOAPAction`` as a quoted string.
SOAP_HEADERS: Mapping[str, str] = {
    "Content-Type": "text/xml; charset=utf-8",
    "SOAPAction": f'"{SOAP_ACTION}"',
}

_SOAP = f"{{{SOAP_ENV_NS}}}"
_SAML_PARAMETERS = frozenset({"SAMLRequest", "SAMLResponse", "RelayState", "SigAlg", "Signature"})


def serialize(element: etree._Element, *, pretty: bool = False) -> bytes:
    """UTF-8 bytes of ``element``, with the XML declaration (indented when ``pretty``)."""
    return etree.tostring(element, xml_declaration=True, encoding="UTF-8", pretty_print=pretty)


def soap_envelope(message: etree._Element) -> bytes:
    """``message`` (signed already) as the only child of a SOAP 1.1 ``Body``.

    Exclusive C14N makes the signature indifferent to the envelope around it.
    """
    envelope = etree.Element(f"{_SOAP}Envelope", nsmap={"SOAP-ENV": SOAP_ENV_NS})
    etree.SubElement(envelope, f"{_SOAP}Body").append(message)
    return serialize(envelope)


def soap_body(envelope: etree._Element) -> etree._Element:
    """The one element in a SOAP 1.1 envelope's ``Body``; a SOAP fault is a MessageError."""
    if envelope.tag != f"{_SOAP}Envelope":
        raise MessageError(f"not a SOAP 1.1 envelope (root element {etree.QName(envelope).text})")
    bodies = envelope.findall(f"{_SOAP}Body")
    if len(bodies) != 1:
        raise MessageError(f"the SOAP envelope has {len(bodies)} Body elements, not 1")
    children = [child for child in bodies[0] if isinstance(child.tag, str)]
    if len(children) != 1:
        raise MessageError(f"the SOAP Body holds {len(children)} elements, not 1")
    (child,) = children
    if child.tag == f"{_SOAP}Fault":
        code = (child.findtext("faultcode") or "").strip()[:100]
        text = (child.findtext("faultstring") or "").strip()[:200]
        raise MessageError(f"SOAP fault {code}: {text}")
    return child


def post_value(message: etree._Element) -> str:
    """The ``SAMLRequest``/``SAMLResponse`` form value of the POST binding: base64, no DEFLATE."""
    return base64.b64encode(serialize(message)).decode("ascii")


def _deflated(message: etree._Element) -> str:
    if enveloped_signature(message) is not None:
        raise ValueError("the Redirect binding carries no XML signature: build it unsigned")
    compressor = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -15)
    raw = compressor.compress(etree.tostring(message, encoding="UTF-8")) + compressor.flush()
    return base64.b64encode(raw).decode("ascii")


def redirect_url(
    url: str,
    message: etree._Element,
    *,
    parameter: str = "SAMLRequest",
    relay_state: str | None = None,
    key: xmlsec.Key | None = None,
) -> str:
    """``url`` carrying ``message`` by the HTTP-Redirect binding, signed when ``key`` is given.

    ``message`` is DEFLATEd (raw), base64-encoded and URL-encoded into ``parameter``; the
    signature (RSA-SHA256) covers exactly ``parameter=..&RelayState=..&SigAlg=..`` as sent.
    The URL's own query is kept, ahead of these parameters (any SAML ones in it dropped).
    """
    if relay_state is not None and len(relay_state.encode("utf-8")) > MAX_RELAY_STATE:
        raise ValueError(f"RelayState is over {MAX_RELAY_STATE} bytes")
    fields = [(parameter, _deflated(message))]
    if relay_state is not None:
        fields.append(("RelayState", relay_state))
    if key is not None:
        fields.append(("SigAlg", RSA_SHA256))
    query = "&".join(f"{name}={quote_plus(value)}" for name, value in fields)
    if key is not None:
        signature = base64.b64encode(sign_binary(query.encode("ascii"), key)).decode("ascii")
        query += f"&Signature={quote_plus(signature)}"
    parts = urlsplit(url)
    own = [  # kept byte for byte
        piece
        for piece in parts.query.split("&")
        if piece and unquote_plus(piece.split("=", 1)[0]) not in _SAML_PARAMETERS
    ]
    return urlunsplit(parts._replace(query="&".join([*own, query])))
