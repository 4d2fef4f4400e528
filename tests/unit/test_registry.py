"""Loading providers and importing sessions: validated whole, applied all or nothing."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from sqlalchemy import func, select
from structlog.testing import capture_logs

from orchestrator import InputError, Problem, Runtime, SessionRegistry, Settings, importing
from orchestrator.handlers import build_handler
from orchestrator.logout import HandleResult
from orchestrator.store import (
    AuditRow,
    IdpSession,
    Provider,
    ProviderSession,
    RejectedEvent,
)
from protocols import ProtocolHandler
from schemas.redaction import REDACTED
from tests.geoip_data import GeoipFiles
from tests.unit.conftest import make_event, store_providers
from workers.process import _warn_unserved

PROVIDERS = """
[[providers]]
name = "wiki"
protocol = "oidc"
client_id = "wiki"
backchannel_logout_uri = "https://wiki.example.com/bcl"
backchannel_logout_session_required = true

[[providers]]
name = "chat"
protocol = "oidc"
client_id = "chat"
backchannel_logout_uri = "https://chat.example.com/bcl"

[[providers]]
name = "portal"
protocol = "oidc"
client_id = "portal"
frontchannel_logout_uri = "https://portal.example.com/fcl"
frontchannel_logout_session_required = true

[[providers]]
name = "payroll"
protocol = "saml"
entity_id = "https://payroll.example.com/sp"
sls_url = "https://payroll.example.com/sls"
sls_binding = "soap"
"""


class StrictHandler(ProtocolHandler):
    """Requires ``client_id`` in the provider settings."""

    protocol = "strict"

    def validate_settings(self, provider: str, settings: Mapping[str, Any]) -> Any:
        if "client_id" not in settings:
            raise InputError([Problem(f"provider {provider!r}", "client_id", "is required")])
        return {"client_id": str(settings["client_id"])}


def _count(runtime: Runtime, model: Any) -> int:
    with runtime.database() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


@pytest.fixture
def handled(settings: Settings) -> Iterator[Runtime]:
    """A migrated runtime with the OIDC and SAML handlers enabled."""
    rt = Runtime.start(settings.with_overrides(protocols=["oidc", "saml"]))
    yield rt
    rt.close()


def test_providers_load_and_upsert(runtime: Runtime) -> None:
    """Loading twice updates instead of duplicating; protocol settings are kept."""
    registry = SessionRegistry(
        runtime.database, {"strict": build_handler(runtime.settings, StrictHandler)}
    )
    text = '[[providers]]\nname = "wiki"\nprotocol = "strict"\nclient_id = "w"\n'
    first = registry.load_providers_file(text, "p.toml")
    second = registry.load_providers_file(text.replace('"w"', '"w2"'), "p.toml")
    assert (first.created, first.updated, second.created, second.updated) == (1, 0, 0, 1)
    with runtime.database() as db:
        row = db.get(Provider, "wiki")
        assert row is not None
        assert row.settings == {"client_id": "w2"}
        assert row.enabled is True


def test_unknown_protocol_is_refused_whole(handled: Runtime) -> None:
    """A protocol no installed handler serves refuses the file, naming provider, field, fix."""
    text = PROVIDERS + '[[providers]]\nname = "x"\nprotocol = "openid"\nclient_id = "x"\n'
    with pytest.raises(InputError) as caught:
        handled.registry.load_providers_file(text, "providers.toml")
    assert [str(p) for p in caught.value.problems] == [
        "providers.toml: provider 'x': protocol: no installed handler serves 'openid' (did you "
        "mean oidc?); installed: oidc, saml, ssf (fix the name, install the handler, or set "
        "enabled = false)"
    ]
    assert _count(handled, Provider) == 0


def test_installed_protocol_not_enabled_is_refused(settings: Settings) -> None:
    """An installed handler left out of the protocols setting is named, with the setting."""
    runtime = Runtime.start(settings.with_overrides(protocols=["oidc"]))
    try:
        with pytest.raises(InputError) as caught:
            runtime.registry.load_providers_file(PROVIDERS, "providers.toml")
        assert [str(p) for p in caught.value.problems] == [
            "providers.toml: provider 'payroll': protocol: the 'saml' handler is installed but "
            "not enabled by "
            "the protocols setting (enabled: oidc); add it to protocols, or set enabled = false"
        ]
        assert _count(runtime, Provider) == 0
    finally:
        runtime.close()


def test_disabled_provider_without_handler_is_stored_with_a_warning(handled: Runtime) -> None:
    """enabled = false stores a provider no handler serves, unchecked, and says so."""
    summary = handled.registry.load_providers_file(
        '[[providers]]\nname = "x"\nprotocol = "cas"\nenabled = false\nurl = "u"\n', "p.toml"
    )
    assert summary.warnings == (
        "p.toml: provider 'x': no handler for protocol 'cas' is enabled; stored disabled, its "
        "settings unchecked",
    )
    with handled.database() as db:
        row = db.get(Provider, "x")
        assert row is not None
        assert (row.enabled, row.settings) == (False, {"url": "u"})


def test_unserved_providers_are_listed(runtime: Runtime) -> None:
    """Enabled providers stored before the refusal, which no handler serves, are named."""
    store_providers(
        runtime,
        '[[providers]]\nname = "old"\nprotocol = "openid"\n'
        '[[providers]]\nname = "off"\nprotocol = "openid"\nenabled = false\n',
    )
    assert runtime.registry.unserved_providers() == [("old", "openid")]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '[[providers]]\nname = "a"\nprotocol = "oidc"\n[[providers]]\nname = "b"\n',
            "p.toml: provider 'b': protocol: Field required",
        ),
        (
            '[[providers]]\nname = "a b"\nprotocol = "oidc"\n',
            "p.toml: provider 'a b': name: String should match pattern",
        ),
        (
            '[[providers]]\nname = "a"\nprotocol = "oidc"\nenabled = "maybe"\n',
            "p.toml: provider 'a': enabled: Input should be a valid boolean",
        ),
        (
            '[[providers]]\nname = "a"\nprotocol = "oidc"\n[[providers]]\nname = "a"\n'
            'protocol = "oidc"\n',
            "p.toml: provider 'a': name: appears more than once in the file",
        ),
        ('[[provider]]\nname = "a"\n', "p.toml: provider: unknown top-level key"),
        ("[[providers]\n", "p.toml: invalid TOML"),
    ],
)
def test_invalid_providers_file_is_refused_whole(
    runtime: Runtime, text: str, expected: str
) -> None:
    """Any bad provider refuses the whole file, naming provider and field."""
    with pytest.raises(InputError) as caught:
        runtime.registry.load_providers_file(text, "p.toml")
    assert any(str(p).startswith(expected) for p in caught.value.problems), caught.value
    assert _count(runtime, Provider) == 0


def test_handler_validation_refuses_the_file(runtime: Runtime) -> None:
    """The protocol handler's own checks apply on load, and nothing is stored on failure."""
    registry = SessionRegistry(
        runtime.database, {"strict": build_handler(runtime.settings, StrictHandler)}
    )
    text = (
        '[[providers]]\nname = "good"\nprotocol = "strict"\nclient_id = "g"\n'
        '[[providers]]\nname = "bad"\nprotocol = "strict"\n'
    )
    with pytest.raises(InputError, match=r"p.toml: provider 'bad': client_id: is required"):
        registry.load_providers_file(text, "p.toml")
    assert _count(runtime, Provider) == 0
    registry.load_providers_file(text.split('[[providers]]\nname = "bad"')[0], "p.toml")
    with runtime.database() as db:
        row = db.get(Provider, "good")
        assert row is not None
        assert row.settings == {"client_id": "g"}


