"""Reading XML from the network: a hardened parser and the error every reader raises.

Every XML document that comes from outside (SOAP answers, front-channel SAMLRequest and
SAMLResponse values) is read by :func:`parse_xml`, which opens nothing on the document's say:

1. Size: the input is capped before anything reads it.
2. No DTD: the prolog is read first with expat, which loads nothing external, and a
   ``DOCTYPE`` is refused whole before libxml2 sees the document, in every encoding expat
   reads (its own UTF-8, UTF-16, ISO-8859-1 and US-ASCII, and the single-byte ones Python's
   codecs give it, such as windows-1252); any other encoding is refused. So no entity
   is declared, a ``SYSTEM`` identifier is never opened, and no parameter entity is loaded.
   (libxml2 loads an external subset or parameter entity even with ``load_dtd=False``.)
3. A resolver that refuses everything: should libxml2 still ask for an external resource
   (a file, a FIFO, an ``http://`` URL), :class:`_DenyAll` answers with nothing and the
   document is refused; libxml2's own loader is never reached. ``no_network`` and
   ``resolve_entities=False`` stay as a third wall.
"""

from __future__ import annotations

import xml.parsers.expat
from typing import Any

from lxml import etree

from schemas.errors import LogoutError

__all__ = ["MessageError", "parse_xml"]


class MessageError(LogoutError):
    """A SAML message could not be read or cannot be trusted; the text says why.

    The text never holds the message itself.
    """


_DTD_REFUSED = "has a DTD (DOCTYPE), which is never accepted; nothing it names was loaded"


class _DenyAll(etree.Resolver):
    """Answers every request for an external resource with nothing, and remembers it."""

    def __init__(self) -> None:
        super().__init__()
        self.asked = False

    def resolve(self, system_url: str | None, public_id: str | None, context: Any) -> Any:
        self.asked = True
        return self.resolve_string("", context)


def _parser(resolver: _DenyAll) -> etree.XMLParser:
    parser = etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )
    parser.resolvers.add(resolver)
    return parser


_UNKNOWN_ENCODING = xml.parsers.expat.errors.codes[
    xml.parsers.expat.errors.XML_ERROR_UNKNOWN_ENCODING
]


class _Prolog(Exception):
    """The prolog ended (the root element starts): it held no DTD."""


def _refuse_doctype(data: bytes, what: str) -> None:
    """Read the prolog with expat and refuse a ``DOCTYPE``, before libxml2 reads anything.

    expat loads no external DTD or entity (no handler for them is set) and stops at the root
    element's start tag, so this costs a few microseconds. A prolog expat cannot read
    (malformed, or in an encoding it does not know) is refused here too, so libxml2 never
    reads a prolog this check did not.
    """

    def doctype(*_: object) -> None:
        raise MessageError(f"{what} {_DTD_REFUSED}")

    def root(*_: object) -> None:
        raise _Prolog

    prolog = xml.parsers.expat.ParserCreate()
    prolog.StartDoctypeDeclHandler = doctype
    prolog.StartElementHandler = root
    try:
        prolog.Parse(data, True)
    except _Prolog:
        return
    except xml.parsers.expat.ExpatError as exc:
        if exc.code == _UNKNOWN_ENCODING:
            raise MessageError(
                f"{what} declares an encoding other than UTF-8, UTF-16, ISO-8859-1 or US-ASCII"
            ) from None
        message = xml.parsers.expat.errors.messages[exc.code]
        raise MessageError(
            f"{what} is not well-formed XML: {message}, line {exc.lineno}, column {exc.offset}"
        ) from None
    except (LookupError, ValueError):  # an encoding Python's codecs do not know
        raise MessageError(
            f"{what} declares an encoding other than UTF-8, UTF-16, ISO-8859-1 or US-ASCII"
        ) from None


def parse_xml(data: bytes, *, limit: int, what: str = "message") -> etree._Element:
    """Parse ``data`` (at most ``limit`` bytes) and return its root element.

    Raises :class:`MessageError` for anything too large, malformed, carrying a DTD, or
    naming an external resource; nothing the document names is ever opened.
    """
    if len(data) >= limit:
        raise MessageError(f"{what} is {len(data)} bytes or more, over the {limit} byte limit")
    if not data.strip():
        raise MessageError(f"{what} is empty")
    _refuse_doctype(data, what)
    resolver = _DenyAll()
    try:
        # A fresh parser per call: lxml parsers are not thread-safe.
        root = etree.fromstring(data, parser=_parser(resolver))
    except etree.XMLSyntaxError as exc:
        if resolver.asked:
            raise MessageError(f"{what} names an external resource, which is never loaded") from exc
        raise MessageError(f"{what} is not well-formed XML: {exc.msg}") from exc
    if resolver.asked:
        raise MessageError(f"{what} names an external resource, which is never loaded")
    docinfo = root.getroottree().docinfo
    if docinfo.doctype or docinfo.internalDTD is not None or docinfo.externalDTD is not None:
        raise MessageError(f"{what} {_DTD_REFUSED}")
    if any(isinstance(node, etree._Entity) for node in root.iter()):
        raise MessageError(f"{what} uses entity references, which are never accepted")
    return root
