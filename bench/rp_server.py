"""Local relying parties for the HTTP benchmarks: many ``host:port`` sites answering 200.

Two kinds, both in their own process group and stopped (SIGTERM, then SIGKILL) on exit:

* ``nginx`` (when installed): ``location / { return 200; }`` on every port, one worker
  process, no access log: the lightest server, so the client side is what gets measured;
* a Python server (aiohttp, one asyncio process, one ``TCPSite`` per port) that can also wait
  ``--delay-ms`` before answering, and counts the requests it answered (``GET /__stats``).

Run as a program, the Python server prints one JSON line ``{"ports": [...]}`` once every
site listens, then serves until SIGTERM or SIGINT::

    python -m bench.rp_server --sites 100 --delay-ms 50

From Python, :func:`light_rp_server` (nginx, else the Python server, saying which) and
:func:`python_rp_server` start one as a context manager.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp
from aiohttp import web

__all__ = [
    "RpServer",
    "free_ports",
    "light_rp_server",
    "nginx_path",
    "nginx_rp_server",
    "python_rp_server",
]

HOST = "127.0.0.1"
START_TIMEOUT = 30.0
STATS_PATH = "/__stats"


@dataclass
class RpServer:
    """A running RP server: which kind, its ports, and how to describe it."""

    kind: str  # "nginx" or "python"
    ports: list[int]
    delay_ms: float
    process: subprocess.Popen[bytes]
    description: str
    notes: list[str] = field(default_factory=list)

    def url(self, index: int, path: str = "/backchannel-logout") -> str:
        """The URL of site ``index`` (modulo the number of sites)."""
        return f"http://{HOST}:{self.ports[index % len(self.ports)]}{path}"

    def pids(self) -> list[int]:
        """Process ids of the server's process group (nginx: master and worker)."""
        return _group_members(self.process.pid)

    def answered(self) -> int | None:
        """Requests answered so far (Python server only; ``None`` for nginx)."""
        if self.kind != "python":
            return None
        with socket.create_connection((HOST, self.ports[0]), timeout=5) as sock:
            request = f"GET {STATS_PATH} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            sock.sendall(request.encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        body = data.split(b"\r\n\r\n", 1)[1]
        return int(json.loads(body)["answered"])


# -- helpers ---------------------------------------------------------------------------


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on the loopback right now (bound, then released)."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind((HOST, 0))
            sockets.append(sock)
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _group_members(pgid: int) -> list[int]:
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text(encoding="ascii", errors="replace")
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 2 and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def _stop_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process group, wait, then SIGKILL whatever is left of it."""
    pgid = process.pid
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=10)
    deadline = time.monotonic() + 5
    while _group_members(pgid) and time.monotonic() < deadline:
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def _wait_listening(ports: Sequence[int], process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    pending = list(ports)
    while pending:
        if process.poll() is not None:
            raise RuntimeError(
                f"RP server exited ({process.returncode}): "
                f"{log.read_text(encoding='utf-8', errors='replace')[-2000:]}"
            )
        try:
            with socket.create_connection((HOST, pending[0]), timeout=1):
                pending.pop(0)
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"RP server not listening on {pending[0]}") from None
            time.sleep(0.05)


# -- nginx -----------------------------------------------------------------------------


def nginx_path() -> str | None:
    """The nginx binary, or ``None`` when nginx is not installed."""
    return shutil.which("nginx") or next(
        (p for p in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.access(p, os.X_OK)), None
    )


def _nginx_config(prefix: Path, ports: Sequence[int]) -> str:
    listens = "\n".join(f"        listen {HOST}:{port};" for port in ports)
    temp = "\n".join(
        f"    {kind}_temp_path {prefix / kind};"
        for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    user = "user root;\n" if os.geteuid() == 0 else ""
    return f"""{user}worker_processes 1;
