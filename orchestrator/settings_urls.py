"""Checking the settings' URLs (``database_url``, ``broker_url``, ``issuer``,
``api_public_url``) when the settings are read, so that every
command refuses a URL no driver could use (exit 6, naming the setting and its source) instead
of failing later, deep in SQLAlchemy or redis-py.

Without importing either (a command's start pays for every import): the database URL is read
with SQLAlchemy's own URL pattern (``sqlalchemy.engine.url._parse_url``), so what passes here
parses there.
"""

from __future__ import annotations

import re
from typing import Annotated, Final
from urllib.parse import urlsplit

from pydantic import AfterValidator

__all__ = [
    "BROKER_SCHEMES",
    "BrokerUrl",
    "DatabaseUrl",
    "IssuerUrl",
    "PublicUrl",
    "check_broker_url",
    "check_database_url",
    "check_http_url",
]

BROKER_SCHEMES: Final = ("redis", "rediss", "amqp", "amqps", "memory")

#: SQLAlchemy's URL pattern (``sqlalchemy/engine/url.py``, ``_parse_url``).
_SQLALCHEMY_URL: Final = re.compile(
    r"""
        (?P<name>[\w\+]+)://
        (?:
            (?P<username>[^:/]*)
            (?::(?P<password>[^@]*))?
        @)?
        (?:
            (?:
                \[(?P<ipv6host>[^/\?]+)\] |
                (?P<ipv4host>[^/:\?]+)
            )?
            (?::(?P<port>[^/\?]*))?
        )?
        (?:/(?P<database>[^\?]*))?
        (?:\?(?P<query>.*))?
    """,
    re.X,
)

_DATABASE_FORMS: Final = (
    "sqlite:///relative/path.db, sqlite:////absolute/path.db or "
    "postgresql://user:password@host:5432/dbname"
)


def _port_problem(port: str | None) -> str | None:
    if not port:
        return None
    if not port.isascii() or not port.isdigit() or not 0 < int(port) < 65536:
        return f"its port {port!r} is not a port number (1 to 65535)"
    return None


def check_database_url(url: str) -> str:
    """``url`` when SQLAlchemy can parse it and its driver can open it; else ValueError
    saying what is wrong and the forms it takes (the password never shown)."""
    found = _SQLALCHEMY_URL.match(url)
    if found is None:
        raise ValueError(f"not a database URL; give one such as {_DATABASE_FORMS}")
    parts = found.groupdict()
    problem = _port_problem(parts["port"])
    if problem is not None:
        raise ValueError(f"{problem}; give one such as {_DATABASE_FORMS}")
    backend = parts["name"].partition("+")[0]
    named = [name for name in ("username", "password", "ipv4host", "ipv6host") if parts[name]]
    if backend == "sqlite" and (named or parts["port"]):
        raise ValueError(
            "a SQLite URL names a file, not a host: three slashes before a relative path "
            "(sqlite:///logout.db), four before an absolute one (sqlite:////var/lib/logout.db)"
        )
    return url


def _redis_db_problem(path: str) -> str | None:
    number = path.strip("/")
    if number and not (number.isascii() and number.isdigit()):
        return (
            f"its database {number!r} is not a number: give redis://host:6379/0 "
            "(the number after the slash is the Redis database)"
        )
    return None


def check_broker_url(url: str) -> str:
    """``url`` when its scheme is a broker's, its port a number and, for Redis, its path a
    database number; else ValueError saying what is wrong (the password never shown)."""
    parts = urlsplit(url)
    if parts.scheme not in BROKER_SCHEMES:
        raise ValueError(f"scheme {parts.scheme!r} is not one of {', '.join(BROKER_SCHEMES)}")
    if "@" in url.partition("://")[2] and "@" not in parts.netloc:
        # The credentials hold a '/', '?' or '#', which ended the host part early: what
        # follows would be read as the port or the path, and echoing it shows the password.
        raise ValueError(
            "its user or password holds '/', '?' or '#' unencoded; percent-encode them "
            "(%2F, %3F, %23)"
        )
    try:
        parts.port  # noqa: B018 - parsing it is the check
    except ValueError:
        port = parts.netloc.rpartition("@")[2].rpartition(":")[2]
        raise ValueError(
            f"its port {port!r} is not a port number (1 to 65535); give one such as "
            "redis://127.0.0.1:6379/0 or amqp://user:password@host:5672/%2F"
        ) from None
    if parts.scheme in ("redis", "rediss"):
        problem = _redis_db_problem(parts.path)
        if problem is not None:
            raise ValueError(problem)
    return url


def check_http_url(value: str, example: str) -> str:
    """``value`` when it is an absolute http(s) URL with a host and no query, fragment or
    credentials; else ValueError with ``example``."""
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"must be an absolute http(s) URL, e.g. {example}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError("must have no query, fragment or credentials")
    return value


#: ``broker_url``: see :func:`check_broker_url`.
BrokerUrl = Annotated[str, AfterValidator(check_broker_url)]
#: ``database_url``: see :func:`check_database_url` (empty: the default, SQLite in data_dir).
DatabaseUrl = Annotated[str, AfterValidator(lambda value: value and check_database_url(value))]
#: ``issuer``: OpenID Connect Discovery 1.0 §3, a URL with a host and no query or fragment,
#: kept exactly as given (relying parties compare ``iss`` character by character).
IssuerUrl = Annotated[
    str, AfterValidator(lambda value: check_http_url(value, "https://idp.example.com"))
]
#: ``api_public_url``: where others reach the service, without a trailing slash.
PublicUrl = Annotated[
    str,
    AfterValidator(lambda value: check_http_url(value, "https://logout.example.com").rstrip("/")),
]
