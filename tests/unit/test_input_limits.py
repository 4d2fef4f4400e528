"""What the contracts, the providers file and the session import refuse, in one round.

Identifiers with control characters, free text over its cap or holding a NUL, epoch numbers
as timestamps, the nil UUID, an end before the start, provider URIs with a user, spaces or
line breaks; every refusal names the field, and the JSON Schema states each bound.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from orchestrator import InputError, Runtime, Settings, parse_event, parse_event_lines
from orchestrator.errors import ConfigurationError
from orchestrator.handlers import load_handlers
from orchestrator.providers_file import check_providers, read_providers_toml
from orchestrator.writable import check_writable
from protocols.files import UnreadableFileError, read_regular_file
from schemas import SessionBindingViolation
from schemas.fields import CLIPPED_MARK
from schemas.jsonschema import SCHEMA_DIR
from tests.unit.conftest import make_event, store_providers


def _problems(raw: dict[str, Any]) -> list[str]:
    with pytest.raises(InputError) as caught:
        parse_event(raw, "event 1")
    return [str(problem) for problem in caught.value.problems]


# -- events ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "field"),
    [
        ("logout.user", "session_id"),
        ("logout.user", "plan_id"),
        ("logout.provider", "provider"),
        ("user.revoke_all", "user_id"),
        ("session.terminate_others", "keep_session_id"),
    ],
)
@pytest.mark.parametrize("character", ["\x00", "\n", "\r", "\x1b", "\x7f", "\x85"])
def test_control_characters_in_identifiers_are_refused(
    kind: str, field: str, character: str
) -> None:
    """A NUL, line break, escape, DEL or C1 control in any identifier names field and code."""
    base = {
        "session_id": "s-1",
        "provider": "wiki",
        "user_id": "u-1",
        "keep_session_id": "s-2",
    }
    fields = {k: v for k, v in base.items() if k in _FIELDS[kind]}
    fields[field] = f"s{character}1"
    problems = _problems(make_event(kind, **fields))
    assert problems == [
        f"event 1: {field}: contains the control character U+{ord(character):04X} at position "
        "2; identifiers are printable text"
    ]


_FIELDS = {
    "logout.user": {"session_id", "plan_id"},
    "logout.provider": {"session_id", "provider"},
    "user.revoke_all": {"user_id"},
    "session.terminate_others": {"user_id", "keep_session_id"},
}


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"actor": "a" * 256}, "actor", "at most 255 characters"),
        ({"actor": "ad\x00min"}, "actor", "contains a NUL character at position 3"),
        ({"request": {"method": "GET\r\nX: y"}}, "request.method", "control character"),
        ({"request": {"ip": "not-an-ip"}}, "request.ip", "is not an IPv4 or IPv6 address"),
        ({"request": {"args": {"q": {"deep": 1}}}}, "request.args.q", "list of strings"),
        ({"occurred_at": 1_700_000_000}, "occurred_at", "not a number"),
        ({"occurred_at": "1700000000"}, "occurred_at", "not a number"),
        ({"event_id": "00000000-0000-0000-0000-000000000000"}, "event_id", "the nil UUID"),
    ],
)
def test_free_text_caps_and_formats_are_refused_with_the_field(
    change: dict[str, Any], field: str, message: str
) -> None:
    """Each free-text cap, the request's shape, epoch timestamps and the nil UUID."""
    problems = _problems(make_event("logout.user", session_id="s-1", **change))
    assert len(problems) == 1, problems
    assert problems[0].startswith(f"event 1: {field}: "), problems
    assert message in problems[0], problems


@pytest.mark.parametrize(
    "when",
    [
        "9999-12-31T23:59:59+00:00",  # a lifetime added to it overflowed the worker
        "9999-12-31T23:59:59-01:00",  # no instant of the calendar in UTC
        "0001-01-01T00:00:00+01:00",  # nor this one
        "9000-01-01T00:00:00Z",
        "1969-12-31T23:59:59Z",
    ],
)
def test_a_timestamp_no_clock_gives_is_refused_naming_the_range(when: str) -> None:
    """Past 9000 (UTC) the session policy's lifetimes overflowed the worker: the event was
    accepted, then neither handled nor refused. Now it is refused where it is published."""
    started = make_event("session.started", session_id="s-1", user_id="u-1", occurred_at=when)
    seen = make_event("logout.user", session_id="s-1", occurred_at=when)
    for event in (started, seen):
        assert _problems(event) == [
            "event 1: occurred_at: must fall from 1970-01-01T00:00:00Z up to (not including) "
            "9000-01-01T00:00:00Z, in UTC; check the clock that wrote it"
        ]


