"""A rendered page and its headers: a strict Content-Security-Policy with a fresh nonce.

``default-src 'none'``: the page may run only its own nonce-carrying scripts and styles,
connect only to itself (reports) and to what the plan names, frame only the plan's
providers and submit forms only to them and to itself. No inline handler, no ``eval``.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["Page", "content_security_policy", "new_nonce"]


def new_nonce() -> str:
    """128 random bits, base64url: a fresh one for every response."""
    return secrets.token_urlsafe(16)


def _sources(values: Iterable[str]) -> str:
    kept = sorted(set(values))
    return " ".join(kept) if kept else "'none'"


def content_security_policy(
    nonce: str,
    *,
    frame_src: Iterable[str] = (),
    form_action: Iterable[str] = (),
    connect_src: Iterable[str] = (),
) -> str:
    """The policy of one page; each source list holds origins (or ``'self'``)."""
    directives = [
        "default-src 'none'",
        f"script-src 'nonce-{nonce}'",
        f"style-src 'nonce-{nonce}'",
        f"connect-src {_sources(connect_src)}",
        f"frame-src {_sources(frame_src)}",
        f"form-action {_sources(form_action)}",
        "img-src 'none'",
        "base-uri 'none'",
        "frame-ancestors 'none'",
    ]
    return "; ".join(directives)


@dataclass(frozen=True, slots=True)
class Page:
    """An HTML page and the policy it was rendered for; serve it with :attr:`headers`."""

    html: str
    nonce: str
    csp: str

    @property
    def headers(self) -> Mapping[str, str]:
        """CSP, never cached (every page is one logout's), no framing, no sniffing."""
        return {
            "Content-Security-Policy": self.csp,
            "Cache-Control": "no-store",
            "Pragma": "no-cache",
            "Referrer-Policy": "strict-origin-when-cross-origin",
            "X-Content-Type-Options": "nosniff",
            "X-Frame-Options": "DENY",
        }
