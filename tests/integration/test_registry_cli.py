"""The registry through the command line, on PostgreSQL: loads are all or nothing."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from sqlalchemy import event, select

from orchestrator.importing import GeoipDatabases, SessionImport
from orchestrator.store import IdpSession, Provider, ProviderSession
from schemas import SessionRecord

from .support import Stack, json_lines

pytestmark = pytest.mark.integration

PROVIDERS = """\
[[providers]]
name = "wiki"
protocol = "oidc"
client_id = "wiki-client"
backchannel_logout_uri = "https://wiki.example.test/oidc/backchannel-logout"

[[providers]]
name = "chat"
protocol = "oidc"
client_id = "chat-client"
backchannel_logout_uri = "https://chat.example.test/backchannel-logout"
full_logout_on_rp_initiated = true
"""

# One new good provider, one update of an existing one, one without `protocol`.
BAD_PROVIDERS = """\
[[providers]]
name = "gamma"
protocol = "oidc"
client_id = "gamma-client"
backchannel_logout_uri = "https://gamma.example.test/bcl"

[[providers]]
name = "wiki"
protocol = "oidc"
client_id = "changed-by-a-refused-file"
backchannel_logout_uri = "https://wiki.example.test/changed"

[[providers]]
name = "delta"
client_id = "delta-client"
backchannel_logout_uri = "https://delta.example.test/bcl"
"""

SESSIONS = [
    {"kind": "session", "session_id": "s-1", "user_id": "alice", "ip": "192.0.2.10"},
    {"kind": "session", "session_id": "s-2", "user_id": "bob"},
    {"kind": "provider_session", "session_id": "s-1", "provider": "wiki", "sid": "w1", "sub": "a"},
    {"kind": "provider_session", "session_id": "s-1", "provider": "chat", "sid": "c1", "sub": "a"},
    {"kind": "provider_session", "session_id": "s-2", "provider": "wiki", "sid": "w2", "sub": "b"},
]

# A new session and a good link to it, then a link naming a provider nobody loaded.
BAD_SESSIONS = [
    {"kind": "session", "session_id": "s-3", "user_id": "carol"},
    {"kind": "provider_session", "session_id": "s-3", "provider": "wiki", "sid": "w3"},
    {"kind": "provider_session", "session_id": "s-1", "provider": "no-such-rp", "sid": "x"},
]


def _write(path: Path, content: str) -> str:
    path.write_text(content, encoding="utf-8")
    return str(path)


def _providers(stack: Stack) -> dict[str, Provider]:
    with stack.db() as db:
        return {p.name: p for p in db.scalars(select(Provider))}


def _links(stack: Stack) -> set[tuple[str, str, str | None]]:
    with stack.db() as db:
        return {
            (p.session_id, p.provider, p.identifiers.get("sid"))
            for p in db.scalars(select(ProviderSession))
        }


def _sessions(stack: Stack) -> dict[str, str]:
    with stack.db() as db:
        return {s.session_id: s.user_id for s in db.scalars(select(IdpSession))}


def test_providers_and_sessions_round_trip_and_refusals(stack: Stack, tmp_path: Path) -> None:
    """Valid files load through the CLI; invalid ones are refused whole, naming the problem."""
    loaded = stack.cli("providers", "load", _write(tmp_path / "providers.toml", PROVIDERS))
    assert loaded.returncode == 0, loaded.stderr
    assert "2 created" in loaded.stdout
    providers = _providers(stack)
    assert set(providers) == {"wiki", "chat"}
    assert providers["wiki"].protocol == "oidc"
    # Stored as the "oidc" handler parsed them (with its defaults) when one is enabled.
    assert (
        providers["wiki"].settings.items()
        >= {
            "client_id": "wiki-client",
            "backchannel_logout_uri": "https://wiki.example.test/oidc/backchannel-logout",
        }.items()
    )
    assert providers["chat"].settings["client_id"] == "chat-client"
    assert providers["chat"].full_logout_on_rp_initiated is True
    assert providers["wiki"].full_logout_on_rp_initiated is False

    imported = stack.cli(
        "sessions", "import", _write(tmp_path / "sessions.jsonl", json_lines(SESSIONS))
    )
    assert imported.returncode == 0, imported.stderr
    assert (
        "sessions: 2 created, 0 updated; provider sessions: 3 created, 0 updated" in imported.stdout
    )
    assert _sessions(stack) == {"s-1": "alice", "s-2": "bob"}
    assert _links(stack) == {("s-1", "wiki", "w1"), ("s-1", "chat", "c1"), ("s-2", "wiki", "w2")}

    refused = stack.cli("providers", "load", _write(tmp_path / "bad.toml", BAD_PROVIDERS))
    assert refused.returncode != 0, refused.stdout
    problem_lines = [line for line in refused.stderr.splitlines() if "'delta'" in line]
    assert problem_lines, refused.stderr
    assert any("protocol" in line for line in problem_lines), refused.stderr
    assert "gamma" not in refused.stderr  # only the bad provider is named
    after = _providers(stack)
    assert set(after) == {"wiki", "chat"}, "a refused providers file stored something"
    assert after["wiki"].settings["client_id"] == "wiki-client"
    assert after["wiki"].updated_at == providers["wiki"].updated_at

    rejected = stack.cli(
        "sessions", "import", _write(tmp_path / "bad.jsonl", json_lines(BAD_SESSIONS))
    )
    assert rejected.returncode != 0, rejected.stdout
    # The offending line is named by number, with its field and why it is refused.
    assert re.search(r"\bline 3\b.*\bprovider\b.*no such provider", rejected.stderr), (
        rejected.stderr
    )
    assert "line 1" not in rejected.stderr
    assert "line 2" not in rejected.stderr
    assert _sessions(stack) == {"s-1": "alice", "s-2": "bob"}, "a refused file stored a session"
    assert _links(stack) == {("s-1", "wiki", "w1"), ("s-1", "chat", "c1"), ("s-2", "wiki", "w2")}


SAML_AND_OIDC = """\
[[providers]]
name = "wiki"
protocol = "oidc"
client_id = "wiki-client"
backchannel_logout_uri = "https://wiki.example.test/bcl"
backchannel_logout_session_required = true

