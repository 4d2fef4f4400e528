"""Reading XML from the network: a hardened parser and the error every reader raises.

No DTD is loaded or allowed (a document with a ``DOCTYPE`` is refused whole, so no entity
is ever declared, let alone expanded), nothing is fetched from the network, and the input
is capped in size before parsing starts.
"""

from __future__ import annotations

from lxml import etree

from schemas.errors import LogoutError

__all__ = ["MessageError", "parse_xml"]


class MessageError(LogoutError):
    """A SAML message could not be read or cannot be trusted; the text says why.

    The text never holds the message itself.
    """


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


def parse_xml(data: bytes, *, limit: int, what: str = "message") -> etree._Element:
    """Parse ``data`` (at most ``limit`` bytes) and return its root element.

    Raises :class:`MessageError` for anything too large, malformed, or carrying a DTD.
    """
    if len(data) >= limit:
        raise MessageError(f"{what} is {len(data)} bytes or more, over the {limit} byte limit")
    if not data.strip():
        raise MessageError(f"{what} is empty")
    try:
        # A fresh parser per call: lxml parsers are not thread-safe.
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise MessageError(f"{what} is not well-formed XML: {exc.msg}") from exc
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise MessageError(f"{what} has a DTD (DOCTYPE), which is never accepted")
    if any(isinstance(node, etree._Entity) for node in root.iter()):
        raise MessageError(f"{what} uses entity references, which are never accepted")
    return root
