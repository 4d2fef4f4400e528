"""Servers a test owns: a ``redis-server`` and a PostgreSQL cluster it may stop and restart
without touching anyone else's (own port, own data directory)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from glob import glob
from pathlib import Path

import pytest
import redis

from .support import missing, server_port

__all__ = ["OwnPostgres", "OwnRedis"]


def _wait(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not start within {timeout:g} s", pytrace=False)
        time.sleep(0.05)


class OwnRedis:
    """A ``redis-server`` of this test alone, on a free loopback port, without persistence:
    stopping it loses nothing of anyone else's, and restarting it starts empty."""

    def __init__(self, directory: Path, *options: str) -> None:
        self.port = server_port()
        self.directory = directory
        self.options = options
        self.process: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            missing("redis-server is not installed", "scripts/test installs it")
        options = ("--bind", "127.0.0.1", "--save", "", "--appendonly", "no")
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                *options,
                "--dir",
                str(self.directory),
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = self.client()

        def answers() -> bool:
            try:
                return bool(client.ping())
            except redis.ConnectionError:
                return False

        try:
            _wait(answers, f"redis-server on port {self.port}", timeout=10)
        finally:
            client.close()

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self.process = None

    def kill(self) -> None:
        """SIGKILL: the server dies at once, with whatever it held in memory."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url, socket_connect_timeout=3)


class OwnPostgres:
    """A PostgreSQL cluster of this test alone (Debian's ``initdb``/``pg_ctl``, run as the
    ``postgres`` user when the tests run as root), trust authentication, no fsync."""

    def __init__(self) -> None:
        found = sorted(glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not found:
            missing("PostgreSQL's pg_ctl is not installed", "scripts/test installs postgresql")
        self.bin = Path(found[-1]).parent
        self.port = server_port()
        self.directory = Path(tempfile.mkdtemp(prefix="logout-test-pg-"))
        self.data = self.directory / "data"
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        if os.geteuid() == 0:
            shutil.chown(self.directory, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "--auth=trust", "-U", "postgres", "-E", "UTF8")

    def _run(self, tool: str, *args: str) -> None:
        command = [str(self.bin / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(
            command, cwd=self.directory, capture_output=True, text=True, check=False, timeout=120
        )
        if done.returncode != 0:
            pytest.fail(f"{tool} failed:\n{done.stdout}\n{done.stderr}", pytrace=False)

    def start(self) -> None:
        options = f"-k {self.directory} -p {self.port} -h 127.0.0.1 -c fsync=off"
        log = str(self.directory / "postgres.log")
        self._run("pg_ctl", "-D", str(self.data), "-l", log, "-w", "-o", options, "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def remove(self) -> None:
        if self.running():
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)
