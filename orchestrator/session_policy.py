"""When an IdP session ends by itself: lifetimes, idle timeout, the per-user session limit.

A session's absolute deadline (``expires_at``) is fixed at login:

* ``session_duration`` after login; ``0`` makes it a *browser session*, which has no deadline
  of its own (the browser drops its cookie when it closes; the server still applies the idle
  timeout and the absolute lifetime);
* plus ``session_stay_signed_in_offset`` when the user chose "stay signed in";
* or ``session_remember_me_lifetime`` for a remember-me session, when that is set;
* never later than ``session_absolute_lifetime`` after login, when that is set.

A session also expires once it has not been seen for ``session_idle_timeout``. ``-1``
disables a lifetime, the idle timeout or the remember-me lifetime. ``max_sessions_per_user``
(0 = unlimited) ends a user's oldest sessions when a new one would exceed it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from orchestrator.settings import Settings

__all__ = ["SessionPolicy"]


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """The session settings in force; see the module docstring."""

    duration: timedelta = timedelta(days=1)
    stay_signed_in_offset: timedelta = timedelta(0)
    remember_me_lifetime: timedelta | None = None
    absolute_lifetime: timedelta | None = None
    idle_timeout: timedelta | None = None
    max_sessions_per_user: int = 0

    @classmethod
    def from_settings(cls, settings: Settings) -> SessionPolicy:
        return cls(
            duration=settings.session_duration,
            stay_signed_in_offset=settings.session_stay_signed_in_offset,
            remember_me_lifetime=settings.session_remember_me_lifetime,
            absolute_lifetime=settings.session_absolute_lifetime,
            idle_timeout=settings.session_idle_timeout,
            max_sessions_per_user=settings.max_sessions_per_user,
        )

    def expires_at(
        self, created: datetime, *, remember_me: bool = False, stay_signed_in: bool = False
    ) -> datetime | None:
        """The absolute deadline of a session started at ``created``; None: none applies."""
        deadline: datetime | None
        if remember_me and self.remember_me_lifetime is not None:
            deadline = created + self.remember_me_lifetime
        elif self.duration == timedelta(0):
            deadline = None  # a browser session
        else:
            offset = self.stay_signed_in_offset if stay_signed_in else timedelta(0)
            deadline = created + self.duration + offset
        if self.absolute_lifetime is not None:
            cap = created + self.absolute_lifetime
            deadline = cap if deadline is None else min(deadline, cap)
        return deadline

    def idle_since(self, now: datetime) -> datetime | None:
        """Sessions last seen before this instant are idle-expired; None: no idle timeout."""
        return None if self.idle_timeout is None else now - self.idle_timeout

    @property
    def limits_sessions(self) -> bool:
        return self.max_sessions_per_user > 0