def test_sessions_import_creates_and_updates(populated: Runtime) -> None:
    """Importing the same lines again updates in place."""
    assert _count(populated, IdpSession) == 4
    assert _count(populated, ProviderSession) == 6
    summary = populated.registry.import_lines(
        ['{"kind": "provider_session", "session_id": "s-1", "provider": "wiki", "sid": "new"}']
    )
    assert (summary.created, summary.updated) == (0, 1)
    with populated.database() as db:
        identifiers = db.scalar(
            select(ProviderSession.identifiers).where(
                ProviderSession.session_id == "s-1", ProviderSession.provider == "wiki"
            )
        )
    assert identifiers is not None
    assert identifiers["sid"] == "new"
    assert _count(populated, ProviderSession) == 6


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (['{"kind": "session", "session_id": "s-5"}'], "line 2: user_id: Field required"),
        (['{"kind": "token", "x": 1}'], "line 2: kind: 'token' is not a known kind; one of: "),
        (["", "{oops"], "line 2: invalid JSON: Expecting property name"),
        (
            ['{"kind": "provider_session", "session_id": "s-1", "provider": "nope"}'],
            "line 2: provider: no such provider",
        ),
        (
            ['{"kind": "provider_session", "session_id": "s-77", "provider": "wiki"}'],
            "line 2: session_id: no such IdP session",
        ),
        (
            ['{"kind": "session", "session_id": "s-1", "user_id": "mallory"}'],
            "line 2: user_id: belongs to user 'alice'",
        ),
    ],
)
def test_invalid_sessions_are_refused_whole(
    populated: Runtime, lines: list[str], expected: str
) -> None:
    """A bad line refuses the file, naming the line (or record) and the field."""
    good = '{"kind": "session", "session_id": "s-new", "user_id": "dave"}'
    with pytest.raises(InputError) as caught:
        populated.registry.import_lines([good, *lines] if len(lines) == 1 else lines)
    rendered = [str(p) for p in caught.value.problems]
    assert any(r.startswith(expected) for r in rendered), rendered
    with populated.database() as db:
        assert db.get(IdpSession, "s-new") is None