@pytest.mark.parametrize(
    ("when", "taken"),
    [
        ("9999-12-31T23:59:59Z", True),  # an IdP's "never": nothing is added to an end
        ("8999-12-31T23:59:59Z", True),
        ("9999-12-31T23:59:59-01:00", False),  # no instant of the calendar in UTC
        ("1969-12-31T23:59:59Z", False),
    ],
)
def test_an_end_may_be_as_late_as_the_calendar_goes(when: str, taken: bool) -> None:
    started = make_event("session.started", session_id="s-1", user_id="u-1", expires_at=when)
    if taken:
        assert parse_event(started, "event 1").expires_at is not None  # type: ignore[union-attr]
    else:
        assert [p.split(": ")[1] for p in _problems(started)] == ["expires_at"]


def test_the_edges_of_the_timestamp_range_are_taken() -> None:
    for when in (
        "1970-01-01T00:00:00Z",
        "8999-12-31T23:59:59.999999Z",
        "1970-01-01T01:00:00+01:00",
    ):
        parse_event(make_event("logout.user", session_id="s-1", occurred_at=when), "event 1")


def test_a_session_cannot_expire_before_it_started() -> None:
    """session.started with expires_at at or before occurred_at is refused."""
    event = make_event(
        "session.started",
        session_id="s-1",
        user_id="u-1",
        occurred_at="2026-11-22T10:00:00+00:00",
        expires_at="2026-11-22T09:00:00+00:00",
    )
    assert _problems(event) == ["event 1: expires_at: must be after occurred_at (the login)"]


def test_a_misspelled_event_field_names_the_right_one() -> None:
    """An unknown field, at the top or nested in request, suggests the closest field."""
    event = make_event("logout.user", session_id="s-1", actr="a", request={"usr_agent": "x"})
    assert sorted(_problems(event)) == [
        "event 1: actr: unknown field (did you mean actor?)",
        "event 1: request.usr_agent: unknown field (did you mean user_agent?)",
    ]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"type": "logout.user", "actor": ' + "9" * 5000 + "}", "4300 digits"),
        ('{"request": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
    ],
)
def test_unreadable_json_is_a_problem_of_its_line(line: str, message: str) -> None:
    """A 5000-digit number or a 5000-deep nesting is refused naming the line, not raised."""
    good = json.dumps(make_event("logout.user", session_id="s-1"))
    with pytest.raises(InputError) as caught:
        parse_event_lines(f"{good}\n{line}\n")
    assert [p.where for p in caught.value.problems] == ["line 2"]
    assert message in caught.value.problems[0].message


def test_json_schema_states_every_cap() -> None:
    """The committed schemas carry the caps and patterns publishers must respect."""
    events = json.loads((SCHEMA_DIR / "event.schema.json").read_text(encoding="utf-8"))
    defs = events["$defs"]
    session_id = defs["LogoutUser"]["properties"]["session_id"]
    assert (session_id["maxLength"], session_id["pattern"]) == (255, "^[^\\x00-\\x1f\\x7f-\\x9f]*$")
    actor = defs["LogoutUser"]["properties"]["actor"]["anyOf"][0]
    assert (actor["maxLength"], actor["pattern"]) == (255, "^[^\\x00]*$")
    request = defs["RequestInfo"]["properties"]
    # What the client sent is clipped, not refused: no cap a publisher would refuse it by.
    assert "maxLength" not in json.dumps(request["user_agent"])
    assert "clipped to 1024" in json.dumps(request["user_agent"])
    assert "maxProperties" not in request["args"]
    assert "clipped to the first 100 arguments" in request["args"]["description"]
    occurred_at = defs["LogoutUser"]["properties"]["occurred_at"]
    assert occurred_at["formatMinimum"] == "1970-01-01T00:00:00Z"
    assert occurred_at["formatExclusiveMaximum"] == "9000-01-01T00:00:00Z"
    event_id = defs["LogoutUser"]["properties"]["event_id"]
    assert event_id["not"] == {"const": "00000000-0000-0000-0000-000000000000"}
    imports = json.loads((SCHEMA_DIR / "session-import.schema.json").read_text(encoding="utf-8"))
    name_id = imports["$defs"]["ProviderSessionRecord"]["properties"]["name_id"]["anyOf"][0]
    assert name_id["maxLength"] == 1024
    assert "pattern" in name_id


# -- session import ----------------------------------------------------------------------


