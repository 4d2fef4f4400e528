"""Shared machinery of the integration suite: services, a per-test stack, real workers."""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Generic, NoReturn, TypeVar
from urllib.parse import parse_qs

import pytest
import redis
from sqlalchemy import ColumnElement, Engine, create_engine, func, select
from sqlalchemy.engine import URL, make_url
from sqlalchemy.orm import Session

from orchestrator import BrokerSender, Publisher, Runtime, Settings
from orchestrator.store import (
    TERMINAL_DELIVERY_STATUSES,
    AuditRow,
    Delivery,
    EventRecord,
    Provider,
)
from protocols import ProtocolHandler
from schemas import ProviderConfig
from workers import build_broker

REDIS_URL = os.environ.get("LOGOUT_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
POSTGRES_URL = os.environ.get(
    "LOGOUT_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
#: The test RPs and SPs all listen on 127.0.0.1, which the egress policy refuses by default.
EGRESS_ALLOW = "127.0.0.1"
RABBITMQ_URL = os.environ.get("LOGOUT_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
CLI = Path(sys.executable).parent / "logout-orchestrator"
WORKER_ARGS = ("worker", "--processes", "1", "--threads", "4")

#: Paths of worker stderr files, shown in the report when a test fails.
WORKER_LOGS = pytest.StashKey[list[Path]]()

#: Settings every worker of the suite runs with (fast heartbeats, sweeps and recovery).
WORKER_SETTINGS: Mapping[str, str] = {
    "LOGOUT_REDIS_HEARTBEAT_TIMEOUT_MS": "3000",
    "LOGOUT_REDIS_MAINTENANCE_CHANCE": "200000",
    "LOGOUT_RECOVERY_INTERVAL": "2",
    "LOGOUT_RECOVERY_GRACE": "8",
    "LOGOUT_LOG_LEVEL": "INFO",
}


def missing(what: str, fix: str) -> NoReturn:
    """Fail the test because ``what`` is missing, saying how to get it; never a skip."""
    pytest.fail(f"{what}; {fix}", pytrace=False)


def unavailable(what: str, url: str, exc: BaseException) -> NoReturn:
    """Fail the test because ``what`` is down, naming it and the fix (never a skip)."""
    missing(
        f"{what} at {redact(url)} is unreachable ({type(exc).__name__}: {exc})",
        "run the tests with ./scripts/test, which starts one (installing Debian's package "
        "unless LOGOUT_TEST_NO_APT=1), or point LOGOUT_TEST_* at a running server",
    )


def redact(url: str) -> str:
    """``url`` without its password."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not an SQLAlchemy URL (redis://, amqp://): show the host
        return url.rsplit("@", 1)[-1]


def psycopg_url(url: str | URL) -> URL:
    """``url`` with the psycopg 3 driver, as the product itself uses."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def tcp_reachable(host: str, port: int, timeout: float = 2.0) -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


#: The ports of servers a test starts when pytest-xdist runs several workers and
#: LOGOUT_TEST_PORTS is unset: below Linux's ephemeral range (32768-60999 by default), so no
#: port the kernel hands out (``bind`` to port 0, an outgoing connection) is ever one of them.
XDIST_DEFAULT_PORTS = "23000-24999"
#: The fewest ports a worker's share of the range may hold.
_MIN_SHARE = 20
_last_port: int | None = None


def port_range() -> list[int] | None:
    """The ports this process hands out to servers a test starts: ``LOGOUT_TEST_PORTS``
    (``FIRST-LAST``), else :data:`XDIST_DEFAULT_PORTS` under pytest-xdist; None: any free one.

    Under pytest-xdist the range is cut into as many disjoint shares as there are workers and
    each worker keeps to its own (``PYTEST_XDIST_WORKER`` ``gwN`` takes share N): a port one
    worker found free is never taken by another before its server binds it."""
    spec = os.environ.get("LOGOUT_TEST_PORTS", "").strip()
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if not spec:
        if not worker:
            return None
        spec = XDIST_DEFAULT_PORTS
    found = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", spec)
    if not found or not 1024 <= int(found[1]) <= int(found[2]) <= 65535:
        missing(
            f"LOGOUT_TEST_PORTS={spec!r} is no port range",
            "write FIRST-LAST, such as 21600-21699 (ports 1024-65535)",
        )
    ports = list(range(int(found[1]), int(found[2]) + 1))
    if worker:
        workers = max(1, int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1))
        index = int(worker.removeprefix("gw") or 0) % workers
        share = len(ports) // workers
        if share < _MIN_SHARE:
            missing(
                f"LOGOUT_TEST_PORTS={spec} leaves {share} ports to each of {workers} "
                "pytest-xdist workers",
                f"widen the range to at least {_MIN_SHARE * workers} ports, or run fewer workers",
            )
        ports = ports[index * share : (index + 1) * share]
    return ports


def server_port() -> int:
    """A port nothing listens on, for a server a test starts itself: from :func:`port_range`
    when it gives one (this worker's share), else any. Within the range it goes round from
    the port after the last one it handed out, so a server that is stopped for a while keeps
    its port to itself."""
    global _last_port  # the one cursor of this process
    ports = port_range()
    if ports is None:
        return _kernel_port()
    start = 0 if _last_port not in ports else ports.index(_last_port) + 1
    for port in ports[start:] + ports[:start]:
        if not tcp_reachable("127.0.0.1", port, timeout=0.2) and _bindable(port):
            _last_port = port
            return port
    missing(
        f"no free port among {ports[0]}-{ports[-1]} (LOGOUT_TEST_PORTS, this worker's share)",
        "widen LOGOUT_TEST_PORTS or unset it",
    )


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _kernel_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def closed_port() -> int:
    """A local TCP port nothing listens on (for a URL that must be refused): one of
    :func:`server_port`'s when it has a range (no other worker's server takes it, and this
    worker's only after going round its share), else one the kernel bound, then released."""
    return server_port()


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> float | None:
    """Poll ``check`` until it is true; the seconds it took, or None after ``timeout``."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            return None
        time.sleep(interval)


def logout_event(session_id: str, event_id: str | None = None) -> dict[str, Any]:
    """A valid ``logout.user`` event as a publisher sends it (offset timestamp, not UTC)."""
    offset = timezone(timedelta(hours=2))
    return {
        "type": "logout.user",
        "event_id": event_id or str(uuid.uuid4()),
        "occurred_at": datetime.now(offset).isoformat(timespec="milliseconds"),
        "initiator": "user",
        "session_id": session_id,
    }


def cli_env(data_dir: Path, database_url: str) -> dict[str, str]:
    """The environment of a CLI run in-process (CliRunner) on ``database_url``: the in-process
    broker, no protocol handlers, warnings only."""
    return {
        "LOGOUT_DATA_DIR": str(data_dir),
        "LOGOUT_DATABASE_URL": database_url,
        "LOGOUT_BROKER_URL": "memory://",
        "LOGOUT_PROTOCOLS": "",
        "LOGOUT_LOG_LEVEL": "WARNING",
    }


def json_lines(items: Sequence[Mapping[str, Any]]) -> str:
    """One JSON object per line."""
    return "".join(json.dumps(item) + "\n" for item in items)


def tail(text: str, lines: int = 150) -> str:
    """The last ``lines`` lines of ``text``."""
    kept = text.splitlines()[-lines:]
    return "\n".join(kept)


@dataclass
class WorkerProcess:
    """A real ``logout-orchestrator worker`` subprocess and its stderr file."""

    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        """True while the process runs."""
        return self.process.poll() is None

    def output(self) -> str:
        """Everything the worker wrote to stderr so far."""
        try:
            return self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""

    def lines(self) -> list[dict[str, Any]]:
        """The JSON log lines the worker wrote so far (anything else skipped)."""
        found = []
        for line in self.output().splitlines():
            try:
                found.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return found

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then wait; SIGKILL if it does not stop in time. Returns the exit status."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return self.kill()

    def kill(self) -> int:
        """SIGKILL: the crash a deploy or the OOM killer causes. Returns the exit status."""
        if self.alive():
            self.process.kill()
        return self.process.wait(timeout=30)


@dataclass
class Stack:
    """One test's isolated world: its PostgreSQL database, Redis namespace and data dir."""

    tmp_path: Path
    database_url: str
    broker_url: str
    namespace: str
    redis: redis.Redis
    logs: list[Path]
    #: Protocols enabled in every process of the stack; None: every installed handler.
    protocols: list[str] | None = None
    workers: list[WorkerProcess] = field(default_factory=list)
    _engine: Engine | None = None

    # -- settings and environment ------------------------------------------------------

    @property
    def data_dir(self) -> Path:
        return self.tmp_path / "data"

    def env(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """os.environ plus this stack's ``LOGOUT_*`` settings (and ``extra``)."""
        env = {k: v for k, v in os.environ.items() if not _is_setting(k)}
        env.update(
            LOGOUT_BROKER_URL=self.broker_url,
            LOGOUT_DATABASE_URL=self.database_url,
            LOGOUT_NAMESPACE=self.namespace,
            LOGOUT_DATA_DIR=str(self.data_dir),
            LOGOUT_EGRESS_ALLOW=EGRESS_ALLOW,
        )
        if self.protocols is not None:
            env["LOGOUT_PROTOCOLS"] = json.dumps(self.protocols)
        env.update(extra or {})
        return env

    def settings(self, **overrides: Any) -> Settings:
        """The settings of this stack for in-process use (the Python API)."""
        values: dict[str, Any] = {
            "broker_url": self.broker_url,
            "database_url": self.database_url,
            "namespace": self.namespace,
            "data_dir": self.data_dir,
            "protocols": self.protocols,
            "egress_allow": [EGRESS_ALLOW],
        }
        return Settings.load(None, **{**values, **overrides})

    # -- the command line --------------------------------------------------------------

    def cli(
        self,
        *args: str,
        env: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        stdin: str = "",
    ) -> subprocess.CompletedProcess[str]:
        """Run ``logout-orchestrator ARGS`` with ``stdin`` and return its result (never raises
        on exit code)."""
        return subprocess.run(
            [str(CLI), *args],
            env=self.env(env),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def start_worker(
        self, extra: Mapping[str, str] | None = None, processes: int = 1, threads: int = 4
    ) -> WorkerProcess:
        """Start ``logout-orchestrator worker --processes N --threads T`` in the background."""
        log = self.tmp_path / f"worker-{len(self.workers) + 1}.stderr.log"
        env = self.env({**WORKER_SETTINGS, **(extra or {})})
        with log.open("wb") as stderr:
            process = subprocess.Popen(
                [str(CLI), "worker", "--processes", str(processes), "--threads", str(threads)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
            )
        worker = WorkerProcess(process, log)
        self.workers.append(worker)
        self.logs.append(log)
        return worker

    # -- the database ------------------------------------------------------------------

    @property
    def engine(self) -> Engine:
        """An engine on this test's database, for assertions."""
        if self._engine is None:
            self._engine = create_engine(psycopg_url(self.database_url), pool_size=2)
        return self._engine

    @contextmanager
    def db(self) -> Iterator[Session]:
        """A read session on this test's database."""
        with Session(self.engine) as session:
            yield session

    def count(self, model: type[Any], *where: ColumnElement[bool]) -> int:
        """Rows of ``model`` (EventRecord, Delivery, AuditRow ...) matching ``where``."""
        with self.db() as db:
            return int(db.scalar(select(func.count()).select_from(model).where(*where)) or 0)

    @contextmanager
    def runtime(
        self, handlers: Mapping[str, ProtocolHandler] | None = None, **overrides: Any
    ) -> Iterator[Runtime]:
        """An in-process runtime (migrates the database); closed afterwards.

        ``handlers`` as given, else the stack's enabled protocols loaded by entry point.
        """
        runtime = Runtime.start(self.settings(**overrides), handlers=handlers)
        try:
            yield runtime
        finally:
            runtime.close()

    def seed(
        self,
        providers: Sequence[Mapping[str, Any]] = (),
        records: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        """Load providers (``[[providers]]`` tables) and session records through the registry.

        Providers are validated by the enabled handlers; records need none. A provider no
        enabled handler serves (a test whose deliveries are to be skipped) is stored as a row,
        unchecked, as ``providers load`` stored such providers before it refused them.
        """
        with self.runtime(handlers=None if providers else {}) as runtime:
            if providers:
                configs = [ProviderConfig.model_validate(table) for table in providers]
                runtime.registry.upsert_providers(
                    [c for c in configs if c.protocol in runtime.handlers]
                )
                with runtime.database.begin() as db:
                    for config in configs:
                        if config.protocol not in runtime.handlers:
                            db.merge(
                                Provider(
                                    name=config.name,
                                    protocol=config.protocol,
                                    enabled=config.enabled,
                                    full_logout_on_rp_initiated=config.full_logout_on_rp_initiated,
                                    settings=config.protocol_settings,
                                    updated_at=datetime.now(UTC),
                                )
                            )
            if records:
                runtime.registry.import_lines(json_lines(records).splitlines())

    @contextmanager
    def publisher(self) -> Iterator[Publisher]:
        """A publisher on this stack's broker and database (its outbox); both are closed
        afterwards."""
        broker = build_broker(self.settings())
        try:
            with self.runtime(handlers={}) as runtime:
                yield Publisher(broker, runtime.database, self.namespace)
        finally:
            broker.close()

    @contextmanager
    def raw_sender(self) -> Iterator[BrokerSender]:
        """Sends messages straight to this stack's broker, as a foreign publisher or the
        broker's own redelivery would (no outbox row)."""
        broker = build_broker(self.settings())
        try:
            yield BrokerSender(broker)
        finally:
            broker.close()

    # -- the broker --------------------------------------------------------------------

    def queue_length(self, queue: str) -> int:
        """Messages waiting in ``<namespace>.<queue>`` on Redis."""
        return int(self.redis.llen(f"dramatiq:{self.namespace}.{queue}"))

    def unacked(self, queue: str) -> int:
        """Messages of ``<namespace>.<queue>`` enqueued and not yet acknowledged."""
        return int(self.redis.hlen(f"dramatiq:{self.namespace}.{queue}.msgs"))

    # -- waiting -----------------------------------------------------------------------

    def wait_for(
        self,
        check: Callable[[], bool],
        *,
        what: str,
        timeout: float = 30.0,
        interval: float = 0.1,
    ) -> float:
        """Poll ``check`` until it is true; fail naming ``what``. Returns the seconds waited.

        Fails early, with its output, when one of this stack's workers has exited.
        """

        def done() -> bool:
            if check():
                return True
            for worker in self.workers:
                code = worker.process.poll()
                if code is not None and code != -signal.SIGKILL:
                    pytest.fail(
                        f"worker {worker.pid} exited with {code} while waiting for {what}:\n"
                        f"{tail(worker.output())}",
                        pytrace=False,
                    )
            return False

        took = wait_until(done, timeout, interval)
        if took is None:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}", pytrace=False)
        return took

    def close(self) -> None:
        """Kill any worker still running and release the engine."""
        for worker in self.workers:
            if worker.alive():
                worker.stop(timeout=10)
        if self._engine is not None:
            self._engine.dispose()


def _is_setting(name: str) -> bool:
    # The caller's own LOGOUT_* settings must not leak into an isolated test stack.
    return name.startswith("LOGOUT_") and not name.startswith("LOGOUT_TEST_")


# -- helpers of the protocol tests (test_oidc, test_saml) ---------------------------------


def cli(stack: Stack, args: Sequence[str], env: Mapping[str, str]) -> subprocess.Popen[str]:
    """Start ``logout-orchestrator ARGS`` (it takes seconds to start: overlap it with work)."""
    return subprocess.Popen(
        [str(CLI), *args],
        env=stack.env(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def output(process: subprocess.Popen[str]) -> str:
    """The stdout of a command started by :func:`cli`; fails, with its stderr, unless it exits 0."""
    stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, f"{process.args!r} exited {process.returncode}:\n{stderr}"
    return stdout


def event(kind: str, **fields: Any) -> dict[str, Any]:
    """A valid event of type ``kind``."""
    return {
        "type": kind,
        "event_id": str(uuid.uuid4()),
        "occurred_at": datetime.now(UTC).isoformat(),
        "initiator": "user",
        **fields,
    }


def publish(stack: Stack, *events: Mapping[str, Any]) -> None:
    """Validate and publish ``events`` on the stack's broker."""
    with stack.publisher() as publisher:
        for item in events:
            publisher.publish(item)


def deliveries(stack: Stack, event_id: str | None = None) -> list[Delivery]:
    """Every delivery (of ``event_id`` when given)."""
    with stack.db() as db:
        query = select(Delivery)
        if event_id is not None:
            query = query.where(Delivery.event_id == event_id)
        return list(db.scalars(query))


def wait_settled(stack: Stack, event_id: str, count: int, timeout: float = 30.0) -> None:
    """Until the event has completed and its ``count`` deliveries are all final."""

    def settled() -> bool:
        with stack.db() as db:
            status = db.scalar(select(EventRecord.status).where(EventRecord.event_id == event_id))
        found = deliveries(stack, event_id)
        return (
            status == "completed"
            and len(found) == count
            and all(d.status in TERMINAL_DELIVERY_STATUSES for d in found)
        )

    stack.wait_for(settled, what=f"{count} final deliveries of event {event_id}", timeout=timeout)


def audit_rows(stack: Stack, event_id: str, kind: str) -> list[AuditRow]:
    """The audit records of type ``kind`` for ``event_id``, oldest first."""
    with stack.db() as db:
        return list(
            db.scalars(
                select(AuditRow)
                .where(AuditRow.event_id == event_id, AuditRow.type == kind)
                .order_by(AuditRow.seq)
            )
        )


def session_record(session_id: str, user_id: str) -> dict[str, Any]:
    """An IdP session for ``sessions import``."""
    return {"kind": "session", "session_id": session_id, "user_id": user_id}


class LoopbackServer(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 and an ephemeral port, for one test.

    ``lock`` guards what its handlers record; ``release`` ends any answer held back (a hung
    endpoint) when the test stops the server.
    """

    daemon_threads = True

    def __init__(self, handler: type[BaseHTTPRequestHandler]) -> None:
        super().__init__(("127.0.0.1", 0), handler)
        self.lock = threading.Lock()
        self.release = threading.Event()

    @property
    def base_url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


_S = TypeVar("_S", bound=LoopbackServer)


def logout_token_sid(body: bytes) -> str:
    """The ``sid`` claim of the logout token in a back-channel logout POST (unverified)."""
    token = parse_qs(body.decode())["logout_token"][0]
    claims = token.split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))["sid"])


class LoopbackServers(Generic[_S]):
    """Runs servers for one test, each on its own thread, and stops them all afterwards."""

    def __init__(self) -> None:
        self._running: list[tuple[_S, threading.Thread]] = []

    def start(self, server: _S) -> _S:
        """Serve ``server`` until :meth:`close`."""
        thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        thread.start()
        self._running.append((server, thread))
        return server

    def close(self) -> None:
        """Release every held answer, stop every server and wait for its thread."""
        for server, thread in self._running:
            server.release.set()
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


@contextmanager
def serving(server: _S) -> Iterator[_S]:
    """Serve one ``server`` for the ``with`` block (a test's relying party)."""
    servers: LoopbackServers[_S] = LoopbackServers()
    try:
        yield servers.start(server)
    finally:
        servers.close()
