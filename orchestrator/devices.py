"""Remember device (authentik's User Login stage): is a login from a device the user uses?

A device is *known* when its cookie id was seen for this user within ``remember_device``
(any of the user's sessions, open or ended, that reported it and was last active since), or
when the user has an open session from the same IP. ``remember_device = 0`` turns the rule
off: nothing is known (reason ``off``).

The cookie id is a bearer secret of the browser: only its SHA-256 is stored and compared
(:func:`schemas.events.device_hash`; a validated ``session.started`` carries the hash, never
the id), and it is never logged nor shown. The same rule answers before the login completes
(:meth:`DeviceCheck.check`, read-only) and is recorded when ``session.started`` arrives
(:func:`record_verdict`, in the transaction of its audit record).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import Connection, exists, select, update

from orchestrator.store import Database
from orchestrator.store.sql import engine_of
from orchestrator.store.tables import IDP_SESSIONS
from schemas import DeviceVerdict
from schemas.events import device_hash as hash_device

__all__ = ["DeviceCheck", "known_device", "record_verdict"]


def known_device(
    conn: Connection,
    window: timedelta,
    user_id: str,
    *,
    device_hash: str | None,
    ip: str | None,
    at: datetime,
    session_id: str | None = None,
) -> DeviceVerdict:
    """The rule of the module docstring, at ``at``, for the cookie id whose hash is
    ``device_hash``; ``session_id`` (the login's own session, when recorded already) never
    vouches for itself."""
    if window <= timedelta(0):
        return DeviceVerdict(known=False, reason="off")
    mine = [IDP_SESSIONS.c.user_id == user_id]
    if session_id is not None:
        mine.append(IDP_SESSIONS.c.session_id != session_id)
    if device_hash is not None:
        seen = conn.scalar(
            select(
                exists().where(
                    *mine,
                    IDP_SESSIONS.c.device_hash == device_hash,
                    IDP_SESSIONS.c.last_seen >= at - window,
                )
            )
        )
        if seen:
            return DeviceVerdict(known=True, reason="cookie")
    if ip is not None:
        same = conn.scalar(
            select(
                exists().where(*mine, IDP_SESSIONS.c.ip == ip, IDP_SESSIONS.c.ended_at.is_(None))
            )
        )
        if same:
            return DeviceVerdict(known=True, reason="same_ip")
    return DeviceVerdict(known=False, reason="unknown")


def record_verdict(
    conn: Connection,
    window: timedelta,
    session_id: str,
    user_id: str,
    *,
    device_hash: str | None,
    ip: str | None,
    at: datetime,
) -> DeviceVerdict:
    """Judge the login of ``session_id`` and keep the verdict (and the device's hash) on it.

    Set once: a start handled again (a redelivery) finds the first verdict and returns it,
    so the session and its ``session.started`` record always agree.
    """
    verdict = known_device(
        conn, window, user_id, device_hash=device_hash, ip=ip, at=at, session_id=session_id
    )
    conn.execute(
        update(IDP_SESSIONS)
        .where(IDP_SESSIONS.c.session_id == session_id, IDP_SESSIONS.c.known_device.is_(None))
        .values(
            device_hash=device_hash,
            known_device=verdict.known,
            known_device_reason=verdict.reason,
        )
    )
    stored = conn.execute(
        select(IDP_SESSIONS.c.known_device, IDP_SESSIONS.c.known_device_reason).where(
            IDP_SESSIONS.c.session_id == session_id
        )
    ).one_or_none()
    if stored is None or stored.known_device is None:
        return verdict
    return DeviceVerdict(known=stored.known_device, reason=stored.known_device_reason)


class DeviceCheck:
    """Answers, before a login completes, whether it comes from a known device (read-only:
    nothing is recorded, no event is published)."""

    def __init__(self, database: Database, window: timedelta) -> None:
        self._engine = engine_of(database)
        self._window = window

    def check(
        self,
        user_id: str,
        *,
        device_id: str | None = None,
        ip: str | None = None,
        at: datetime | None = None,
    ) -> DeviceVerdict:
        """The verdict for a login of ``user_id`` from ``ip`` holding cookie ``device_id``."""
        with self._engine.connect() as conn:
            return known_device(
                conn,
                self._window,
                user_id,
                device_hash=hash_device(device_id) if device_id is not None else None,
                ip=ip,
                at=at or datetime.now(UTC),
            )