@pytest.fixture
def handled(settings: Settings) -> Iterator[Runtime]:
    """A migrated runtime with the OIDC and SAML handlers and the usual providers."""
    rt = Runtime.start(settings.with_overrides(protocols=["oidc", "saml"]))
    store_providers(
        rt,
        '[[providers]]\nname = "wiki"\nprotocol = "oidc"\nclient_id = "wiki"\n'
        'backchannel_logout_uri = "https://wiki.test/logout"\n',
    )
    yield rt
    rt.close()


def test_a_session_import_reports_every_problem_at_once(handled: Runtime) -> None:
    """A broken line, a NUL, a misspelled field, an end before the start, an epoch time and
    a reference to a provider not loaded are all named in one round, in line order."""
    lines = [
        '{"kind": "session", "session_id": "s-1", "user_id": "u-1"}',
        "{oops",
        '{"kind": "session", "session_id": "s\\u00002", "user_id": "u-2"}',
        '{"kind": "session", "session_id": "s-3", "usr_id": "u-3"}',
        '{"kind": "session", "session_id": "s-4", "user_id": "u", '
        '"created": "2026-11-22T10:00:00+00:00", "expires": "2026-11-22T09:00:00+00:00"}',
        '{"kind": "provider_session", "session_id": "s-1", "provider": "nope", "sid": "x"}',
        '{"kind": "provider_session", "session_id": "s-3", "provider": "wiki", "sid": "x"}',
        '{"kind": "session", "session_id": "s-5", "user_id": "u", "created": 1700000000}',
        '{"kind": "session", "session_id": "s-6", "user_id": "u", '
        '"created": "9999-12-31T23:59:59+00:00"}',
    ]
    with pytest.raises(InputError) as caught:
        handled.registry.import_lines(lines)
    rendered = [str(p) for p in caught.value.problems]
    assert rendered[0].startswith("line 2: invalid JSON")
    assert rendered[1:] == [
        "line 3: session_id: contains the control character U+0000 at position 2; "
        "identifiers are printable text",
        "line 4: user_id: Field required",
        "line 4: usr_id: unknown field (did you mean user_id?)",
        "line 5: expires: must be after created",
        "line 6: provider: no such provider (load it first)",
        "line 8: created: must be an RFC 3339 timestamp with a UTC offset "
        "(2026-11-22T10:00:00+00:00), not a number",
        "line 9: created: must fall from 1970-01-01T00:00:00Z up to (not including) "
        "9000-01-01T00:00:00Z, in UTC; check the clock that wrote it",
    ], "line 7 names s-3, whose own line was refused: no second, misleading problem"


def test_provider_session_identifiers_refuse_control_characters_and_oversize(
    handled: Runtime,
) -> None:
    """sid, name_id and the other identifiers of a provider session are checked too."""
    lines = [
        '{"kind": "session", "session_id": "s-1", "user_id": "u-1"}',
        '{"kind": "provider_session", "session_id": "s-1", "provider": "wiki", "sid": "a\\tb"}',
        json.dumps(
            {
                "kind": "provider_session",
                "session_id": "s-1",
                "provider": "payroll",
                "name_id": "n" * 1025,
            }
        ),
    ]
    with pytest.raises(InputError) as caught:
        handled.registry.import_lines(lines)
    assert [(p.where, p.field) for p in caught.value.problems] == [
        ("line 2", "sid"),
        ("line 3", "name_id"),
    ]


# -- providers ---------------------------------------------------------------------------


def test_a_providers_file_reports_every_problem_at_once(settings: Settings) -> None:
    """Common fields, the protocol, the protocol's own settings and URIs of every provider
    are named together, each with the file and the provider."""
    text = """
[[providers]]
name = "a"
protocol = "openid"
client_id = "a"

[[providers]]
name = "b c"
protocol = "oidc"
client_id = "b"
enabeld = true
backchannel_logout_uri = "https://user:secret@b.test/logout"

[[providers]]
name = "d"
protocol = "oidc"
client_id = "d"
frontchannel_logout_uri = "https://d.test/lo\\r\\ngout"

[[providers]]
name = "e"
protocol = "saml"
entity_id = "https://e.test"
sls_binding = "soap"
sls_url = "https://e.test/sls?pad=%s"
""" % ("x" * 2100)
    handlers = load_handlers(settings.with_overrides(protocols=["oidc", "saml"]))
    with pytest.raises(InputError) as caught:
        check_providers(read_providers_toml(text, "p.toml"), handlers, "p.toml")
    rendered = [str(p) for p in caught.value.problems]
    assert rendered == [
        "p.toml: provider 'a': protocol: no installed handler serves 'openid' (did you mean "
        "oidc?); installed: oidc, saml, ssf (fix the name, install the handler, or set "
        "enabled = false)",
        "p.toml: provider 'b c': name: String should match pattern "
        "'^[A-Za-z0-9][A-Za-z0-9._:-]{0,254}$'",
        "p.toml: provider 'b c': backchannel_logout_uri: must not carry a user or password "
        "(user:password@host); the logout request authenticates by its signature",
        "p.toml: provider 'b c': enabeld: unknown field (did you mean enabled?)",
        "p.toml: provider 'd': frontchannel_logout_uri: contains a control character (U+000D) "
        "at position 18; percent-encode it",
        "p.toml: provider 'e': sls_url: longer than 2048 characters (2123)",
    ]