[[providers]]
name = "payroll"
protocol = "saml"
entity_id = "https://payroll.example.test/sp"
sls_url = "https://payroll.example.test/sls"
sls_binding = "soap"
"""


def test_operator_mistakes_are_refused_naming_line_field_and_fix(
    stack: Stack, tmp_path: Path
) -> None:
    """Unknown protocol, missing sid / name_id, a binding without its database: each refused."""
    openid = SAML_AND_OIDC + '\n[[providers]]\nname = "x"\nprotocol = "openid"\nclient_id = "x"\n'
    refused = stack.cli("providers", "load", _write(tmp_path / "openid.toml", openid))
    assert refused.returncode == 2, refused.stdout
    assert (
        "openid.toml: provider 'x': protocol: no installed handler serves 'openid' (did you "
        "mean oidc?); installed: "
    ) in refused.stderr
    assert "or set enabled = false" in refused.stderr
    with stack.engine.connect() as connection:  # refused before the database was reached
        assert not stack.engine.dialect.has_table(connection, "providers")
    loaded = stack.cli("providers", "load", _write(tmp_path / "p.toml", SAML_AND_OIDC))
    assert loaded.returncode == 0, loaded.stderr

    lines = [
        {"kind": "session", "session_id": "s-1", "user_id": "alice"},
        {
            "kind": "session",
            "session_id": "s-2",
            "user_id": "bob",
            "ip": "89.160.20.112",
            "network_binding": "bind_asn",
        },
        {"kind": "provider_session", "session_id": "s-1", "provider": "wiki", "sub": "alice"},
        {"kind": "provider_session", "session_id": "s-1", "provider": "payroll"},
    ]
    rejected = stack.cli("sessions", "import", _write(tmp_path / "s.jsonl", json_lines(lines)))
    assert rejected.returncode == 2, rejected.stdout
    problems = [line.strip() for line in rejected.stderr.splitlines() if "line " in line]
    assert [p.split(":", 2)[:2] for p in problems] == [
        ["line 2", " network_binding"],
        ["line 3", " sid"],
        ["line 4", " name_id"],
    ], rejected.stderr
    assert "set geoip_asn_db" in problems[0]
    assert "backchannel_logout_session_required" in problems[1]
    assert "NameID" in problems[2]
    assert _sessions(stack) == {}, "a refused file stored a session"


def test_large_import_on_postgresql_creates_then_updates(stack: Stack, tmp_path: Path) -> None:
    """Thousands of lines through COPY: counted, stored, and updated in place the second time."""
    stack.cli("providers", "load", _write(tmp_path / "p.toml", SAML_AND_OIDC))
    lines: list[dict[str, object]] = []
    for n in range(12_000):
        lines.append({"kind": "session", "session_id": f"s-{n}", "user_id": f"u-{n % 7}"})
        lines.append(
            {"kind": "provider_session", "session_id": f"s-{n}", "provider": "wiki", "sid": f"w{n}"}
        )
    source = _write(tmp_path / "big.jsonl", json_lines(lines))
    first = stack.cli("sessions", "import", source)
    assert first.returncode == 0, first.stderr
    assert (
        "sessions: 12,000 created, 0 updated; provider sessions: 12,000 created, 0 updated"
        in first.stdout
    )
    assert "━" not in first.stdout + first.stderr  # redirected: no bar
    lines[1] = {**lines[1], "sid": "changed"}
    second = stack.cli("sessions", "import", _write(tmp_path / "again.jsonl", json_lines(lines)))
    assert second.returncode == 0, second.stderr
    assert (
        "sessions: 0 created, 12,000 updated; provider sessions: 0 created, 12,000 updated"
        in second.stdout
    )
    links = _links(stack)
    assert len(links) == 12_000
    assert ("s-0", "wiki", "changed") in links
    assert ("s-1", "wiki", "w1") in links


def test_a_login_on_postgresql_is_a_plain_upsert(stack: Stack) -> None:
    """One session (a login, or a small import) is upserted in place: no temporary table and
    no COPY, which would cost round trips and catalog churn at the rate of logins."""
    statements: list[str] = []
    with stack.runtime(handlers={}) as runtime:
        event.listen(
            runtime.engine,
            "before_cursor_execute",
            lambda _c, _cur, statement, *_: statements.append(statement),
        )
        runtime.registry.record_session("s-login", "alice", ip="81.2.69.142")
        runtime.registry.record_session("s-login", "alice", ip="81.2.69.160")
        with runtime.database() as db:
            stored = db.get(IdpSession, "s-login")
            assert stored is not None
            assert stored.ip == "81.2.69.160"
    written = [s for s in statements if "idp_sessions" in s and "INSERT" in s.upper()]
    assert len(written) == 2
    assert not [s for s in statements if "TEMPORARY" in s.upper() or "COPY" in s.upper()]


FACTS = {
    "ip": "81.2.69.142",
    "user_agent": "Firefox",
    "remember_me": True,
    "created": "2026-11-22T09:00:00.250000+00:00",
    "asn": 15169,
    "as_org": "Example AS",
    "as_network": "81.2.69.0/24",
    "continent": "EU",
    "country": "GB",
    "city": "London",
    "lat": 51.5,
    "long": -0.125,
}


@pytest.mark.parametrize("race", [False, True], ids=["new rows", "one created meanwhile"])
def test_large_import_copies_every_value(stack: Stack, race: bool) -> None:
    """1,500 new sessions with every kind of value go by binary COPY straight into the table
    and read back exactly. When another transaction creates one of them between the checks
    and the writes, the COPY is refused by the key and rolled back to its savepoint, and the
    rows go by the upsert instead: all stored, the import's values standing, nothing refused."""
    records = [
        SessionRecord.model_validate(
            {"kind": "session", "session_id": f"r-{n}", "user_id": "u-1", **FACTS}
        )
        for n in range(1500)
    ]
    statements: list[str] = []
    with stack.runtime(handlers={}) as runtime:
        event.listen(
            runtime.engine,
            "before_cursor_execute",
            lambda _c, _cur, statement, *_: statements.append(statement),
        )
        batch = SessionImport({}, runtime.policy, None, GeoipDatabases())
        with runtime.database.begin() as db:
            conn = db.connection()
            batch.check(conn, records, [], {})
            if race:
                runtime.registry.record_session("r-7", "u-1", ip="81.2.69.160")  # commits
            batch.write(conn)
        assert (batch.counts.sessions_created, batch.counts.sessions_updated) == (1500, 0)
    rolled_back = [s for s in statements if s.upper().startswith("ROLLBACK TO SAVEPOINT")]
    assert bool(rolled_back) is race
    assert len([sid for sid in _sessions(stack) if sid.startswith("r-")]) == 1500
    with stack.db() as db:
        for session_id in ("r-0", "r-7"):
            row = db.get(IdpSession, session_id)
            assert row is not None
            stored = {
                "ip": row.ip,
                "user_agent": row.user_agent,
                "remember_me": row.remember_me,
                "created": row.created_at.isoformat(),
                "asn": row.asn,
                "as_org": row.as_org,
                "as_network": row.as_network,
                "continent": row.continent,
                "country": row.country,
                "city": row.city,
                "lat": row.lat,
                "long": row.long,
            }
            if race and session_id == "r-7":  # an update never moves created_at
                assert stored.pop("created") != FACTS["created"]
                assert stored == {k: v for k, v in FACTS.items() if k != "created"}
            else:
                assert stored == FACTS, session_id


