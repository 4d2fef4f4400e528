"""The SAML parser opens nothing a hostile document names: no file, no FIFO, no URL.

Each document names a real resource: a file holding a marker, a FIFO (whose reader would
block until a writer comes), and an HTTP server on 127.0.0.1 that records every request.
The documents reach the parser as an SP's SOAP answer would (through the SAML handler) and
directly; after each, the marker is absent from the error, no reader opened the FIFO, and
the server was asked nothing.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from lxml import etree

from protocols import BackchannelResponse
from protocols.saml import SamlHandler, parse_xml
from protocols.saml.parsing import MessageError, _DenyAll, _parser
from schemas.errors import PermanentDeliveryError
from tests.saml_support import KeyPair, context, handler_with, make_pair, provider
from tests.saml_support import provider_session as saml_session

MARKER = "MARKER-7f3a-never-read"
ENVELOPE = (
    '<soap11:Envelope xmlns:soap11="http://schemas.xmlsoap.org/soap/envelope/">'
    "<soap11:Body>{body}</soap11:Body></soap11:Envelope>"
)


class _Recorder(BaseHTTPRequestHandler):
    """Answers a DTD that would declare an entity, and records that it was asked."""

    asked: list[str]

    def do_GET(self) -> None:
        self.server.asked.append(self.path)  # type: ignore[attr-defined]
        body = b"<!ENTITY % leak \"<!ENTITY x 'asked'>\"> %leak;"
        self.send_response(200)
        self.send_header("Content-Type", "application/xml-dtd")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_: object) -> None:
        return


@pytest.fixture
def server() -> Iterator[ThreadingHTTPServer]:
    """An HTTP server on 127.0.0.1; ``server.asked`` lists the paths requested."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    httpd.asked = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


@pytest.fixture
def secret(tmp_path: Path) -> Path:
    """A file holding the marker."""
    path = tmp_path / "secret.txt"
    path.write_text(MARKER + "\n")
    return path


@pytest.fixture
def fifo(tmp_path: Path) -> Path:
    """A FIFO: opening it for reading blocks until a writer opens it."""
    path = tmp_path / "pipe"
    os.mkfifo(path)
    return path


def _documents(uri: str) -> dict[str, bytes]:
    """Every way a document can make a parser load ``uri``."""
    body = ENVELOPE.format(body="<r>&x;</r>")
    return {
        "external subset": f'<!DOCTYPE r SYSTEM "{uri}"><r/>'.encode(),
        "public id": f'<!DOCTYPE r PUBLIC "-//x//y" "{uri}"><r/>'.encode(),
        "parameter entity": f'<!DOCTYPE r [<!ENTITY % p SYSTEM "{uri}"> %p;]><r/>'.encode(),
        "general entity": f'<!DOCTYPE r [<!ENTITY x SYSTEM "{uri}">]>{body}'.encode(),
        "utf-16": (
            f'<?xml version="1.0" encoding="UTF-16"?><!DOCTYPE r SYSTEM "{uri}"><r/>'
        ).encode("utf-16"),
    }


def _fifo_has_reader(path: Path) -> bool:
    """Whether anyone holds the FIFO open for reading (a write-only, non-blocking open
    succeeds only then); a reader found is released with a line, so nothing hangs."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # no reader
            return False
        raise
    try:
        os.write(fd, b"released\n")
    finally:
        os.close(fd)
    return True


def _in_thread(call: Callable[[], object], timeout: float = 5.0) -> BaseException | None:
    """Run ``call`` in a thread; return what it raised. Fails when it is still running
    after ``timeout`` (a parser blocked on a FIFO)."""
    raised: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            raised.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(timeout)
    assert not thread.is_alive(), "the parser is blocked: it opened the resource"
    return raised[0] if raised else None


@pytest.fixture(scope="module")
def handler(tmp_path_factory: pytest.TempPathFactory) -> SamlHandler:
    """The IdP's SAML handler."""
    keys: KeyPair = make_pair(tmp_path_factory.mktemp("keys"), "idp")
    return handler_with(keys, tmp_path_factory.mktemp("data"))


