"""What an operator or a user sees of sessions: the listing and the remember-device answer.

One shape for ``sessions list --json``, ``GET /v1/users/{id}/sessions`` and the Python API
(:func:`orchestrator.session_list.list_sessions`). Never the device cookie id: only whether
the login's device was known, and why.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from schemas.fields import Identifier
from schemas.registry import IpText

__all__ = [
    "DEVICE_REASONS",
    "DeviceQuestion",
    "DeviceReason",
    "DeviceVerdict",
    "ProviderSessionView",
    "SessionDevice",
    "SessionLocation",
    "SessionView",
]

DeviceReason = Literal["cookie", "same_ip", "unknown", "off"]
#: Why a login's device is known (``cookie``: its cookie id was seen for the user within
#: ``remember_device``; ``same_ip``: the user has an open session from the same address) or
#: not (``unknown``; ``off``: ``remember_device`` is 0, nothing is known).
DEVICE_REASONS: Final[tuple[DeviceReason, ...]] = get_args(DeviceReason)


class _View(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeviceQuestion(_View):
    """A login about to complete: the device cookie id the IdP holds for the browser (if
    any) and the login's address (``POST /v1/users/{id}/device-check``'s body)."""

    device_id: Identifier | None = None
    ip: IpText = None


class DeviceVerdict(_View):
    """Whether a login comes from a device the user is known to use, and why."""

    known: bool
    reason: DeviceReason


class SessionDevice(_View):
    """Browser and operating system read from the session's stored user agent."""

    browser: str | None = Field(default=None, description="e.g. 'Firefox 120'")
    os: str | None = Field(default=None, description="e.g. 'Windows 10'")
    user_agent: str | None = None


class SessionLocation(_View):
    """Where the login came from: the login's recorded place, else a GeoIP lookup of its IP
    (``source`` says which; ``null`` fields: nothing known)."""

    city: str | None = None
    country: str | None = None
    source: Literal["login", "geoip"] | None = None


class ProviderSessionView(_View):
    """One provider session opened through the IdP session."""

    provider: str
    protocol: str | None = None
    created: datetime
    ended: datetime | None = None


class SessionView(_View):
    """One IdP session, as a "your active sessions" page shows it."""

    session_id: str
    user_id: str
    created: datetime
    last_activity: datetime
    expires: datetime | None
    ended: datetime | None = None
    end_reason: str | None = None
    ip: str | None
    device: SessionDevice
    location: SessionLocation
    network_binding: str
    geoip_binding: str
    remember_me: bool
    stay_signed_in: bool
    known_device: bool | None = Field(
        default=None, description="null: the session's start reported no device check"
    )
    known_device_reason: DeviceReason | None = None
    provider_sessions: list[ProviderSessionView] = Field(default_factory=list)
