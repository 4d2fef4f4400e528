"""Back-channel logouts through a plugin handler found by entry point, over real HTTP."""

from __future__ import annotations

import os
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from sqlalchemy import select

from orchestrator.store import TERMINAL_DELIVERY_STATUSES, AuditRow, Delivery

from .servers import serving
from .support import CLI, WORKER_ARGS, Stack, closed_port, logout_event

pytestmark = pytest.mark.integration

PLUGIN_MODULE = '''\
"""A test protocol: POST ``session=<sid>`` to the provider's ``url``."""

import protocols


class HttpProto(protocols.ProtocolHandler):
    protocol = "itproto"

    def backchannel_request(self, provider, session, context):
        return protocols.BackchannelRequest(
            url=provider.settings["url"],
            content=f"session={session.identifiers.get('sid')}".encode(),
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
'''

BROKEN_MODULE = 'raise ImportError("it_broken cannot be imported (on purpose)")\n'

# Retry fast, give up after three attempts, and call one second without an answer a timeout.
DELIVERY_SETTINGS = {
    "LOGOUT_DELIVERY_TIMEOUT": "1",
    "LOGOUT_RETRY_INITIAL_DELAY": "0.2",
    "LOGOUT_RETRY_MAX_DELAY": "2",
    "LOGOUT_DELIVERY_MAX_ATTEMPTS": "3",
}

PATHS = ("ok", "nocontent", "bad", "flaky", "busy", "redirect", "hang")


def write_plugin(directory: Path, module: str, dist: str, entry_point: str, code: str) -> Path:
    """An installed-looking distribution: ``module.py`` plus its ``.dist-info``."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{module}.py").write_text(code, encoding="utf-8")
    info = directory / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n", encoding="utf-8"
    )
    (info / "entry_points.txt").write_text(
        f"[logout_orchestrator.protocols]\n{entry_point}\n", encoding="utf-8"
    )
    return directory


def python_path(*directories: Path) -> str:
    """PYTHONPATH with ``directories`` first."""
    existing = os.environ.get("PYTHONPATH")
    parts = [str(d) for d in directories] + ([existing] if existing else [])
    return os.pathsep.join(parts)


class Recorder(ThreadingHTTPServer):
    """A provider's back-channel endpoint that remembers every request it got."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Endpoint)
        self.lock = threading.Lock()
        self.requests: list[tuple[str, float, bytes]] = []
        self.answered: list[tuple[str, float, int]] = []
        self.methods: list[str] = []
        self.release = threading.Event()

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"

    def hits(self) -> Counter[str]:
        with self.lock:
            return Counter(path for path, _, _ in self.requests)

    def times(self, path: str) -> list[float]:
        with self.lock:
            return [at for p, at, _ in self.requests if p == path]

    def answer_times(self, path: str) -> list[float]:
        with self.lock:
            return [at for p, at, _ in self.answered if p == path]

    def bodies(self, path: str) -> set[bytes]:
        with self.lock:
            return {body for p, _, body in self.requests if p == path}