daemon off;
pid {prefix / "nginx.pid"};
error_log {prefix / "error.log"} warn;
worker_rlimit_nofile 65536;
events {{
    worker_connections 16384;
}}
http {{
    access_log off;
{temp}
    keepalive_requests 10000000;
    keepalive_timeout 75s;
    server {{
{listens}
        location / {{
            return 200;
        }}
    }}
}}
"""


@contextmanager
def nginx_rp_server(sites: int, binary: str) -> Iterator[RpServer]:
    """nginx answering ``200`` (empty body) on ``sites`` ports; one worker process."""
    with tempfile.TemporaryDirectory(prefix="lo-bench-nginx-") as tmp:
        prefix = Path(tmp)
        ports = free_ports(sites)
        config = prefix / "nginx.conf"
        config.write_text(_nginx_config(prefix, ports), encoding="utf-8")
        log = prefix / "stderr.log"
        version = subprocess.run(
            [binary, "-v"], capture_output=True, text=True, check=False
        ).stderr.strip()
        with open(log, "wb") as output:
            process = subprocess.Popen(
                [binary, "-p", str(prefix), "-c", str(config), "-e", str(prefix / "error.log")],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_listening(ports, process, log)
            yield RpServer(
                kind="nginx",
                ports=ports,
                delay_ms=0.0,
                process=process,
                description=f"{version.removeprefix('nginx version: ')} `return 200;`, "
                f"1 worker process, {sites} port(s)",
            )
        finally:
            _stop_group(process)


# -- the Python server -----------------------------------------------------------------


@contextmanager
def python_rp_server(sites: int, delay_ms: float = 0.0) -> Iterator[RpServer]:
    """This module run as a subprocess: aiohttp, one asyncio loop, ``sites`` ports."""
    with tempfile.TemporaryDirectory(prefix="lo-bench-rp-") as tmp:
        log = Path(tmp) / "stderr.log"
        command = [
            sys.executable,
            "-m",
            "bench.rp_server",
            "--sites",
            str(sites),
            "--delay-ms",
            str(delay_ms),
        ]
        root = Path(__file__).resolve().parent.parent
        with open(log, "wb") as errors:
            process = subprocess.Popen(
                command,
                cwd=root,
                stdout=subprocess.PIPE,
                stderr=errors,
                start_new_session=True,
            )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                process.wait(timeout=10)
                raise RuntimeError(
                    f"RP server exited ({process.returncode}): "
                    f"{log.read_text(encoding='utf-8', errors='replace')[-2000:]}"
                )
            ports = [int(p) for p in json.loads(line)["ports"]]
            _wait_listening(ports, process, log)
            yield RpServer(
                kind="python",
                ports=ports,
                delay_ms=delay_ms,
                process=process,
                description=f"Python aiohttp {aiohttp.__version__} server, 1 process, "
                f"{sites} port(s)" + (f", answers after {delay_ms:g} ms" if delay_ms else ""),
            )
        finally:
            _stop_group(process)


@contextmanager
def light_rp_server(sites: int, *, use_nginx: bool = True) -> Iterator[RpServer]:
    """nginx when installed (and ``use_nginx``), else the Python server; says which."""
    binary = nginx_path() if use_nginx else None
    if binary is not None:
        with nginx_rp_server(sites, binary) as server:
            yield server
        return
    reason = "nginx is not installed" if use_nginx else "nginx not used (--no-nginx)"
    with python_rp_server(sites) as server:
        server.notes.append(
            f"{reason}: fell back to the Python aiohttp server, which costs CPU on the same "
            "cores, so client rates are lower than with nginx"
        )
        yield server


# -- the Python server's own process ----------------------------------------------------


async def _serve(sites: int, delay: float) -> None:
    answered = 0

    async def logout(request: web.Request) -> web.Response:
        nonlocal answered
        await request.read()
        if delay > 0:
            await asyncio.sleep(delay)
        answered += 1
        return web.Response(status=200)

    async def stats(_request: web.Request) -> web.Response:
        return web.json_response({"answered": answered})

    app = web.Application()
    app.router.add_get(STATS_PATH, stats)
    app.router.add_route("*", "/{tail:.*}", logout)
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    await runner.setup()
    ports: list[int] = []
    for _ in range(sites):
        sock = _listening_socket()
        await web.SockSite(runner, sock, shutdown_timeout=0.1).start()
        ports.append(sock.getsockname()[1])
    sys.stdout.write(json.dumps({"ports": ports}) + "\n")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    try:
        await stop.wait()
    finally:
        await runner.cleanup()


def _listening_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((HOST, 0))
    sock.listen(1024)
    sock.setblocking(False)
    return sock


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.rp_server", description=__doc__.split("\n\n", 1)[0] if __doc__ else ""
    )
    parser.add_argument("--sites", type=int, default=1, help="ports to listen on (default 1)")
    parser.add_argument(
        "--delay-ms", type=float, default=0.0, help="wait this long before answering (default 0)"
    )
    args = parser.parse_args(argv)
    if args.sites < 1:
        parser.error("--sites must be at least 1")
    asyncio.run(_serve(args.sites, args.delay_ms / 1000))
    return 0


if __name__ == "__main__":
    sys.exit(main())