def test_python_api_records_sessions(handled: Runtime) -> None:
    """IdP components record sessions and provider sessions through the Python API."""
    handled.registry.load_providers_file(PROVIDERS.replace('"chat"', '"w"'), "p")
    handled.registry.record_session("s-1", "u-1", ip="81.2.69.142", user_agent="ff")
    handled.registry.record_provider_session("s-1", "w", sid="abc", sub="u-1")
    with handled.database() as db:
        link = db.scalar(select(ProviderSession))
        assert link is not None
        assert (link.identifiers, link.provider) == ({"sid": "abc", "sub": "u-1"}, "w")
    with pytest.raises(InputError, match="sid: String should have at most 255 characters"):
        handled.registry.record_provider_session("s-1", "w", sid="x" * 300)
    with pytest.raises(InputError, match="sid given both as a field and in identifiers"):
        handled.registry.record_provider_session("s-1", "w", {"sid": "a"}, sid="b")
    handled.registry.record_provider_session("s-1", "w", {"sid": "c"})  # merged over the row
    with handled.database() as db:
        link = db.scalar(select(ProviderSession))
        assert link is not None
        assert link.identifiers == {"sid": "c", "sub": "u-1"}


def _session(session_id: str, **fields: Any) -> str:
    return json.dumps({"kind": "session", "session_id": session_id, "user_id": "u", **fields})


def _link(session_id: str, provider: str, **ids: str) -> str:
    return json.dumps(
        {"kind": "provider_session", "session_id": session_id, "provider": provider, **ids}
    )


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            _link("s-1", "wiki", sub="u"),
            "line 2: sid: required: provider 'wiki' sets backchannel_logout_session_required = "
            "true (give the sid of the client's ID token)",
        ),
        (
            _link("s-1", "portal"),
            "line 2: sid: required: provider 'portal' sets frontchannel_logout_session_required "
            "= true (give the sid of the client's ID token)",
        ),
        (
            _link("s-1", "chat"),
            "line 2: sid: a logout token needs sid or sub, and neither is given (give the sid "
            "or the sub the client received in its ID token)",
        ),
        (
            _link("s-1", "chat", sid="c", session_index="_i"),
            "line 2: session_index: is not an identifier of protocol 'oidc' (provider 'chat' "
            "takes: sid, sub)",
        ),
        (
            _link("s-1", "payroll", session_index="_i"),
            "line 2: name_id: required: a LogoutRequest names the NameID issued to the SP (give "
            "it, with name_id_format and session_index as in the assertion)",
        ),
        (
            _link("s-1", "payroll", name_id="a@x", sid="s"),
            "line 2: sid: is not an identifier of protocol 'saml' (provider 'payroll' takes: "
            "name_id, name_id_format, name_qualifier, sp_name_qualifier, session_index)",
        ),
    ],
)
def test_provider_session_the_handler_refuses(handled: Runtime, line: str, expected: str) -> None:
    """Each handler checks the identifiers its logout needs; the file is refused whole."""
    handled.registry.load_providers_file(PROVIDERS, "providers.toml")
    with pytest.raises(InputError) as caught:
        handled.registry.import_lines([_session("s-1"), line])
    assert [str(p) for p in caught.value.problems] == [expected]
    assert _count(handled, IdpSession) == 0


