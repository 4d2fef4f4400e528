"""What rendering a plan can refuse (both are :class:`~schemas.errors.LogoutError`)."""

from __future__ import annotations

from schemas.errors import LogoutError

__all__ = ["RenderError", "UnsafeUrlError"]


class RenderError(LogoutError, ValueError):
    """The plan cannot be rendered as asked (no such stage or entry, or a bad value)."""


class UnsafeUrlError(RenderError):
    """A URL that must not be shown to the browser; the text names the field, not the URL."""