def test_a_space_in_a_provider_uri_is_refused(settings: Settings) -> None:
    """A space is no part of a URI: percent-encode it."""
    text = (
        '[[providers]]\nname = "w"\nprotocol = "oidc"\nclient_id = "w"\n'
        'backchannel_logout_uri = "https://w.test/log out"\n'
    )
    handlers = load_handlers(settings.with_overrides(protocols=["oidc"]))
    with pytest.raises(InputError, match=r"contains a space \(U\+0020\) at position 19"):
        check_providers(read_providers_toml(text, "p.toml"), handlers, "p.toml")


def test_deeply_nested_toml_is_refused_naming_the_file() -> None:
    """TOML nested thousands deep is a refusal of the file, not a RecursionError."""
    text = '[[providers]]\nname = "x"\nprotocol = "oidc"\nclient_id = ' + "[" * 3000 + "]" * 3000
    with pytest.raises(InputError, match=r"^p.toml: invalid TOML: nested too deeply"):
        read_providers_toml(text, "p.toml")


def test_sp_certificate_must_be_a_bounded_regular_file(settings: Settings) -> None:
    """/dev/zero (endless) and a directory are refused at once, naming provider and field."""
    handlers = load_handlers(settings.with_overrides(protocols=["saml"]))
    for path, reason in (("/dev/zero", "a character device"), ("/", "directory")):
        text = (
            '[[providers]]\nname = "p"\nprotocol = "saml"\nentity_id = "https://p.test"\n'
            f'sls_binding = "soap"\nsls_url = "https://p.test/sls"\nsp_certificate = "{path}"\n'
        )
        with pytest.raises(InputError) as caught:
            check_providers(read_providers_toml(text, "p.toml"), handlers, "p.toml")
        (problem,) = caught.value.problems
        assert (problem.where, problem.field) == ("p.toml: provider 'p'", "sp_certificate")
        assert reason in problem.message.lower()


# -- configured files and directories ----------------------------------------------------


def test_read_regular_file_refuses_devices_fifos_and_oversize(tmp_path: Path) -> None:
    """Only regular files are read, and no more than the limit."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    big = tmp_path / "big"
    big.write_bytes(b"x" * 101)
    for path, reason in (
        ("/dev/zero", "a character device"),
        (fifo, "a FIFO"),
        (tmp_path, "is a directory"),
        (big, "larger than 100 bytes"),
        (tmp_path / "none", "no such file"),
    ):
        with pytest.raises(UnreadableFileError, match=reason):
            read_regular_file(path, 100)
    assert read_regular_file(big, 101) == b"x" * 101


def test_an_unwritable_data_dir_is_a_configuration_error_naming_the_source(
    tmp_path: Path,
) -> None:
    """A data_dir below a regular file: the database and key directories are named, with the
    setting's source and the settings that avoid generated keys."""
    blocker = tmp_path / "file"
    blocker.write_text("")
    config = tmp_path / "logout.toml"
    config.write_text(f'data_dir = "{blocker / "data"}"\nbroker_url = "memory://"\n')
    settings = Settings.load(config)
    with pytest.raises(ConfigurationError) as caught:
        check_writable(settings, load_handlers(settings))
    message = str(caught.value)
    assert f"cannot write the database's directory {blocker / 'data'} (Not a directory)" in (
        message
    )
    assert f"{blocker / 'data' / 'oidc-keys'} (Not a directory)" in message
    assert f"set data_dir in {config} to a writable" in message
    assert "key_files of [protocols.oidc] (LOGOUT_OIDC_KEY_FILES)" in message
    assert "key_file and cert_file of [protocols.saml]" in message
    writable = settings.with_overrides(data_dir=tmp_path / "ok")
    check_writable(writable, load_handlers(writable))
    assert (tmp_path / "ok" / "oidc-keys").is_dir()


