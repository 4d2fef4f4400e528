"""The URLs a plan may put in front of the browser: absolute http(s), nothing else.

A provider's URL reaches a page only through :func:`check_url`, so ``javascript:``,
``data:``, a relative or protocol-relative URL, or one with credentials, whitespace,
control characters or characters a URI never holds unencoded (``"<>`` and the like) is
refused at render time with :class:`UnsafeUrlError`, never written into the page (where
it would be escaped anyway).
"""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from orchestrator.frontchannel.errors import UnsafeUrlError

__all__ = ["check_local_url", "check_url", "origin", "without_query"]

_SCHEMES = ("https", "http")


#: Characters RFC 3986 never allows unencoded in a URI (plus the backslash browsers read
#: as a slash): a URL holding one is refused rather than repaired.
_NEVER = frozenset('"<>`{}|^\\')


def _plain(url: str, what: str) -> None:
    if not url.isprintable() or any(c.isspace() or c in _NEVER for c in url):
        raise UnsafeUrlError(
            f"{what}: whitespace, control characters or one of {''.join(sorted(_NEVER))} "
            "in the URL (they must be percent-encoded)"
        )


def check_url(url: str, what: str = "url") -> str:
    """``url`` when it is an absolute http(s) URL with a host and no credentials."""
    _plain(url, what)
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number raises here
    except ValueError as exc:
        raise UnsafeUrlError(f"{what}: not a valid URL ({exc})") from exc
    if parts.scheme.lower() not in _SCHEMES:
        shown = f"{parts.scheme!r}" if parts.scheme else "none (a relative URL)"
        raise UnsafeUrlError(f"{what}: only http and https URLs are rendered; scheme is {shown}")
    if not parts.hostname:
        raise UnsafeUrlError(f"{what}: the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise UnsafeUrlError(f"{what}: the URL carries credentials")
    return url


def check_local_url(url: str, what: str = "url") -> str:
    """``url`` when it is an absolute http(s) URL or a path on this origin (``/...``)."""
    if url.startswith("/") and not url.startswith("//"):
        _plain(url, what)
        return url
    return check_url(url, what)


def origin(url: str) -> str:
    """``scheme://host[:port]`` of a checked URL, as a CSP source expression."""
    parts = urlsplit(check_url(url))
    return f"{parts.scheme.lower()}://{parts.netloc.lower()}"


def without_query(url: str) -> str:
    """A checked URL without its query and fragment (what a reachability probe may ask)."""
    parts = urlsplit(check_url(url))
    return urlunsplit((parts.scheme, parts.netloc, parts.path or "/", "", ""))