class _Endpoint(BaseHTTPRequestHandler):
    server: Recorder

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.requests.append((self.path, time.monotonic(), body))
            self.server.methods.append(self.command)
            seen = sum(1 for p, _, _ in self.server.requests if p == self.path)
        try:
            match self.path:
                case "/ok":
                    self._reply(200)
                case "/nocontent":
                    self._reply(204)
                case "/bad":
                    self._reply(400)
                case "/badonce":  # refused, then fixed: what an operator retries
                    self._reply(400 if seen == 1 else 200)
                case "/flaky":
                    self._reply(503 if seen == 1 else 200)
                case "/busy":
                    self._reply(429, {"Retry-After": "1"}) if seen == 1 else self._reply(200)
                case "/slowbusy":
                    if seen == 1:
                        time.sleep(0.6)  # a slow answer: Retry-After counts from here
                        self._reply(429, {"Retry-After": "1"})
                    else:
                        self._reply(200)
                case "/redirect":
                    self._reply(302, {"Location": f"{self.server.base_url}/ok"})
                case "/hang":
                    self.server.release.wait(10)
                    self._reply(200)
                case _:
                    self._reply(404)
        except OSError:
            pass  # the client gave up (the timeout under test)

    # Any other method is recorded and answered the same way (a followed 302 turns into GET).
    do_GET = do_PUT = do_HEAD = do_DELETE = do_POST

    def _reply(self, status: int, headers: dict[str, str] | None = None) -> None:
        with self.server.lock:
            self.server.answered.append((self.path, time.monotonic(), status))
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if status != 204:
            self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def with_http_providers(
    stack: Stack, tmp_path: Path, urls: dict[str, str], session_id: str
) -> dict[str, str]:
    """Install the test's ``itproto`` plugin, load one provider ``rp-<name>`` per URL, and seed
    ``session_id`` (alice) with a provider session on each; the plugin's environment."""
    stack.protocols = ["itproto"]
    plugin = write_plugin(
        tmp_path / "plugin",
        "it_httpproto",
        "it-httpproto",
        "itproto = it_httpproto:HttpProto",
        PLUGIN_MODULE,
    )
    plugin_env = {"PYTHONPATH": python_path(plugin)}
    toml = "".join(
        f'[[providers]]\nname = "rp-{name}"\nprotocol = "itproto"\nurl = "{url}"\n\n'
        for name, url in urls.items()
    )
    providers_file = tmp_path / "providers.toml"
    providers_file.write_text(toml, encoding="utf-8")
    loaded = stack.cli("providers", "load", str(providers_file), env=plugin_env)
    assert loaded.returncode == 0, loaded.stderr
    assert "warning" not in loaded.stderr, "the plugin handler was not found by entry point"
    stack.seed(
        records=[
            {"kind": "session", "session_id": session_id, "user_id": "alice"},
            *(
                {
                    "kind": "provider_session",
                    "session_id": session_id,
                    "provider": f"rp-{name}",
                    "sid": f"sid-{name}",
                }
                for name in urls
            ),
        ]
    )
    return plugin_env


@pytest.fixture
def endpoint() -> Iterator[Recorder]:
    """A real HTTP server on 127.0.0.1 and an ephemeral port."""
    with serving(Recorder()) as server:
        try:
            yield server
        finally:
            server.release.set()  # before the shutdown: a /hang answer must not wait it out


