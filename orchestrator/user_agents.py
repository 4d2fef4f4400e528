"""Browser and operating system of a stored user agent, for the session listing.

Read with ``ua-parser`` (the uap-core rules, maintained by the community and pinned with the
project), cached per text: a user's sessions mostly share one or two user agents.
"""

from __future__ import annotations

from functools import lru_cache

from schemas import SessionDevice

__all__ = ["describe_device"]

#: What ua-parser names a family it does not recognise.
_UNKNOWN = "Other"


def _named(family: str, *parts: str | None) -> str | None:
    """``Firefox 120`` of ``("Firefox", "120", None)``; None for an unknown family."""
    if family == _UNKNOWN:
        return None
    version = ".".join(part for part in parts if part)
    return f"{family} {version}" if version else family


@lru_cache(maxsize=1024)
def describe_device(user_agent: str | None) -> SessionDevice:
    """The browser (family and major version) and OS (family and version) of
    ``user_agent``; ``None`` for what the rules do not recognise (or no user agent)."""
    if not user_agent:
        return SessionDevice()
    from ua_parser import parse

    result = parse(user_agent)
    browser = result.user_agent
    system = result.os
    return SessionDevice(
        browser=_named(browser.family, browser.major) if browser else None,
        os=_named(system.family, system.major, system.minor) if system else None,
        user_agent=user_agent,
    )
