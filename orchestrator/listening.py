"""Binding a listening socket (``serve``'s HTTP service, the worker's metrics): a failure is
a :class:`ConfigurationError` naming the setting to fix and where it came from, never an
``OSError`` line or a traceback."""

from __future__ import annotations

import errno
import socket

from schemas.errors import ConfigurationError

__all__ = ["bind_error", "listening_socket"]


def bind_error(exc: OSError, host: str, port: int, origins: tuple[str, str]) -> ConfigurationError:
    """What to fix when ``host``:``port`` cannot be listened on; ``origins`` name the host
    and port settings and their source (``Settings.origin``)."""
    host_origin, port_origin = origins
    reason = exc.strerror or str(exc)
    where = f"cannot listen on {host}:{port}"
    if exc.errno == errno.EADDRINUSE:
        return ConfigurationError(
            f"{where}: the port is in use ({port_origin}); stop what listens there, or "
            "choose a free port"
        )
    if exc.errno == errno.EACCES:
        return ConfigurationError(
            f"{where}: not permitted ({port_origin}); a port below 1024 needs privileges: "
            "choose a port from 1024"
        )
    return ConfigurationError(
        f"{where}: {host!r} is not an address of this machine ({reason}; {host_origin}); "
        "set one of its addresses or host names, e.g. 127.0.0.1, or 0.0.0.0 for all"
    )


def listening_socket(host: str, port: int, origins: tuple[str, str]) -> socket.socket:
    """A TCP socket bound to ``host``:``port`` (as uvicorn binds one: ``SO_REUSEADDR``, IPv6
    when the host holds a colon), inheritable by worker processes; not listening yet."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family=family)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except (OSError, UnicodeError) as exc:
        sock.close()
        error = exc if isinstance(exc, OSError) else OSError(errno.EINVAL, str(exc))
        raise bind_error(error, host, port, origins) from None
    sock.set_inheritable(True)
    return sock