def test_backchannel_outcomes_over_http(stack: Stack, tmp_path: Path, endpoint: Recorder) -> None:
    """Each HTTP answer leads to the right outcome, attempt count, retries and audit."""
    urls = {name: f"{endpoint.base_url}/{name}" for name in PATHS}
    urls["closed"] = f"http://127.0.0.1:{closed_port()}/logout"
    plugin_env = with_http_providers(stack, tmp_path, urls, "s-http")
    stack.start_worker({**DELIVERY_SETTINGS, **plugin_env})
    event = logout_event("s-http")
    with stack.publisher() as publisher:
        publisher.publish(event)

    def settled() -> bool:
        with stack.db() as db:
            statuses = list(db.scalars(select(Delivery.status)))
        return len(statuses) == len(urls) and set(statuses) <= set(TERMINAL_DELIVERY_STATUSES)

    stack.wait_for(settled, what="every delivery to reach a final status", timeout=60)

    with stack.db() as db:
        deliveries = {d.provider.removeprefix("rp-"): d for d in db.scalars(select(Delivery))}
        retrying = [
            a for a in db.scalars(select(AuditRow).where(AuditRow.type == "delivery.retrying"))
        ]
        finals = {
            (a.provider or "").removeprefix("rp-"): a.type
            for a in db.scalars(
                select(AuditRow).where(
                    AuditRow.type.in_(("delivery.succeeded", "delivery.failed", "delivery.skipped"))
                )
            )
        }
    outcome = {name: (d.status, d.attempts, d.last_status_code) for name, d in deliveries.items()}
    assert outcome["ok"] == ("succeeded", 1, 200), outcome
    assert outcome["nocontent"] == ("succeeded", 1, 204), outcome
    assert outcome["bad"] == ("failed", 1, 400), outcome
    assert outcome["flaky"] == ("succeeded", 2, 200), outcome
    assert outcome["busy"] == ("succeeded", 2, 200), outcome
    assert outcome["redirect"] == ("failed", 1, 302), outcome
    assert outcome["hang"][:2] == ("failed", 3), outcome
    assert outcome["closed"][:2] == ("failed", 3), outcome
    assert "3 attempts" in (deliveries["hang"].last_error or ""), deliveries["hang"].last_error
    assert "3 attempts" in (deliveries["closed"].last_error or "")
    assert finals == {
        "ok": "delivery.succeeded",
        "nocontent": "delivery.succeeded",
        "bad": "delivery.failed",
        "flaky": "delivery.succeeded",
        "busy": "delivery.succeeded",
        "redirect": "delivery.failed",
        "hang": "delivery.failed",
        "closed": "delivery.failed",
    }

    retries = Counter((a.provider or "").removeprefix("rp-") for a in retrying)
    assert retries == Counter({"flaky": 1, "busy": 1, "hang": 2, "closed": 2}), retries
    errors = {(a.provider or "").removeprefix("rp-"): a.detail.get("error", "") for a in retrying}
    assert all(errors.values()), f"a delivery.retrying record has no detail.error: {errors}"
    assert "503" in errors["flaky"]
    assert "429" in errors["busy"]
    busy_retry = next(a for a in retrying if a.provider == "rp-busy")
    assert busy_retry.detail.get("retry_after") == 1.0

    expected_hits = Counter(
        {"/ok": 1, "/nocontent": 1, "/bad": 1, "/flaky": 2, "/busy": 2, "/redirect": 1, "/hang": 3}
    )
    # The last /hang attempt is recorded failed when the client gives up, which can be before
    # the loaded server's handler thread has even read that request: let it catch up.
    deadline = time.monotonic() + 30
    while endpoint.hits().total() < expected_hits.total() and time.monotonic() < deadline:
        time.sleep(0.05)
    hits = endpoint.hits()
    # A timed-out attempt need not have reached the server (the client gives up after 1 s,
    # wherever the request is by then): /hang is never asked more than 3 times, and at least
    # once; every other endpoint exactly as often as its outcome needs.
    assert 1 <= hits.pop("/hang", 0) <= expected_hits.pop("/hang"), endpoint.hits()
    assert hits == expected_hits, (
        "a redirect was followed, or a request was sent too often or not at all"
    )
    assert set(endpoint.methods) == {"POST"}, endpoint.methods
    for name in PATHS:
        assert endpoint.bodies(f"/{name}") == {f"session=sid-{name}".encode()}
    first, second = endpoint.times("/busy")
    assert second - first >= 0.9, (
        f"Retry-After: 1 not honoured: retried after {second - first:.3f} s"
    )