def test_provider_sessions_the_handlers_accept(handled: Runtime) -> None:
    """What each logout needs passes; an update is checked merged with what is stored."""
    handled.registry.load_providers_file(PROVIDERS, "providers.toml")
    summary = handled.registry.import_lines(
        [
            _session("s-1"),
            _link("s-1", "wiki", sid="w"),
            _link("s-1", "chat", sub="u"),
            _link("s-1", "portal", sid="p"),
            _link("s-1", "payroll", name_id="a@x"),
        ]
    )
    assert (summary.sessions_created, summary.provider_sessions_created) == (1, 4)
    update = handled.registry.import_lines([_link("s-1", "payroll", session_index="_i")])
    assert (update.created, update.updated, update.warnings) == (0, 1, ())
    with handled.database() as db:
        row = db.scalar(select(ProviderSession).where(ProviderSession.provider == "payroll"))
        assert row is not None
        assert row.identifiers == {"name_id": "a@x", "session_index": "_i"}


def test_record_provider_session_is_checked_by_the_handler(handled: Runtime) -> None:
    """The Python API refuses what the handler refuses, naming the record and the field."""
    handled.registry.load_providers_file(PROVIDERS, "providers.toml")
    handled.registry.record_session("s-1", "u")
    with pytest.raises(InputError) as caught:
        handled.registry.record_provider_session("s-1", "payroll", session_index="_i")
    assert str(caught.value).startswith("provider session s-1/payroll: name_id: required")
    assert _count(handled, ProviderSession) == 0


def test_sessions_of_providers_without_handler_warn(populated: Runtime) -> None:
    """Provider sessions of a provider no enabled handler serves are stored, with a warning."""
    summary = populated.registry.import_lines([_link("s-2", "chat", sid="c2")])
    assert summary.warnings == (
        "provider 'chat': no handler for its protocol is enabled; 1 provider session(s) "
        "stored unchecked, and its logouts are skipped",
    )


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"network_binding": "bind_asn", "ip": "89.160.20.112"},
            "line 1: network_binding: bind_asn needs the GeoIP ASN database, and none is "
            "configured (set geoip_asn_db, or use no_binding)",
        ),
        (
            {"geoip_binding": "bind_continent_country", "ip": "81.2.69.142"},
            "line 1: geoip_binding: bind_continent_country needs the GeoIP City database, and "
            "none is configured (set geoip_city_db, or use no_binding)",
        ),
        (
            {"network_binding": "bind_asn_network_ip", "asn": 29518, "ip": "89.160.20.112"},
            "line 1: network_binding: bind_asn_network_ip needs the GeoIP ASN database, and "
            "none is configured (set geoip_asn_db, or use no_binding)",
        ),
    ],
)
def test_binding_modes_need_their_database(
    runtime: Runtime, fields: dict[str, Any], expected: str
) -> None:
    """A binding mode no configured database serves is refused on import, naming the fix."""
    with pytest.raises(InputError) as caught:
        runtime.registry.import_lines([_session("s-1", **fields), _session("s-2")])
    assert [str(p) for p in caught.value.problems] == [expected]
    assert _count(runtime, IdpSession) == 0


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        (
            {"network_binding": "bind_asn"},
            "line 1: ip: a network or GeoIP binding needs the login's address: give ip, or use "
            "no_binding",
        ),
        ({"ip": "999.1.1.1"}, "line 1: ip: '999.1.1.1' is not an IPv4 or IPv6 address"),
        ({"ip": "not-an-ip"}, "line 1: ip: 'not-an-ip' is not an IPv4 or IPv6 address"),
    ],
)
def test_a_login_address_is_required_by_a_binding_and_must_be_one(
    settings: Settings, geoip_files: GeoipFiles, fields: dict[str, Any], expected: str
) -> None:
    """A bound session without its login address would be ended by its first check; an
    address that is none is refused whether or not GeoIP databases are configured."""
    with_databases = settings.with_overrides(
        geoip_city_db=geoip_files.city, geoip_asn_db=geoip_files.asn
    )
    for configured in (with_databases, settings):
        if "network_binding" in fields and configured is settings:
            continue  # without databases the binding is refused for that reason first
        runtime = Runtime.start(configured, handlers={})
        try:
            with pytest.raises(InputError) as caught:
                runtime.registry.import_lines([_session("s-1", **fields)])
        finally:
            runtime.close()
        assert [str(p) for p in caught.value.problems] == [expected]