def _soap_answer(handler: SamlHandler, content: bytes) -> BaseException | None:
    """The handler reading ``content`` as an SP's 200 answer to a LogoutRequest."""
    sp = provider(handler)
    ctx = context()
    session = saml_session()
    request = handler.backchannel_request(sp, session, ctx)
    response = BackchannelResponse(200, {"content-type": "text/xml"}, content)
    return _in_thread(lambda: handler.interpret_response(sp, session, request, response, ctx))


def _refused(raised: BaseException | None) -> str:
    assert isinstance(raised, MessageError | PermanentDeliveryError), repr(raised)
    text = str(raised)
    assert MARKER not in text
    assert "has a DTD (DOCTYPE), which is never accepted; nothing it names was loaded" in text
    return text


def test_a_file_named_by_the_document_is_never_read(handler: SamlHandler, secret: Path) -> None:
    """file:// in every DTD form: refused with the DTD named, the file's text nowhere."""
    for name, document in _documents(secret.as_uri()).items():
        _refused(_in_thread(lambda d=document: parse_xml(d, limit=65536)))  # type: ignore[misc]
        assert "the SOAP response" in _refused(_soap_answer(handler, document)), name


def test_a_fifo_named_by_the_document_is_never_opened(handler: SamlHandler, fifo: Path) -> None:
    """A FIFO in every DTD form: the parse returns at once and nobody opened the FIFO."""
    for document in _documents(fifo.as_uri()).values():
        _refused(_in_thread(lambda d=document: parse_xml(d, limit=65536)))  # type: ignore[misc]
        assert not _fifo_has_reader(fifo)
        _refused(_soap_answer(handler, document))
        assert not _fifo_has_reader(fifo)


def test_a_url_named_by_the_document_is_never_fetched(
    handler: SamlHandler, server: ThreadingHTTPServer
) -> None:
    """http:// on a live server in every DTD form: refused, and the server was asked nothing."""
    host, port = server.server_address[:2]
    for document in _documents(f"http://{host!s}:{port}/x.dtd").values():
        _refused(_in_thread(lambda d=document: parse_xml(d, limit=65536)))  # type: ignore[misc]
        _refused(_soap_answer(handler, document))
    assert server.asked == []  # type: ignore[attr-defined]


def test_the_second_wall_alone_opens_nothing(
    secret: Path, fifo: Path, server: ThreadingHTTPServer
) -> None:
    """Without the DOCTYPE check, libxml2 with the denying resolver still opens nothing:
    the resolver is asked for each resource, answers nothing, and no reader, request or
    marker appears."""
    host, port = server.server_address[:2]
    for uri in (secret.as_uri(), fifo.as_uri(), f"http://{host!s}:{port}/x.dtd"):
        for name, document in _documents(uri).items():
            resolver = _DenyAll()
            parsed: list[etree._Element] = []

            def parse(data: bytes = document, denier: _DenyAll = resolver) -> None:
                parsed.append(etree.fromstring(data, _parser(denier)))  # noqa: B023

            raised = _in_thread(parse)
            assert raised is None or isinstance(raised, etree.XMLSyntaxError), repr(raised)
            # An undeclared-for-use general entity is not even asked for (resolve_entities).
            assert resolver.asked or name == "general entity", name
            assert all(MARKER not in etree.tostring(root, encoding=str) for root in parsed)
            assert not _fifo_has_reader(fifo)
    assert server.asked == []  # type: ignore[attr-defined]


def test_a_clean_document_still_parses() -> None:
    """The checks refuse DTDs only: a plain SOAP envelope parses, in UTF-8 and UTF-16."""
    envelope = ENVELOPE.format(body="<r a='1'/>")
    for data in (
        envelope.encode(),
        ('<?xml version="1.0" encoding="UTF-16"?>' + envelope).encode("utf-16"),
    ):
        root = parse_xml(data, limit=65536)
        assert root.tag == "{http://schemas.xmlsoap.org/soap/envelope/}Envelope"


def test_an_encoding_the_check_cannot_read_is_refused() -> None:
    """A prolog in an encoding expat does not know is refused before libxml2 reads it."""
    data = '<?xml version="1.0" encoding="IBM037"?><r/>'.encode("cp037")
    with pytest.raises(MessageError, match="not well-formed XML"):
        parse_xml(data, limit=65536)
    with pytest.raises(MessageError, match="encoding other than UTF-8"):
        parse_xml(b'<?xml version="1.0" encoding="x-unknown"?><r/>', limit=65536)