def test_retry_after_counts_from_the_answer(
    stack: Stack, tmp_path: Path, endpoint: Recorder
) -> None:
    """A slow 429 with ``Retry-After: 1`` is not retried until 1 s after that answer arrived."""
    stack.protocols = ["itproto"]
    plugin = write_plugin(
        tmp_path / "plugin",
        "it_httpproto",
        "it-httpproto",
        "itproto = it_httpproto:HttpProto",
        PLUGIN_MODULE,
    )
    plugin_env = {"PYTHONPATH": python_path(plugin)}
    providers_file = tmp_path / "providers.toml"
    providers_file.write_text(
        f'[[providers]]\nname = "rp-slow"\nprotocol = "itproto"\n'
        f'url = "{endpoint.base_url}/slowbusy"\n',
        encoding="utf-8",
    )
    loaded = stack.cli("providers", "load", str(providers_file), env=plugin_env)
    assert loaded.returncode == 0, loaded.stderr
    stack.seed(
        records=[
            {"kind": "session", "session_id": "s-slow", "user_id": "bob"},
            {"kind": "provider_session", "session_id": "s-slow", "provider": "rp-slow", "sid": "x"},
        ]
    )
    stack.start_worker({**DELIVERY_SETTINGS, **plugin_env})
    with stack.publisher() as publisher:
        publisher.publish(logout_event("s-slow"))

    def settled() -> bool:
        with stack.db() as db:
            return db.scalar(select(Delivery.status)) in TERMINAL_DELIVERY_STATUSES

    stack.wait_for(settled, what="the delivery to reach a final status", timeout=60)
    with stack.db() as db:
        delivery = db.scalars(select(Delivery)).one()
    assert (delivery.status, delivery.attempts) == ("succeeded", 2)
    (answered,) = endpoint.answer_times("/slowbusy")[:1]
    retried = endpoint.times("/slowbusy")[1]
    assert retried - answered >= 0.95, (
        f"retried {retried - answered:.3f} s after a 429 with Retry-After: 1 (README: never "
        "earlier than Retry-After)"
    )


def test_worker_refuses_to_start_with_a_broken_handler(stack: Stack, tmp_path: Path) -> None:
    """An enabled handler that fails to import stops the worker at start, naming the protocol."""
    plugin = write_plugin(
        tmp_path / "broken",
        "it_broken",
        "it-broken",
        "itbroken = it_broken:Handler",
        BROKEN_MODULE,
    )
    try:
        result = subprocess.run(
            [str(CLI), *WORKER_ARGS],
            env=stack.env({"PYTHONPATH": python_path(plugin), "LOGOUT_LOG_LEVEL": "INFO"}),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the worker started despite a broken handler:\n{exc.stderr!r}")
    assert result.returncode != 0
    assert "itbroken" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr, result.stderr


def test_worker_refuses_what_the_egress_policy_refuses_without_sending(
    stack: Stack, tmp_path: Path, endpoint: Recorder
) -> None:
    """A worker whose egress_allow is empty refuses a listening RP on 127.0.0.1 (and its
    alias localhost): one attempt, failed for good with the policy named in the audit
    trail, and the RP receives nothing. (With 127.0.0.1 allowed, the test above is served.)"""
    port = endpoint.server_address[1]
    urls = {"direct": f"http://127.0.0.1:{port}/ok", "alias": f"http://localhost:{port}/ok"}
    plugin_env = with_http_providers(stack, tmp_path, urls, "s-egress")
    stack.start_worker({**DELIVERY_SETTINGS, **plugin_env, "LOGOUT_EGRESS_ALLOW": ""})
    with stack.publisher() as publisher:
        publisher.publish(logout_event("s-egress"))

    def settled() -> bool:
        with stack.db() as db:
            statuses = list(db.scalars(select(Delivery.status)))
        return len(statuses) == len(urls) and set(statuses) <= set(TERMINAL_DELIVERY_STATUSES)

    stack.wait_for(settled, what="both deliveries to reach a final status", timeout=60)
    with stack.db() as db:
        deliveries = {d.provider.removeprefix("rp-"): d for d in db.scalars(select(Delivery))}
        retried = list(db.scalars(select(AuditRow).where(AuditRow.type == "delivery.retrying")))
        failed = {
            (a.provider or "").removeprefix("rp-"): a.detail.get("error", "")
            for a in db.scalars(select(AuditRow).where(AuditRow.type == "delivery.failed"))
        }
    assert {n: (d.status, d.attempts) for n, d in deliveries.items()} == {
        "direct": ("failed", 1),
        "alias": ("failed", 1),
    }
    assert retried == []
    assert "refused by the egress policy: '127.0.0.1' is a loopback address" in failed["direct"]
    assert "'localhost' resolves to a loopback address" in failed["alias"]
    assert all("egress_allow" in error for error in failed.values()), failed
    assert endpoint.hits().total() == 0