def test_record_session_refuses_a_binding_without_database(
    settings: Settings, geoip_files: GeoipFiles
) -> None:
    """record_session: the City database alone serves geoip_binding, not network_binding."""
    runtime = Runtime.start(settings.with_overrides(geoip_city_db=geoip_files.city), handlers={})
    try:
        runtime.registry.record_session(
            "s-1", "u", ip="81.2.69.142", geoip_binding="bind_continent"
        )
        with pytest.raises(InputError, match=r"^session 's-2': network_binding: bind_asn needs"):
            runtime.registry.record_session(
                "s-2", "u", ip="81.2.69.142", network_binding="bind_asn"
            )
        with runtime.database() as db:
            row = db.get(IdpSession, "s-1")
            assert row is not None
            assert (row.continent, row.country) == ("EU", "GB")
            assert db.get(IdpSession, "s-2") is None
    finally:
        runtime.close()


def test_repeated_records_are_one_row(runtime: Runtime) -> None:
    """A session or provider session repeated in one file is created once, then updated."""
    store_providers(runtime, '[[providers]]\nname = "w"\nprotocol = "x"\n')
    summary = runtime.registry.import_lines(
        [
            _session("s-1", ip="192.0.2.1"),
            _link("s-1", "w", sid="a"),
            _session("s-1", user_agent="ff"),
            _link("s-1", "w", sub="u"),
        ]
    )
    assert (summary.created, summary.updated) == (2, 2)
    assert (summary.sessions_created, summary.sessions_updated) == (1, 1)
    with runtime.database() as db:
        session = db.get(IdpSession, "s-1")
        link = db.scalar(select(ProviderSession))
        assert session is not None
        assert link is not None
        assert (session.ip, session.user_agent) == ("192.0.2.1", "ff")
        assert link.identifiers == {"sid": "a", "sub": "u"}


def test_progress_is_reported_with_totals(populated: Runtime) -> None:
    """The callback hears how far validating and writing got, ending at the totals."""
    lines = [_session(f"p-{n}") for n in range(2500)] + ["", _link("p-1", "wiki", sid="x")]
    calls: list[tuple[str, int, int]] = []
    populated.registry.import_lines(lines, progress=lambda *call: calls.append(call))
    validating = [c for c in calls if c[0] == "validating"]
    writing = [c for c in calls if c[0] == "writing"]
    assert validating[-1] == ("validating", 2502, 2502)
    assert [done for _, done, _ in validating] == sorted(done for _, done, _ in validating)
    assert writing[0] == ("writing", 0, 2501)
    assert writing[-1] == ("writing", 2501, 2501)
    assert len(writing) >= 3  # reported per chunk


def test_session_started_with_unserved_binding_is_rejected(runtime: Runtime) -> None:
    """session.started with a binding no database serves is rejected and kept, not recorded;
    its device cookie id (a bearer secret) is kept redacted, in rejected_events and in
    event.rejected alike."""
    processor = runtime.processor(schedule=lambda *_: None)
    event = make_event(
        "session.started",
        session_id="s-1",
        user_id="u",
        ip="81.2.69.142",
        network_binding="bind_asn",
        device_id="cookie-secret-1",
    )
    assert processor.handle(event, "m-1") is HandleResult.REJECTED
    expected = (
        "session 's-1': network_binding: bind_asn needs the GeoIP ASN database, and none is "
        "configured (set geoip_asn_db, or use no_binding)"
    )
    with runtime.database() as db:
        assert db.get(IdpSession, "s-1") is None
        [kept] = db.scalars(select(RejectedEvent))
        assert (kept.message_id, kept.problems) == ("m-1", [expected])
        [audited] = db.scalars(select(AuditRow).where(AuditRow.type == "event.rejected"))
        assert audited.detail["problems"] == [expected]
        assert not list(db.scalars(select(AuditRow).where(AuditRow.type == "session.started")))
    assert json.loads(kept.payload)["device_id"] == REDACTED
    assert json.loads(kept.payload)["session_id"] == "s-1"
    assert "cookie-secret-1" not in json.dumps(audited.detail)


def test_worker_start_names_unserved_providers(runtime: Runtime) -> None:
    """At start the worker warns, naming each enabled provider no enabled handler serves."""
    store_providers(runtime, '[[providers]]\nname = "old"\nprotocol = "openid"\n')
    with capture_logs() as logs:
        _warn_unserved(runtime)
    [warning] = [entry for entry in logs if entry["log_level"] == "warning"]
    assert warning["providers"] == {"old": "openid"}
    assert "logouts are skipped" in warning["event"]


def test_importing_exports() -> None:
    """The import package's public names are pinned and sorted, and each is importable."""
    exported = list(importing.__all__)
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    assert set(exported) == {"CHUNK", "GeoipDatabases", "ImportCounts", "Progress", "SessionImport"}
    assert all(hasattr(importing, name) for name in exported)