EGRESS_REFUSED = """\
[[providers]]
name = "metadata"
protocol = "oidc"
client_id = "m"
backchannel_logout_uri = "https://[::ffff:169.254.169.254]/latest"

[[providers]]
name = "redis"
protocol = "saml"
entity_id = "https://sp.example.test"
sls_binding = "soap"
sls_url = "http://10.0.0.1:6379/"
allow_http = true

[[providers]]
name = "loopback"
protocol = "oidc"
client_id = "l"
backchannel_logout_uri = "http://127.0.0.1:9/bc"
allow_http = true
"""


def test_providers_load_refuses_destinations_the_egress_policy_refuses(
    stack: Stack, tmp_path: Path
) -> None:
    """`providers load` refuses literal addresses in refused ranges (OIDC and SAML) naming
    the policy and egress_allow, stores nothing, and admits 127.0.0.1 through egress_allow."""
    refused = stack.cli("providers", "load", _write(tmp_path / "p.toml", EGRESS_REFUSED))
    assert refused.returncode == 2, refused.stdout
    assert (
        "provider 'metadata': backchannel_logout_uri: refused by the egress policy: "
        "'::ffff:169.254.169.254' is a cloud metadata address; add the host or its network "
        "to egress_allow to admit it"
    ) in " ".join(refused.stderr.split())
    assert "provider 'redis': sls_url: refused by the egress policy: '10.0.0.1' is a private" in (
        " ".join(refused.stderr.split())
    )
    assert "'loopback'" not in refused.stderr  # 127.0.0.1 is in the stack's egress_allow
    without_allow = stack.cli(
        "providers",
        "load",
        _write(tmp_path / "l.toml", EGRESS_REFUSED.split("\n\n")[2]),
        env={"LOGOUT_EGRESS_ALLOW": ""},
    )
    assert without_allow.returncode == 2, without_allow.stdout
    assert "'127.0.0.1' is a loopback address" in without_allow.stderr
    with stack.engine.connect() as connection:
        assert not stack.engine.dialect.has_table(connection, "providers")
