"""Unit tests of the egress policy on ``providers load``: refused literals and names, for OIDC
and SAML alike; warnings for names that do not resolve; egress_allow; no DNS is asked."""

from __future__ import annotations

import socket
import time
from collections.abc import Mapping
from typing import Any

import pytest

from orchestrator import InputError, Settings
from orchestrator.egress import EgressPolicy
from orchestrator.egress_screen import screen_urls
from orchestrator.handlers import load_handlers
from orchestrator.providers_file import CheckedProviders, check_providers
from protocols import ProtocolHandler

#: What the stand-in DNS answers; any other name does not resolve.
DNS: Mapping[str, list[str]] = {
    "rp.example": ["93.184.216.34"],
    "inside.example": ["10.9.8.7"],
    "metadata-alias.example": ["169.254.169.254"],
    "half.example": ["93.184.216.34", "fd00::7"],
}


def _resolve(host: str, port: int) -> list[str]:
    if host in DNS:
        return DNS[host]
    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")


class _Loaded(dict[str, ProtocolHandler]):
    """The handlers, and the egress_allow of the settings they were loaded with."""

    egress_allow: tuple[str, ...] = ()


def _handlers(settings: Settings, **changes: Any) -> _Loaded:
    changed = settings.with_overrides(protocols=["oidc", "saml"], **changes)
    loaded = _Loaded(load_handlers(changed))
    loaded.egress_allow = tuple(changed.egress_allow)
    return loaded


def _oidc(url: str) -> dict[str, Any]:
    return {"name": "rp", "protocol": "oidc", "client_id": "rp", "backchannel_logout_uri": url}


def _saml(url: str, binding: str = "soap") -> dict[str, Any]:
    return {
        "name": "sp",
        "protocol": "saml",
        "entity_id": "https://sp.example/entity",
        "sls_url": url,
        "sls_binding": binding,
        "allow_http": True,
    }


def _check(tables: list[dict[str, Any]], handlers: _Loaded) -> CheckedProviders:
    allow = handlers.egress_allow
    return check_providers(tables, handlers, "p.toml", egress_allow=allow, resolve=_resolve)


def _refusal(table: dict[str, Any], handlers: _Loaded) -> str:
    with pytest.raises(InputError) as refused:
        _check([table], handlers)
    [problem] = refused.value.problems
    return str(problem)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("https://169.254.169.254/latest", "'169.254.169.254' is a cloud metadata address"),
        ("https://[::ffff:169.254.169.254]/", "'::ffff:169.254.169.254' is a cloud metadata"),
        ("https://2852039166/", "'2852039166' is a cloud metadata address"),
        ("https://metadata.google.internal/", "is a cloud metadata host name"),
        ("http://10.0.0.1:6379/", "'10.0.0.1' is a private address"),
        ("https://0x7f.1/bc", "'0x7f.1' is a loopback address"),
        ("https://[fe80::1]/bc", "'fe80::1' is a link-local address"),
        ("https://inside.example/bc", "'inside.example' resolves to a private address"),
        ("https://metadata-alias.example/", "resolves to a cloud metadata address"),
        ("https://half.example/", "'half.example' resolves to a unique-local address"),
    ],
)
@pytest.mark.parametrize("protocol", ["oidc", "saml"])
def test_refused_destination_fails_the_load(
    settings: Settings, protocol: str, url: str, reason: str
) -> None:
    """A back-channel URL whose host the egress policy refuses (a literal in any notation,
    a metadata name, a name resolving to a refused range) is a problem naming the file,
    provider, field, the policy and egress_allow, for OIDC and SAML alike."""
    handlers = _handlers(settings, egress_allow=[])
    table = _oidc(url) if protocol == "oidc" else _saml(url)
    table["allow_http"] = True
    field = "backchannel_logout_uri" if protocol == "oidc" else "sls_url"
    name = "rp" if protocol == "oidc" else "sp"
    message = _refusal(table, handlers)
    assert message.startswith(f"p.toml: provider {name!r}: {field}: refused by the egress policy: ")
    assert reason in message
    assert message.endswith("add the host or its network to egress_allow to admit it")


def test_allow_http_does_not_widen_the_policy(settings: Settings) -> None:
    """allow_http = true permits http, not a loopback destination."""
    handlers = _handlers(settings, egress_allow=[])
    table = {**_oidc("http://127.0.0.1:8080/bc"), "allow_http": True}
    assert "'127.0.0.1' is a loopback address" in _refusal(table, handlers)


def test_egress_allow_admits_internal_providers(settings: Settings) -> None:
    """Providers at addresses or names egress_allow lists load without a problem."""
    handlers = _handlers(settings, egress_allow=["10.0.0.0/8", "127.0.0.1"])
    tables = [
        {**_oidc("http://127.0.0.1:8080/bc"), "allow_http": True},
        {**_saml("https://inside.example/sls"), "name": "sp"},
        {**_oidc("https://10.1.2.3/bc"), "name": "rp2", "client_id": "rp2"},
    ]
    checked = _check(tables, handlers)
    assert [config.name for config, _ in checked.providers] == ["rp", "sp", "rp2"]
    assert checked.warnings == ()


def test_name_that_does_not_resolve_is_a_warning(settings: Settings) -> None:
    """A name that does not resolve at load time is stored with a warning: the check when
    a request is sent decides."""
    checked = _check([_oidc("https://gone.example/bc")], _handlers(settings))
    assert len(checked.providers) == 1
    assert checked.warnings == (
        "p.toml: provider 'rp': backchannel_logout_uri: 'gone.example' does not resolve now "
        "(Name or service not known); the egress policy is applied when a request is sent",
    )


def test_public_destination_and_browser_urls_pass(settings: Settings) -> None:
    """A public back-channel destination passes; URLs only the browser loads (OIDC
    front-channel, SAML Redirect/POST) are not the worker's egress and are not checked."""
    tables = [
        _oidc("https://rp.example/bc"),
        {
            "name": "fc",
            "protocol": "oidc",
            "client_id": "fc",
            "frontchannel_logout_uri": "https://10.0.0.8/fc",
        },
        _saml("https://192.168.1.4/sls", binding="redirect"),
    ]
    checked = _check(tables, _handlers(settings, egress_allow=[]))
    assert len(checked.providers) == 3
    assert checked.warnings == ()


def test_screening_resolves_each_name_once_and_gives_up_after_the_timeout() -> None:
    """Each distinct name is resolved once; a resolver slower than the timeout gives a
    warning, not a hang."""
    asked: list[str] = []

    def slow(host: str, port: int) -> list[str]:
        asked.append(host)
        if host == "slow.example":
            time.sleep(1.0)
        return ["93.184.216.34"]

    found = screen_urls(
        EgressPolicy(),
        ["https://a.example/x", "https://a.example/y", "https://slow.example/"],
        resolve=slow,
        timeout=0.2,
    )
    assert sorted(asked) == ["a.example", "slow.example"]
    assert [s.refusal for s in found] == [None, None, None]
    assert found[2].warning == (
        "'slow.example' was not resolved within 0.2 s; the egress policy is applied when a "
        "request is sent"
    )
