"""What the browser tests share: Debian's Chromium driven by Playwright, the IdP's web app
(the mountable front-channel app under ``/logout``, and its own final page) served by
uvicorn on 127.0.0.1, and loopback providers that record what the browser sent them."""

from __future__ import annotations

import shutil
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import uvicorn
from playwright.sync_api import Browser, Playwright, sync_playwright
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.routing import Mount, Route

from orchestrator import Runtime
from orchestrator.frontchannel.app import NextUrl, create_app

from .support import LoopbackServer, missing

__all__ = [
    "CHROMIUM",
    "IdpWeb",
    "Recorded",
    "RecordingServer",
    "browser_or_fail",
    "idp_web",
    "launch",
]

#: Debian's Chromium (``apt-get install chromium``; scripts/test installs it).
CHROMIUM = Path("/usr/bin/chromium")
FINAL_PAGE = "/goodbye"


def browser_or_fail() -> Path:
    """The Chromium binary; without it the test fails, naming what to install."""
    if CHROMIUM.exists() or shutil.which("chromium"):
        return CHROMIUM if CHROMIUM.exists() else Path(str(shutil.which("chromium")))
    missing(
        f"{CHROMIUM} is missing",
        "./scripts/test installs Debian's chromium unless LOGOUT_TEST_NO_APT=1 "
        "(or: apt-get install chromium)",
    )


@contextmanager
def launch() -> Iterator[tuple[Playwright, Browser]]:
    """Headless Debian Chromium under Playwright (never Playwright's own browser builds)."""
    binary = browser_or_fail()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(binary), headless=True)
        try:
            yield playwright, browser
        finally:
            browser.close()


@dataclass
class IdpWeb:
    """The IdP's web app on 127.0.0.1: ``/logout`` (the front-channel app) and ``/goodbye``."""

    base_url: str
    finals: list[float]

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    @property
    def final_url(self) -> str:
        return self.url(FINAL_PAGE)

    @property
    def return_url(self) -> str:
        """Where SPs send their LogoutResponse (the IdP's SLO response location)."""
        return self.url("/logout/native/return")


@contextmanager
def idp_web(runtime: Runtime, next_url: NextUrl = FINAL_PAGE) -> Iterator[IdpWeb]:
    """Serve the IdP's web app with uvicorn in a thread until the block ends."""
    finals: list[float] = []

    async def goodbye(request: Request) -> HTMLResponse:
        finals.append(time.monotonic())
        return HTMLResponse("<!doctype html><title>Signed out</title><h1>You are signed out</h1>")

    app = Starlette(
        routes=[
            Route(FINAL_PAGE, goodbye),
            Mount("/logout", app=create_app(runtime, next_url=next_url)),
        ]
    )
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield IdpWeb(f"http://127.0.0.1:{port}", finals)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@dataclass(frozen=True, slots=True)
class Recorded:
    """One request as a loopback provider received it."""

    method: str
    path: str
    query: str
    form: Mapping[str, str]
    at: float

    @property
    def params(self) -> dict[str, str]:
        return dict(parse_qsl(self.query, keep_blank_values=True))


class RecordingServer(LoopbackServer):
    """A loopback provider: records every request, then answers by its ``mode``.

    ``answer``: 200 with :meth:`page` (subclasses say what); ``hang``: never answers (until
    the test ends); ``hang_post``: answers ``HEAD`` and ``GET`` but never a ``POST``.
    """

    def __init__(self, name: str, mode: str = "answer", path: str = "/logout") -> None:
        super().__init__(_Handler)
        self.name = name
        self.mode = mode
        self.path = path
        self.received: list[Recorded] = []

    @property
    def url(self) -> str:
        return f"{self.base_url}{self.path}"

    def requests(self, method: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.received if method is None or r.method == method]

    def page(self, request: Recorded) -> bytes:
        """The body of an answer (HTML)."""
        return b"<!doctype html><title>logged out</title>logged out"

    def hangs(self, method: str) -> bool:
        return self.mode == "hang" or (self.mode == "hang_post" and method == "POST")


class _Handler(BaseHTTPRequestHandler):
    server: RecordingServer

    def _handle(self) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length).decode("ascii", "replace") if length else ""
        form = dict(parse_qsl(body, keep_blank_values=True)) if self.command == "POST" else {}
        request = Recorded(self.command, parts.path, parts.query, form, time.monotonic())
        with self.server.lock:
            self.server.received.append(request)
        if self.server.hangs(self.command):
            self.server.release.wait(60)
            return
        content = b"" if self.command == "HEAD" else self.server.page(request)
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(content)))
        self.end_headers()
        if content:
            self.wfile.write(content)

    do_GET = do_POST = do_HEAD = _handle

    def log_message(self, format: str, *args: Any) -> None:
        pass