def test_configured_keys_need_no_writable_key_directory(tmp_path: Path) -> None:
    """With the database elsewhere and keys generated before, nothing needs writing there."""
    settings = Settings.load(
        None,
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'db' / 'x.db'}",
        broker_url="memory://",
        protocols=["oidc"],
    )
    handlers = load_handlers(settings)
    assert [d.path for d in handlers["oidc"].key_directories()] == [tmp_path / "data" / "oidc-keys"]
    (tmp_path / "data" / "oidc-keys").mkdir(parents=True)
    (tmp_path / "data" / "oidc-keys" / "k.pem").write_text("")
    assert handlers["oidc"].key_directories() == []


def test_database_url_errors_name_the_config_file(tmp_path: Path) -> None:
    """mysql:// from the TOML file is attributed to the file, not to the variable."""
    config = tmp_path / "logout.toml"
    config.write_text('database_url = "mysql://u@h/db"\n')
    settings = Settings.load(config)
    with pytest.raises(ConfigurationError) as caught:
        Runtime.start(settings, handlers={})
    assert str(caught.value).startswith(f"database_url in {config}: mysql:// is not supported")
    env = Settings.load(None, database_url="mysql://u@h/db")
    assert env.origin("database_url") == "database_url (option)"


def test_config_files_that_cannot_be_read_are_configuration_errors(tmp_path: Path) -> None:
    """--config /dev/zero (endless), a deeply nested TOML file and a signing key that is a
    device are refused at once, naming the file and the setting."""
    with pytest.raises(ConfigurationError, match=r"^config file /dev/zero: a character device"):
        Settings.load("/dev/zero")
    deep = tmp_path / "deep.toml"
    deep.write_text("a = " + "[" * 3000 + "]" * 3000 + "\n")
    with pytest.raises(ConfigurationError, match=r"not valid TOML: nested too deeply"):
        Settings.load(deep)
    given = {"oidc": {"key_files": "/dev/zero"}}
    settings = Settings.load(None, data_dir=tmp_path, protocol_settings=given, protocols=["oidc"])
    with pytest.raises(ConfigurationError) as caught:
        load_handlers(settings)
    assert "signing key /dev/zero: a character device" in str(caught.value)
    assert "key_files of [protocols.oidc] (LOGOUT_OIDC_KEY_FILES)" in str(caught.value)


def test_protocols_naming_an_uninstalled_handler_say_where_and_suggest(tmp_path: Path) -> None:
    """A misspelled protocols entry names its source and the installed handler it resembles."""
    config = tmp_path / "logout.toml"
    config.write_text('protocols = ["oidc", "sml"]\n')
    with pytest.raises(ConfigurationError) as caught:
        load_handlers(Settings.load(config))
    assert str(caught.value).startswith(
        f"protocols in {config}: sml enabled but not installed (did you mean saml?)"
    )


def test_what_the_client_sent_is_clipped_never_refused() -> None:
    """A hostile client's request (a 5,000-character User-Agent and path, 150 arguments, a
    NUL, 9,000-character values) cannot veto the binding violation it causes: the event is
    accepted with each field clipped, the clip marked, the NUL replaced."""
    event = make_event(
        "session.binding_violation",
        session_id="s-1",
        binding={"reason": "network.asn", "previous_value": "1", "new_value": "2"},
        ip={"previous": "1.2.3.4", "new": "5.6.7.8"},
        http_request={
            "user_agent": "u" * 5000,
            "path": "/" + "p" * 5000,
            "args": {**{f"k{i}": "v" for i in range(150)}, "k0": ["a\x00b", "x" * 9000]},
        },
    )
    parsed = parse_event(event)
    assert isinstance(parsed, SessionBindingViolation)
    request = parsed.http_request
    assert request is not None
    assert request.user_agent == "u" * 1023 + CLIPPED_MARK
    assert request.path is not None
    assert len(request.path) == 2048
    assert request.path.endswith(CLIPPED_MARK)
    assert len(request.args) == 100
    assert request.args["k0"] == ["a\ufffdb", "x" * 4095 + CLIPPED_MARK]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"type": "logout.usr"}, "'logout.usr' is not a known type (did you mean logout.user?)"),
        ({"type": None}, "Field required"),
    ],
)
def test_an_unknown_or_missing_event_type_names_the_field_and_the_types(
    change: dict[str, Any], message: str
) -> None:
    """Not pydantic's "Input tag ... found using 'type'" against no field at all."""
    event = {k: v for k, v in make_event("logout.user", session_id="s-1").items() if k != "type"}
    if change["type"] is not None:
        event["type"] = change["type"]
    (problem,) = _problems(event)
    assert problem.startswith(f"event 1: type: {message}; one of: logout.user, "), problem
    assert "session.seen" in problem
