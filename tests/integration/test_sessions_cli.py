"""``sessions list``, ``sessions revoke`` and ``sessions device-check`` as an operator runs
them, on PostgreSQL (a real worker handles the revocations from Redis) and on SQLite (the
embedded mode: memory://, handled inside the command)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from orchestrator import Runtime
from schemas import SessionStarted

from .support import Stack, json_lines

HOME = "81.2.69.142"
CAFE = "216.160.83.56"
FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:120.0) Gecko/20100101 Firefox/120.0"
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_1 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.1 Mobile/15E148 Safari/604.1"
)
#: A provider stored unchecked (enabled = false): its deliveries are skipped, so a
#: revocation settles at once, with nothing to send.
PROVIDERS = """
[[providers]]
name = "wiki"
protocol = "oidc"
enabled = false
client_id = "wiki"
backchannel_logout_uri = "https://wiki.example.com/bcl"
"""


def session_lines(now: datetime) -> list[dict[str, Any]]:
    def at(hours: int) -> str:
        return (now - timedelta(hours=hours)).isoformat()

    return [
        {"kind": "session", "session_id": "s-1", "user_id": "alice", "ip": HOME,
         "user_agent": FIREFOX, "city": "London", "country": "GB", "remember_me": True,
         "created": at(5)},
        {"kind": "session", "session_id": "s-2", "user_id": "alice", "ip": CAFE,
         "user_agent": IPHONE, "stay_signed_in": True, "created": at(4)},
        {"kind": "session", "session_id": "s-3", "user_id": "bob", "ip": HOME, "created": at(3)},
        {"kind": "session", "session_id": "s-5", "user_id": "alice", "ip": CAFE, "created": at(2)},
        {"kind": "provider_session", "session_id": "s-1", "provider": "wiki", "sid": "w-1"},
    ]  # fmt: skip


@dataclass
class Operator:
    """The stack and the settings of one backend, as ``logout-orchestrator`` sees them."""

    stack: Stack
    env: dict[str, str]
    backend: str

    def run(self, *args: str, **extra: str) -> Any:
        return self.stack.cli(*args, env={**self.env, **extra})

    def listed(self, *args: str) -> list[dict[str, Any]]:
        result = self.run("sessions", "list", "--json", *args)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in result.stdout.splitlines()]

    def runtime(self) -> Runtime:
        url = self.env.get("LOGOUT_DATABASE_URL", self.stack.database_url)
        return Runtime.start(
            self.stack.settings(database_url=url, remember_device="30d"), handlers={}
        )


def seeded(stack: Stack, tmp_path: Path, backend: str, *, embedded: bool) -> Operator:
    """Providers and sessions loaded with the CLI on ``backend`` (``embedded``: SQLite with
    memory://, the events handled inside each command)."""
    env: dict[str, str] = {}
    if backend == "sqlite":
        env["LOGOUT_DATABASE_URL"] = f"sqlite:///{tmp_path / 'sessions.db'}"
        if embedded:
            env["LOGOUT_BROKER_URL"] = "memory://"
    operator = Operator(stack, env, backend)
    providers = tmp_path / "providers.toml"
    providers.write_text(PROVIDERS, encoding="utf-8")
    sessions = tmp_path / "sessions.jsonl"
    sessions.write_text(json_lines(session_lines(datetime.now(UTC))), encoding="utf-8")
    for args in (("providers", "load", str(providers)), ("sessions", "import", str(sessions))):
        result = operator.run(*args)
        assert result.returncode == 0, result.stderr
    return operator


@pytest.fixture(params=["postgresql", "sqlite"])
def operator(request: pytest.FixtureRequest, stack: Stack, tmp_path: Path) -> Operator:
    """The seeded backend; on PostgreSQL a worker runs, on SQLite the embedded mode."""
    operator = seeded(stack, tmp_path, request.param, embedded=True)
    if request.param == "postgresql":
        stack.start_worker()
    return operator


def test_list_shows_each_open_session_with_device_place_and_providers(
    operator: Operator,
) -> None:
    """--user, --ip and --provider select; each session carries its times, parsed device,
    recorded place, flags, bindings and provider sessions; the table reads the same."""
    alice = operator.listed("--user", "alice")
    assert [s["session_id"] for s in alice] == ["s-5", "s-2", "s-1"]  # newest first
    first = alice[2]
    assert first["device"] == {"browser": "Firefox 120", "os": "Windows 10", "user_agent": FIREFOX}
    assert first["location"] == {"city": "London", "country": "GB", "source": "login"}
    assert (first["remember_me"], first["stay_signed_in"]) == (True, False)
    assert (first["network_binding"], first["geoip_binding"]) == ("no_binding", "no_binding")
    assert [p["provider"] for p in first["provider_sessions"]] == ["wiki"]
    assert first["ip"] == HOME
    assert first["expires"] is not None
    assert first["last_activity"] is not None
    phone = alice[1]
    assert phone["device"]["browser"] == "Mobile Safari 17"
    assert phone["device"]["os"] == "iOS 17.1"
    assert phone["location"] == {"city": None, "country": None, "source": None}
    assert phone["stay_signed_in"] is True
    assert [s["session_id"] for s in operator.listed("--ip", HOME)] == ["s-3", "s-1"]
    assert [s["session_id"] for s in operator.listed("--provider", "wiki")] == ["s-1"]
    narrowed = operator.listed("--user", "alice", "--ip", CAFE)
    assert [s["session_id"] for s in narrowed] == ["s-5", "s-2"]
    table = operator.run("sessions", "list", "--user", "alice")
    assert table.returncode == 0, table.stderr
    assert "Firefox 120 on" in table.stdout  # the cell wraps before the OS
    assert "Windows 10" in table.stdout
    assert "London, GB" in table.stdout
    assert "remember-me" in table.stdout
    assert "stay-signed-in" in table.stdout
    nothing = operator.run("sessions", "list")
    assert nothing.returncode == 2
    assert "--user / --ip / --provider: give at least one of them" in nothing.stderr
    assert "Traceback" not in nothing.stderr


def _ended(operator: Operator, user: str) -> dict[str, str]:
    """Ended sessions of ``user`` and why."""
    return {
        s["session_id"]: s["end_reason"]
        for s in operator.listed("--user", user, "--ended")
        if s["ended"] is not None
    }


def _wait_ended(operator: Operator, user: str, session_ids: set[str]) -> dict[str, str]:
    found: dict[str, str] = {}

    def ended() -> bool:
        found.update(_ended(operator, user))
        return session_ids <= set(found)

    operator.stack.wait_for(ended, what=f"{sorted(session_ids)} ended", timeout=60)
    return found


def _audited_end(operator: Operator, session_id: str) -> dict[str, Any]:
    result = operator.run(
        "audit", "list", "--session", session_id, "--type", "session.ended", "--json"
    )
    assert result.returncode == 0, result.stderr
    (record,) = [json.loads(line) for line in result.stdout.splitlines()]
    detail: dict[str, Any] = record["detail"]
    return detail


def test_revoke_one_all_and_all_but_one_publishes_the_events(operator: Operator) -> None:
    """--session publishes session.revoke, --user user.revoke_all, --user --except
    session.terminate_others; initiator admin and --actor reach the audit trail."""
    one = operator.run(
        "sessions", "revoke", "--session", "s-2", "--actor", "admin-7", "--reason", "lost phone"
    )
    assert one.returncode == 0, one.stderr
    assert one.stdout.startswith("published session.revoke ")
    _wait_ended(operator, "alice", {"s-2"})
    detail = _audited_end(operator, "s-2")
    assert (detail["initiator"], detail["actor"], detail["reason"]) == (
        "admin",
        "admin-7",
        "lost phone",
    )
    assert [s["session_id"] for s in operator.listed("--user", "alice")] == ["s-5", "s-1"]

    everything = operator.run("sessions", "revoke", "--user", "bob", "--actor", "admin-7")
    assert everything.returncode == 0, everything.stderr
    assert everything.stdout.startswith("published user.revoke_all ")
    _wait_ended(operator, "bob", {"s-3"})
    assert _audited_end(operator, "s-3")["actor"] == "admin-7"

    others = operator.run(
        "sessions", "revoke", "--user", "alice", "--except", "s-1", "--actor", "admin-7"
    )
    assert others.returncode == 0, others.stderr
    assert others.stdout.startswith("published session.terminate_others ")
    _wait_ended(operator, "alice", {"s-2", "s-5"})
    assert [s["session_id"] for s in operator.listed("--user", "alice")] == ["s-1"]
    assert _audited_end(operator, "s-5")["initiator"] == "admin"


def test_revoke_refuses_what_it_cannot_do_and_publishes_nothing(operator: Operator) -> None:
    """An unknown session, another user's session kept, a missing --actor, both targets:
    each a clear message and exit 2, never a traceback; no session ends."""
    cases = [
        (("--session", "s-404", "--actor", "a"), "--session: 's-404' is not an open session"),
        (
            ("--user", "alice", "--except", "s-3", "--actor", "a"),
            "--except: 's-3' is not an open session of user 'alice'",
        ),
        (("--user", "carol", "--actor", "a"), "--user: user 'carol' has no open session"),
        (("--session", "s-1", "--user", "alice", "--actor", "a"), "give exactly one of them"),
        (("--session", "s-1", "--except", "s-2", "--actor", "a"), "--except: goes with --user"),
        (("--session", "s-1",), "Missing option '--actor'"),
    ]  # fmt: skip
    for args, message in cases:
        result = operator.run("sessions", "revoke", *args)
        assert result.returncode == 2, (args, result.stdout, result.stderr)
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
    assert _ended(operator, "alice") == {}


def test_device_check_answers_each_path_before_login(operator: Operator) -> None:
    """Cookie seen (a session.started reported it), same IP, neither; 0 turns it off;
    a bad address is refused naming --ip. The cookie id also comes from LOGOUT_DEVICE_ID or
    standard input (--device-id -), off the command line."""
    runtime = operator.runtime()
    try:
        runtime.activity().started(
            SessionStarted(
                event_id=uuid.uuid4(),
                occurred_at=datetime.now(UTC),
                initiator="user",
                session_id="s-9",
                user_id="carol",
                ip=CAFE,
                device_id="cookie-9",
            )
        )
    finally:
        runtime.close()
    on = {"LOGOUT_REMEMBER_DEVICE": "30d"}

    def check(*args: str, **env: str) -> dict[str, Any]:
        result = operator.run("sessions", "device-check", *args, **{**on, **env})
        assert result.returncode == 0, result.stderr
        answer: dict[str, Any] = json.loads(result.stdout)
        return answer

    cookie = check("--user", "carol", "--device-id", "cookie-9", "--ip", "10.1.2.3")
    assert cookie == {"user_id": "carol", "known": True, "reason": "cookie"}
    assert check("--user", "alice", "--ip", HOME)["reason"] == "same_ip"
    assert check("--user", "alice", "--device-id", "cookie-9", "--ip", "10.1.2.3") == {
        "user_id": "alice",
        "known": False,
        "reason": "unknown",
    }
    from_env = check("--user", "carol", "--ip", "10.1.2.3", LOGOUT_DEVICE_ID="cookie-9")
    assert from_env == cookie
    piped = operator.stack.cli(
        "sessions",
        "device-check",
        "--user",
        "carol",
        "--device-id",
        "-",
        "--ip",
        "10.1.2.3",
        env={**operator.env, **on},
        stdin="cookie-9\n",
    )
    assert (piped.returncode, json.loads(piped.stdout)) == (0, cookie), piped.stderr
    empty = operator.run("sessions", "device-check", "--user", "carol", "--device-id", "-", **on)
    assert empty.returncode == 2
    assert "--device-id: - reads the device cookie id from standard input" in empty.stderr
    off = check("--user", "alice", "--ip", HOME, LOGOUT_REMEMBER_DEVICE="0")
    assert off == {"user_id": "alice", "known": False, "reason": "off"}
    bad = operator.run("sessions", "device-check", "--user", "alice", "--ip", "home", **on)
    assert bad.returncode == 2
    assert "--ip:" in bad.stderr
    assert "Traceback" not in bad.stderr
