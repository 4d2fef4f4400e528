"""The session listing and the revocations built from the registry (SQLite, the ``populated``
registry: alice has s-1..s-3, bob s-9), and the device read from a user agent."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from orchestrator import Runtime
from orchestrator.binding import IpFacts
from orchestrator.revoking import Revocations, self_service_revoke_id
from orchestrator.session_list import SessionFilter, list_sessions, provider_exists
from orchestrator.store import IdpSession, ProviderSession
from orchestrator.user_agents import describe_device
from schemas import SessionDevice, SessionRevoke, SessionTerminateOthers, UserRevokeAll
from schemas.errors import InputError


@pytest.mark.parametrize(
    ("user_agent", "browser", "system"),
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0",
            "Firefox 120",
            "Windows 10",
        ),
        (
            "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like "
            "Gecko) Chrome/120.0.0.0 Safari/537.36",
            "Chrome 120",
            "Mac OS X 10.15",
        ),
        ("curl/8.5.0", "curl 8", None),
        ("not a browser at all", None, None),
    ],
)
def test_the_device_is_read_from_the_user_agent(
    user_agent: str, browser: str | None, system: str | None
) -> None:
    """Browser family and major version, OS family and version; None where unrecognised."""
    device = describe_device(user_agent)
    assert (device.browser, device.os, device.user_agent) == (browser, system, user_agent)


def test_no_user_agent_is_no_device() -> None:
    assert describe_device(None) == SessionDevice()


def test_a_filter_names_something() -> None:
    """Nothing to narrow by, or a limit under 1, is refused naming the field."""
    with pytest.raises(InputError) as nothing:
        SessionFilter().check()
    assert nothing.value.problems[0].field == "user_id"
    with pytest.raises(InputError) as limit:
        SessionFilter(user_id="alice", limit=0).check()
    assert limit.value.problems[0].field == "limit"
    with pytest.raises(InputError) as address:  # it matched nothing, silently
        SessionFilter(ip="999.0.0.1").check()
    assert (address.value.problems[0].field, address.value.problems[0].message) == (
        "ip",
        "'999.0.0.1' is not an IPv4 or IPv6 address",
    )
    SessionFilter(ip="2001:db8::1").check()


def test_a_provider_that_is_not_loaded_is_told_apart(populated: Runtime) -> None:
    assert provider_exists(populated.database, "wiki")
    assert not provider_exists(populated.database, "wikki")


def _end(runtime: Runtime, session_id: str) -> None:
    with runtime.database.begin() as db:
        row = db.get(IdpSession, session_id)
        assert row is not None
        row.ended_at = datetime.now(UTC)
        row.end_reason = "revoked"


def test_open_sessions_by_user_ip_and_provider(populated: Runtime) -> None:
    """Each filter selects; ended sessions and ended provider sessions only with
    include_ended."""
    db = populated.database
    alice = list_sessions(db, SessionFilter(user_id="alice"))
    assert sorted(v.session_id for v in alice) == ["s-1", "s-2", "s-3"]
    (first,) = [v for v in alice if v.session_id == "s-1"]
    assert [p.provider for p in first.provider_sessions] == ["chat", "payroll", "wiki"]
    assert {p.protocol for p in first.provider_sessions} == {"oidc", "saml"}
    assert [v.session_id for v in list_sessions(db, SessionFilter(ip="81.2.69.142"))] == ["s-1"]
    wiki = list_sessions(db, SessionFilter(provider="wiki"))
    assert sorted(v.session_id for v in wiki) == ["s-1", "s-2", "s-9"]
    _end(populated, "s-2")
    with populated.database.begin() as session:
        for link in session.query(ProviderSession).filter_by(session_id="s-9"):
            link.ended_at = datetime.now(UTC)
    assert [v.session_id for v in list_sessions(db, SessionFilter(provider="wiki"))] == ["s-1"]
    everything = list_sessions(db, SessionFilter(user_id="alice", include_ended=True))
    (ended,) = [v for v in everything if v.session_id == "s-2"]
    assert (ended.ended is not None, ended.end_reason) == (True, "revoked")
    assert len(list_sessions(db, SessionFilter(user_id="alice", limit=1))) == 1


def test_a_session_without_a_recorded_place_is_looked_up(populated: Runtime) -> None:
    """The login's place wins; a session that recorded none is placed by the lookup."""
    looked_up: list[str] = []

    def lookup(ip: str) -> IpFacts:
        looked_up.append(ip)
        return IpFacts(ip=ip, city="London", country="GB")

    (view,) = list_sessions(populated.database, SessionFilter(ip="81.2.69.142"), lookup)
    assert (view.location.city, view.location.country, view.location.source) == (
        "London",
        "GB",
        "geoip",
    )
    assert looked_up == ["81.2.69.142"]
    (unplaced,) = list_sessions(populated.database, SessionFilter(user_id="bob"), lookup)
    assert unplaced.location.source is None  # no address to look up


def test_revocations_check_the_registry_first(populated: Runtime) -> None:
    """One open session, all of a user's, all but one; refusals name the field."""
    revocations = Revocations(populated.database)
    one = revocations.session("s-1", actor="admin-7", reason="lost phone")
    assert isinstance(one, SessionRevoke)
    assert (one.initiator, one.actor, one.reason) == ("admin", "admin-7", "lost phone")
    assert isinstance(revocations.user("alice", actor="admin-7"), UserRevokeAll)
    others = revocations.user("alice", keep="s-2", actor="admin-7")
    assert isinstance(others, SessionTerminateOthers)
    assert others.keep_session_id == "s-2"
    refusals: list[tuple[Callable[[], object], str]] = [
        (lambda: revocations.session("s-404"), "session_id"),
        (lambda: revocations.user("carol"), "user_id"),
        (lambda: revocations.user("alice", keep="s-9"), "keep_session_id"),
    ]
    for call, field in refusals:
        with pytest.raises(InputError) as refused:
            call()
        assert refused.value.problems[0].field == field
    _end(populated, "s-3")
    with pytest.raises(InputError):
        revocations.session("s-3")


def test_a_users_own_revocation_is_theirs_only_and_repeatable(populated: Runtime) -> None:
    """Initiator user, actor the user, one event id per session; another user's session or an
    ended one gives None."""
    revocations = Revocations(populated.database)
    own = revocations.own("alice", "s-1")
    assert own is not None
    assert (own.initiator, own.actor, own.session_id) == ("user", "alice", "s-1")
    again = revocations.own("alice", "s-1")
    assert again is not None
    assert own.event_id == again.event_id == self_service_revoke_id("s-1")
    assert revocations.own("bob", "s-1") is None
    assert revocations.own("alice", "s-9") is None
    _end(populated, "s-1")
    assert revocations.own("alice", "s-1") is None
