"""``sessions list``'s table (rich): one row per session, its provider sessions in the last
cell. Every value goes in as plain :class:`~rich.text.Text`, so a stored user agent or
identifier can carry no markup."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich.table import Table
from rich.text import Text

from schemas import SessionView

__all__ = ["session_table"]

_COLUMNS = (
    "session",
    "user",
    "created",
    "last activity",
    "expires",
    "ip",
    "device",
    "location",
    "binding",
    "flags",
    "known device",
    "provider sessions",
)


def _when(at: datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S") if at is not None else "-"


def _device(view: SessionView) -> str:
    parts = [p for p in (view.device.browser, view.device.os) if p]
    return " on ".join(parts) if parts else "unknown"


def _location(view: SessionView) -> str:
    parts = [p for p in (view.location.city, view.location.country) if p]
    return ", ".join(parts) if parts else "-"


def _binding(view: SessionView) -> str:
    modes = [m for m in (view.network_binding, view.geoip_binding) if m != "no_binding"]
    return ", ".join(modes) if modes else "none"


def _flags(view: SessionView) -> str:
    flags = [
        name
        for name, on in (("remember-me", view.remember_me), ("stay-signed-in", view.stay_signed_in))
        if on
    ]
    if view.ended is not None:
        flags.append(f"ended {_when(view.ended)} ({view.end_reason or '?'})")
    return ", ".join(flags) if flags else "-"


def _known(view: SessionView) -> str:
    if view.known_device is None:
        return "-"
    return f"{'yes' if view.known_device else 'no'} ({view.known_device_reason})"


def _providers(view: SessionView) -> str:
    names = [
        f"{p.provider}{' (ended)' if p.ended is not None else ''}" for p in view.provider_sessions
    ]
    return ", ".join(names) if names else "-"


def session_table(views: Sequence[SessionView]) -> Table:
    """The table of ``views``, in their order."""
    table = Table(*_COLUMNS, title=f"{len(views)} session(s)", title_justify="left")
    for view in views:
        cells = (
            view.session_id,
            view.user_id,
            _when(view.created),
            _when(view.last_activity),
            _when(view.expires),
            view.ip or "-",
            _device(view),
            _location(view),
            _binding(view),
            _flags(view),
            _known(view),
            _providers(view),
        )
        table.add_row(*(Text(cell) for cell in cells))
    return table
