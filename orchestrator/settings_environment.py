"""What the settings read besides their own fields: ``LOGOUT_*`` variables that belong to a
protocol handler (``LOGOUT_SAML_KEY_FILE``), the ``[protocols]`` table of the file, spellings
that moved, variables that are no setting, and URLs shown with their passwords masked."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from typing import Any, Final
from urllib.parse import urlsplit, urlunsplit

from schemas.hints import closest

__all__ = [
    "ENV_PREFIX",
    "MOVED",
    "NON_SETTING_VARIABLES",
    "handler_variables",
    "moved_message",
    "redact_url",
    "redact_urls",
    "shape_file",
    "unknown_variables",
]

ENV_PREFIX: Final = "LOGOUT_"
#: ``LOGOUT_*`` variables the project's scripts and tests read that are not settings.
NON_SETTING_VARIABLES: Final = frozenset(
    {
        "LOGOUT_CONFIG",
        "LOGOUT_DEVICE_ID",
        "LOGOUT_PYTHON",
        "LOGOUT_FORCE_INSTALL",
        "LOGOUT_REPO_ROOT",
    }
)
_NON_SETTING_PREFIXES: Final = ("LOGOUT_TEST_", "LOGOUT_BENCH_")
#: Settings that moved into a protocol handler's own settings: old name -> (protocol, field).
MOVED: Final = {
    "saml_entity_id": ("saml", "entity_id"),
    "saml_key_file": ("saml", "key_file"),
    "saml_cert_file": ("saml", "cert_file"),
    "saml_request_lifetime": ("saml", "request_lifetime"),
    "saml_slo_urls": ("saml", "slo_urls"),
    "saml_sso_urls": ("saml", "sso_urls"),
    "oidc_key_files": ("oidc", "key_files"),
    "oidc_active_kid": ("oidc", "active_kid"),
    "logout_token_lifetime": ("oidc", "logout_token_lifetime"),
}


def moved_message(old: str) -> str:
    """Where a setting of :data:`MOVED` is set now, naming the table key and the variable."""
    protocol, field = MOVED[old]
    return (
        f"{old} moved to the {protocol} handler's settings: set {field} under "
        f"[protocols.{protocol}] ({ENV_PREFIX}{protocol.upper()}_{field.upper()}; from Python, "
        f"protocol_settings={{{protocol!r}: {{{field!r}: ...}}}})"
    )


def shape_file(data: dict[str, Any]) -> dict[str, Any]:
    """The file's values with a ``[protocols]`` table split: its ``enabled`` list becomes
    ``protocols``, each ``[protocols.<name>]`` section ``protocol_settings[<name>]``.

    A top-level ``protocols = [...]`` list (the older spelling) is kept as it is.
    """
    table = data.get("protocols")
    if not isinstance(table, dict):
        return data
    shaped = {key: value for key, value in data.items() if key != "protocols"}
    sections = dict(table)
    if "enabled" in sections:
        shaped["protocols"] = sections.pop("enabled")
    shaped["protocol_settings"] = sections
    return shaped


def _candidates(environ: Mapping[str, str], fields: Collection[str]) -> list[str]:
    """``LOGOUT_*`` variables (upper-cased) that are no host setting nor the project's own."""
    found = []
    for variable in sorted(environ):
        name = variable.upper()
        if not name.startswith(ENV_PREFIX) or name.removeprefix(ENV_PREFIX) in fields:
            continue
        if name in NON_SETTING_VARIABLES or name.startswith(_NON_SETTING_PREFIXES):
            continue
        found.append(variable)
    return found


def _installed() -> list[str]:
    from protocols.loading import available_protocols  # only when a variable may be one's

    return available_protocols()


def handler_variables(
    environ: Mapping[str, str], fields: Collection[str]
) -> dict[str, dict[str, Any]]:
    """The texts of ``LOGOUT_<PROTOCOL>_<FIELD>`` variables by installed protocol and field
    (lower-cased): what each handler's settings model validates."""
    upper = {name.upper() for name in fields}
    candidates = _candidates(environ, upper)
    sections: dict[str, dict[str, Any]] = {}
    for protocol in _installed() if candidates else []:
        prefix = f"{ENV_PREFIX}{protocol.upper()}_"
        for variable in candidates:
            if variable.upper().startswith(prefix):
                field = variable.upper().removeprefix(prefix).lower()
                sections.setdefault(protocol, {})[field] = _table(environ[variable])
    return sections


def _table(text: str) -> Any:
    """A JSON object's text as a dict (so it merges key by key with the file's table), any
    other text as it is: the handler's settings model judges it."""
    if not text.lstrip().startswith("{"):
        return text
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def unknown_variables(environ: Mapping[str, str], fields: Collection[str]) -> list[str]:
    """One warning for each ``LOGOUT_*`` variable in ``environ`` that is neither a setting
    (``fields``) nor a protocol handler's (``LOGOUT_<PROTOCOL>_*``).

    Names are matched without regard to case, as the settings read them; the project's own
    non-setting variables (:data:`NON_SETTING_VARIABLES`, ``LOGOUT_TEST_*``, ``LOGOUT_BENCH_*``)
    are not reported. Each warning suggests the closest setting's variable, when one is close,
    or the new name of a setting that moved.
    """
    upper = [name.upper() for name in fields]
    candidates = _candidates(environ, upper)
    prefixes = tuple(f"{ENV_PREFIX}{p.upper()}_" for p in (_installed() if candidates else []))
    warnings = []
    for variable in candidates:
        name = variable.upper()
        if name.startswith(prefixes):
            continue
        old = name.removeprefix(ENV_PREFIX).lower()
        if old in MOVED:
            warnings.append(f"{variable} is ignored: {moved_message(old)}")
            continue
        # LOGOUT_CONFIG is no setting but is the one most costly to misspell (the file is
        # then never read): it is suggested too.
        close = closest(name.removeprefix(ENV_PREFIX), [*upper, "CONFIG"])
        hint = f" (did you mean {ENV_PREFIX}{close.upper()}?)" if close else ""
        warnings.append(f"{variable} is not a setting{hint}; it is ignored")
    return warnings


_USERINFO_PASSWORD = re.compile(r"(?P<user>//[^/@:]*):[^/@]*@")
_QUERY_PASSWORD = re.compile(r"(?P<key>(?:^|(?<=[&;]))[^=&;]*pass(?:word)?)=[^&;]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (host, port and user kept as written)."""
    try:
        parts = urlsplit(url)
    except ValueError:  # not parseable (say a broken IPv6 host): mask any user:password@
        return _USERINFO_PASSWORD.sub(r"\g<user>:***@", url)
    userinfo, at, host = parts.netloc.rpartition("@")
    if at and ":" in userinfo:
        url = urlunsplit(parts._replace(netloc=f"{userinfo.partition(':')[0]}:***@{host}"))
    # libpq and redis also take a password in the query (?password=, ?sslpassword=).
    base, mark, query = url.partition("?")
    return base + mark + _QUERY_PASSWORD.sub(r"\g<key>=***", query)


def redact_urls(value: Any) -> Any:
    """``value`` with the password of every URL in it masked, at any depth."""
    if isinstance(value, str):
        return redact_url(value) if "://" in value else value
    if isinstance(value, Mapping):
        return {key: redact_urls(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact_urls(item) for item in value]
    return value
