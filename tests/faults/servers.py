"""Redis and PostgreSQL servers the fault campaign starts itself, so it may kill and stop them.

Ports come from ``LOGOUT_TEST_FAULT_PORTS`` (``FIRST-LAST``, for machines where each run
owns a range) or, without it, from the kernel's free ports. PostgreSQL runs from Debian's
binaries (``/usr/lib/postgresql/*/bin``), as the ``postgres`` user when the tests run as root.
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
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
from psycopg import sql

from tests.integration.support import closed_port, missing, tcp_reachable

__all__ = ["PortRange", "PostgresServer", "RedisServer", "wait_until"]

_START_TIMEOUT = 30.0


def wait_until(check: Callable[[], bool], timeout: float, interval: float = 0.05) -> float | None:
    """Poll ``check`` until it is true; the seconds it took, or None after ``timeout``."""
    started = time.monotonic()
    while True:
        if check():
            return time.monotonic() - started
        if time.monotonic() - started >= timeout:
            return None
        time.sleep(interval)


class PortRange:
    """Hands out ports nothing listens on: from ``LOGOUT_TEST_FAULT_PORTS``, else any."""

    def __init__(self, spec: str | None) -> None:
        self._ports: list[int] | None = None
        if spec:
            found = re.fullmatch(r"\s*(\d+)\s*-\s*(\d+)\s*", spec)
            if not found or not 1024 <= int(found[1]) <= int(found[2]) <= 65535:
                missing(
                    f"LOGOUT_TEST_FAULT_PORTS={spec!r} is no port range",
                    "write FIRST-LAST, such as 21600-21699 (ports 1024-65535)",
                )
            self._ports = list(range(int(found[1]), int(found[2]) + 1))

    def take(self) -> int:
        """A port free right now; never the same one twice from a range."""
        if self._ports is None:
            return closed_port()
        while self._ports:
            port = self._ports.pop(0)
            if _bindable(port):
                return port
        missing(
            "LOGOUT_TEST_FAULT_PORTS has no free port left",
            "give a wider range, or unset it to use any free port",
        )


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class RedisServer:
    """``redis-server`` without persistence (``--save "" --appendonly no``) on one port.

    :meth:`crash` SIGKILLs it and :meth:`start` brings up an empty one on the same port:
    a broker restarted without its data.
    """

    def __init__(self, port: int, folder: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing(
                "redis-server is not installed (the fault campaign starts and kills its own)",
                "run ./scripts/test, which installs Debian's redis-server, or install it",
            )
        self.binary = binary
        self.port = port
        self.folder = folder
        self.process: subprocess.Popen[bytes] | None = None
        folder.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        log = self.folder / "redis.log"
        self.process = subprocess.Popen(
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
                str(self.folder),
                "--logfile",
                str(log),
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        process = self.process
        up = wait_until(
            lambda: process.poll() is not None or tcp_reachable("127.0.0.1", self.port, 0.2),
            _START_TIMEOUT,
        )
        if up is None or process.poll() is not None:
            raise RuntimeError(
                f"redis-server did not come up on 127.0.0.1:{self.port}: {_tail(log)}"
            )

    def crash(self) -> None:
        """SIGKILL: what was only in its memory is gone."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM (SIGKILL after 10 s); a no-op when it is not running."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.crash()


def _pg_bin() -> Path:
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin/initdb"),
        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0,
    )
    if not candidates:
        missing(
            "PostgreSQL's initdb is not in /usr/lib/postgresql/*/bin (the fault campaign "
            "starts and stops its own server)",
            "run ./scripts/test, which installs Debian's postgresql, or install it",
        )
    return candidates[-1].parent


class PostgresServer:
    """A throwaway PostgreSQL cluster on one port (``fsync=off``, trust authentication).

    :meth:`stop` and :meth:`start` make an outage; :meth:`create_database` gives each
    scenario its own database. :meth:`remove` stops it and deletes its files.
    """

    def __init__(self, port: int) -> None:
        self.bin = _pg_bin()
        self.port = port
        # Under /tmp with mode 711: the postgres user must reach it when we are root.
        self.folder = Path(tempfile.mkdtemp(prefix="logout-faults-pg-"))
        self.folder.chmod(0o711)
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self._as_owner: list[str] = []
        if os.geteuid() == 0:
            self._as_owner = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.folder, "postgres")

    @property
    def admin_url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, tool: str, *args: str) -> None:
        result = subprocess.run(
            [*self._as_owner, str(self.bin / tool), *args],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"{tool} failed ({result.returncode}): {result.stderr.strip()[-2000:]} "
                f"{_tail(self.log)}"
            )

    def start(self) -> None:
        """Start the server (creating the cluster the first time) and wait until it accepts
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
            f"-k {self.folder} -p {self.port} -h 127.0.0.1 -c fsync=off "
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
        name = f"faults_{secrets.token_hex(4)}"
        with psycopg.connect(self.admin_url, autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return f"postgresql://postgres@127.0.0.1:{self.port}/{name}"

    def remove(self) -> None:
        """Stop the server (immediately) if it runs, and delete its files."""
        if self.running():
            with contextlib.suppress(RuntimeError, subprocess.TimeoutExpired):
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        pid_file = self.data / "postmaster.pid"
        if pid_file.exists():  # pg_ctl failed: end the postmaster itself
            with contextlib.suppress(ValueError, OSError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.folder, ignore_errors=True)


def _tail(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8", errors="replace")[-2000:]
    except OSError:
        return ""
