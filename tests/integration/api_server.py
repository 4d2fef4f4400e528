"""The HTTP service as the tests run it: ``logout-orchestrator serve`` in a subprocess on
127.0.0.1 (a port from ``server_port()``), with one token per scope and one with them all."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from orchestrator.api_tokens import hash_token, new_token

from .servers import server_port
from .support import CLI, Stack, tail

#: Token names and their scopes; ``all`` holds every scope; two SSF receivers each manage
#: their own streams.
SCOPES: Mapping[str, list[str]] = {
    "events": ["events:write"],
    "sessions": ["sessions:write"],
    "read": ["read"],
    "all": ["events:write", "read", "sessions:write", "ssf:streams"],
    "receiver-a": ["ssf:streams"],
    "receiver-b": ["ssf:streams"],
}


@dataclass
class ApiServer:
    """A running ``serve``; :meth:`client` is an independent HTTP client on it."""

    process: subprocess.Popen[bytes]
    log: Path
    base_url: str
    tokens: dict[str, str] = field(default_factory=dict)

    def client(self, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        """A client sending ``tokens[token]`` as its bearer token (none when None)."""
        headers = {"Authorization": f"Bearer {self.tokens[token]}"} if token else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                return self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
        return self.process.wait(timeout=10)


def start_api(
    stack: Stack,
    extra: Mapping[str, str] | None = None,
    *,
    workers: int = 1,
    without: Collection[str] = (),
) -> ApiServer:
    """Start ``serve`` on ``stack`` (its environment less the variables ``without``) and
    wait until ``/healthz`` answers (fails with its log)."""
    tokens = {name: new_token() for name in SCOPES}
    entries = [
        {"name": name, "sha256": hash_token(tokens[name]), "scopes": scopes}
        for name, scopes in SCOPES.items()
    ]
    for attempt in range(3):
        server = _serve(stack, tokens, entries, extra, workers, without)
        if server.process.poll() is None:
            return server
        if "the port is in use" not in server.output() or attempt == 2:
            pytest.fail(f"serve exited with {server.process.returncode}:\n{tail(server.output())}")
        # The port was free when chosen, then taken before serve bound it (by a connection's
        # local port: LOGOUT_TEST_PORTS may lie in the kernel's ephemeral range): another one.
    raise AssertionError("unreachable")


def _serve(
    stack: Stack,
    tokens: Mapping[str, str],
    entries: list[dict[str, Any]],
    extra: Mapping[str, str] | None,
    workers: int,
    without: Collection[str],
) -> ApiServer:
    """``serve`` on a new port, once ``/healthz`` answers or it has exited."""
    port = server_port()
    env = stack.env(
        {
            "LOGOUT_API_HOST": "127.0.0.1",
            "LOGOUT_API_PORT": str(port),
            "LOGOUT_API_WORKERS": str(workers),
            "LOGOUT_API_TOKENS": json.dumps(entries),
            **(extra or {}),
        }
    )
    for name in without:
        env.pop(name, None)
    log = stack.tmp_path / f"serve-{port}.stderr.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(CLI), "serve"], env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
    stack.logs.append(log)
    server = ApiServer(process, log, f"http://127.0.0.1:{port}", dict(tokens))
    deadline = time.monotonic() + 60
    with httpx.Client(base_url=server.base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                return server
            try:
                if client.get("/healthz").status_code == 200:
                    return server
            except httpx.TransportError:
                pass
            time.sleep(0.1)
    server.stop()
    pytest.fail(f"serve did not answer /healthz within 60 s:\n{tail(server.output())}")
