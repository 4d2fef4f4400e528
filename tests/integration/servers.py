"""Servers a test owns: a ``redis-server``, a PostgreSQL cluster and a RabbitMQ node it may
stop, SIGKILL and restart without touching anyone else's (own ports, own data directory).
The integration suite and the fault campaign (``tests/faults``) both start theirs from here.

Ports come from ``LOGOUT_TEST_PORTS`` (``FIRST-LAST``, so parallel runs on one machine keep
to their own ranges) or, without it, from the kernel's free ports; under pytest-xdist each
worker keeps to a share of its own of that range (or of a default one):
:func:`~tests.integration.support.server_port`. PostgreSQL runs from
Debian's binaries (``/usr/lib/postgresql/*/bin``), as the ``postgres`` user when the tests
run as root; RabbitMQ from Debian's ``/usr/lib/rabbitmq/bin`` (as the user the tests run as,
with its own Erlang port mapper, so the machine's nodes and their ``epmd`` are never touched).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import NoReturn, TypeVar

import pika
import pika.exceptions
import psycopg
import pytest
import redis
from psycopg import sql

from .support import missing, server_port, wait_until

__all__ = ["OwnPostgres", "OwnRabbitmq", "OwnRedis", "RecordingEndpoint", "server_port", "serving"]

_START_TIMEOUT = 30.0
_Server = TypeVar("_Server", bound=ThreadingHTTPServer)


def _tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-2000:]
    except OSError:
        return ""


def _failed(what: str, log: Path) -> NoReturn:
    pytest.fail(f"{what}\n{log.name} (tail):\n{_tail(log)}", pytrace=False)


class OwnRedis:
    """A ``redis-server`` of this test alone on a free loopback port, without persistence
    (``--save "" --appendonly no``): stopping it loses nothing of anyone else's, and
    :meth:`restart` (SIGKILL, then start on the same port) brings it back empty."""

    def __init__(self, directory: Path, *options: str) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing(
                "redis-server is not installed (tests that stop or kill Redis start their own)",
                "run ./scripts/test, which installs Debian's redis-server, or install it",
            )
        self.binary = binary
        self.port = server_port()
        self.directory = directory
        self.options = options
        self.log = directory / "redis.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"
        directory.mkdir(parents=True, exist_ok=True)

    def start(self) -> None:
        """Start the server and wait until it answers PING."""
        self.process = process = subprocess.Popen(
            [
                self.binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.directory),
                "--logfile",
                str(self.log),
                *self.options,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        client = self.client()

        def answers() -> bool:
            try:
                return process.poll() is not None or bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            up = wait_until(answers, _START_TIMEOUT)
        finally:
            client.close()
        if up is None or process.poll() is not None:
            _failed(f"redis-server did not come up on 127.0.0.1:{self.port}", self.log)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s); a no-op when it is not running."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the server dies at once, with whatever it held in memory."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)
        self.process = None

    def restart(self) -> None:
        """SIGKILL, then start again on the same port: a broker restarted without its data."""
        self.kill()
        self.start()

    def client(self, **options: float) -> redis.Redis:
        """A client on this server (``options``: redis-py's, such as ``socket_timeout``)."""
        return redis.Redis.from_url(self.url, socket_connect_timeout=3, **options)


def _pg_bin() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        missing(
            "PostgreSQL's initdb is not in /usr/lib/postgresql/*/bin (tests that stop "
            "PostgreSQL start their own cluster)",
            "run ./scripts/test, which installs Debian's postgresql, or install it",
        )
    return candidates[-1].parent


class OwnPostgres:
    """A PostgreSQL cluster of this test alone on a free loopback port (trust authentication,
    ``fsync=off``), made by :meth:`start` the first time.

    :meth:`stop` and :meth:`start` make an outage; :meth:`create_database` gives each user
    its own database; :meth:`remove` stops it (immediately) and deletes its files.
    """

    def __init__(self) -> None:
        self.bin = _pg_bin()
        self.port = server_port()
        self.directory = Path(tempfile.mkdtemp(prefix="logout-test-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        #: The ``postgres`` database, as its superuser.
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            self._as_owner = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.directory, "postgres", "postgres")

    def _run(self, tool: str, *args: str) -> None:
        done = subprocess.run(
            [*self._as_owner, str(self.bin / tool), *args],
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            _failed(f"{tool} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}", self.log)

    def start(self) -> None:
        """Start the server (creating the cluster the first time); returns once it accepts
        connections."""
        if not self.data.exists():
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "--auth=trust",
                "-U",
                "postgres",
                "-E",
                "UTF8",
                "--no-locale",
                "--no-sync",
            )
        options = (
            f"-k {self.directory} -p {self.port} -h 127.0.0.1 -c fsync=off "
            "-c max_connections=200 -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-w", "-o", options, "start")

    def stop(self) -> None:
        """Fast shutdown: every connection is cut, as when the server goes away."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def create_database(self) -> str:
        """A new database; returns its URL."""
        name = f"own_{secrets.token_hex(4)}"
        with psycopg.connect(self.url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        """Stop the server (immediately) if it runs, and delete its files."""
        if self.running():
            with contextlib.suppress(pytest.fail.Exception, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():  # pg_ctl failed: end the postmaster itself
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.directory, ignore_errors=True)


_RABBITMQ_SERVER = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")
_RABBITMQ_START_TIMEOUT = 120.0  # a node takes ~10 s here, up to a minute on a busy machine


class OwnRabbitmq:
    """A RabbitMQ node of this test alone: its own AMQP port, Erlang distribution port,
    ``epmd`` (on a port of its own) and files, so the machine's node (5672, 25672, 4369) is
    never touched. :meth:`stop` (a clean shutdown: clients see their connections closed) and
    :meth:`start` make an outage; durable queues and persistent messages outlive it.
    :meth:`remove` stops everything and deletes its files."""

    def __init__(self, directory: Path) -> None:
        epmd = shutil.which("epmd")
        if not _RABBITMQ_SERVER.exists() or epmd is None:
            missing(
                f"RabbitMQ ({_RABBITMQ_SERVER}) or Erlang's epmd is not installed (tests that "
                "stop RabbitMQ start their own node)",
                "run ./scripts/test, which installs Debian's rabbitmq-server, or install it",
            )
        self.port = server_port()
        self.dist_port = server_port()
        self.epmd_port = server_port()
        self.directory = directory
        self.log = directory / "rabbitmq.out"
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        self.process: subprocess.Popen[bytes] | None = None
        for sub in ("home", "mnesia", "log"):
            (directory / sub).mkdir(parents=True, exist_ok=True)
        (directory / "enabled_plugins").write_text("[].\n")
        (directory / "rabbitmq-env.conf").write_text("")  # not the machine's /etc/rabbitmq
        (directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.1 = 127.0.0.1:{self.port}\nloopback_users = none\n"
        )
        own = {
            "HOME": str(directory / "home"),  # its Erlang cookie
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
            "RABBITMQ_NODENAME": f"logout-test-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
        }
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))}
        self.env = {**inherited, **own}
        self.epmd = subprocess.Popen(
            [epmd, "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def start(self) -> None:
        """Start the node and wait until it accepts an AMQP connection."""
        with self.log.open("ab") as out:
            self.process = process = subprocess.Popen(
                [str(_RABBITMQ_SERVER)],
                cwd=self.directory,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=out,
                start_new_session=True,
            )

        def answers() -> bool:
            if process.poll() is not None:
                return True
            try:
                pika.BlockingConnection(pika.URLParameters(self.url)).close()
            except pika.exceptions.AMQPError:
                return False
            return True

        up = wait_until(answers, _RABBITMQ_START_TIMEOUT, interval=0.5)
        if up is None or process.poll() is not None:
            self.stop()
            _failed(f"RabbitMQ did not come up on 127.0.0.1:{self.port}", self.log)

    def stop(self) -> None:
        """A clean shutdown (SIGTERM; SIGKILL to the node's process group after 60 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # rabbitmq-server's shell stops the node, then exits
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=30)
        self.process = None

    def remove(self) -> None:
        """Stop the node and its ``epmd``; delete its files."""
        self.stop()
        if self.epmd.poll() is None:
            self.epmd.terminate()
            self.epmd.wait(timeout=30)
        shutil.rmtree(self.directory, ignore_errors=True)


class RecordingEndpoint(ThreadingHTTPServer):
    """A back-channel endpoint on 127.0.0.1 (a port from :func:`server_port`): answers every
    POST 200 with an empty body and keeps its path, content type and body in ``received``,
    recorded before the answer (the client may move on as soon as it has it)."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", server_port()), _Recording)
        self.lock = threading.Lock()
        self.received: list[tuple[str, str, bytes]] = []

    def url(self, path: str = "/") -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}{path}"

    @property
    def bodies(self) -> list[bytes]:
        with self.lock:
            return [body for _path, _type, body in self.received]


class _Recording(BaseHTTPRequestHandler):
    server: RecordingEndpoint

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.received.append((self.path, self.headers.get("Content-Type", ""), body))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serving(server: _Server) -> Iterator[_Server]:
    """``server`` answering on a thread of its own until the block ends, then closed."""
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
