"""Servers a test owns: a ``redis-server`` and a PostgreSQL cluster it may stop, SIGKILL and
restart without touching anyone else's (own port, own data directory). The integration suite
and the fault campaign (``tests/faults``) both start theirs from here.

Ports come from ``LOGOUT_TEST_PORTS`` (``FIRST-LAST``, so parallel runs on one machine keep
to their own ranges) or, without it, from the kernel's free ports. PostgreSQL runs from
Debian's binaries (``/usr/lib/postgresql/*/bin``), as the ``postgres`` user when the tests
run as root.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path
from typing import NoReturn

import psycopg
import pytest
import redis
from psycopg import sql

from .support import closed_port, missing, tcp_reachable, wait_until

__all__ = ["OwnPostgres", "OwnRedis", "server_port"]

_START_TIMEOUT = 30.0
_last_port: int | None = None


def server_port() -> int:
    """A port nothing listens on, for a server a test starts itself: in ``LOGOUT_TEST_PORTS``
    when set, else any. Within the range it goes round from the port after the last one it
    handed out, so a server that is stopped for a while keeps its port to itself."""
    global _last_port  # the one cursor of this process
    spec = os.environ.get("LOGOUT_TEST_PORTS")
    if not spec:
        return closed_port()
    found = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", spec)
    if not found or not 1024 <= int(found[1]) <= int(found[2]) <= 65535:
        missing(
            f"LOGOUT_TEST_PORTS={spec!r} is no port range",
            "write FIRST-LAST, such as 21600-21699 (ports 1024-65535)",
        )
    ports = list(range(int(found[1]), int(found[2]) + 1))
    start = 0 if _last_port not in ports else ports.index(_last_port) + 1
    for port in ports[start:] + ports[:start]:
        if not tcp_reachable("127.0.0.1", port, timeout=0.2) and _bindable(port):
            _last_port = port
            return port
    missing(f"no free port in LOGOUT_TEST_PORTS={spec}", "widen the range or unset it")


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


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
