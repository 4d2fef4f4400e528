"""The command line, in-process: clear errors, nothing applied on bad input, embedded mode."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from tests.unit.conftest import PROVIDERS_TOML, SESSIONS, make_event
from workers.cli import main
from workers.exit_codes import ExitCode


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """Embedded settings through the environment, as a user would set them."""
    return {
        "LOGOUT_DATA_DIR": str(tmp_path),
        "LOGOUT_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "LOGOUT_BROKER_URL": "memory://",
        "LOGOUT_PROTOCOLS": "",
        "LOGOUT_LOG_LEVEL": "WARNING",
    }


def _run(env: dict[str, str], *args: str, stdin: str | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env, input=stdin, catch_exceptions=False)


def _setup(env: dict[str, str], tmp_path: Path) -> None:
    # No handler is enabled (LOGOUT_PROTOCOLS=""): providers load only disabled.
    (tmp_path / "p.toml").write_text(
        PROVIDERS_TOML.replace("protocol =", "enabled = false\nprotocol =")
    )
    (tmp_path / "s.jsonl").write_text("\n".join(SESSIONS) + "\n")
    assert _run(env, "providers", "load", str(tmp_path / "p.toml")).exit_code == 0
    result = _run(env, "sessions", "import", str(tmp_path / "s.jsonl"))
    assert result.exit_code == 0, result.output
    assert "sessions: 4 created, 0 updated; provider sessions: 6 created, 0 updated" in (
        result.output
    )


def test_publish_in_memory_mode_handles_events_inline(env: dict[str, str], tmp_path: Path) -> None:
    """With memory:// the published events are handled before the command returns."""
    _setup(env, tmp_path)
    event = make_event("logout.user", session_id="s-1")
    result = _run(env, "publish", "-", stdin=json.dumps(event))
    assert result.exit_code == 0, result.output
    assert f"published logout.user {event['event_id']}" in result.output
    listed = _run(env, "audit", "list", "--event", str(event["event_id"]), "--json")
    types = [json.loads(line)["type"] for line in listed.output.splitlines()]
    assert types[0] == "event.received"
    assert types[-2:] == ["logout.completed", "logout.settled"]
    assert types.count("delivery.skipped") == 3


def test_publish_refuses_a_bad_batch_whole(env: dict[str, str], tmp_path: Path) -> None:
    """One bad line: non-zero exit, the line, field and reason, and nothing handled."""
    _setup(env, tmp_path)
    good = json.dumps(make_event("logout.user", session_id="s-1"))
    bad = json.dumps(make_event("session.revoke", initiator="robot"))
    (tmp_path / "e.jsonl").write_text(f"{good}\n{bad}\n")
    result = CliRunner().invoke(main, ["publish", str(tmp_path / "e.jsonl")], env=env)
    assert result.exit_code == 2
    assert "nothing was applied" in result.output
    assert "line 2: session_id: Field required" in result.output
    assert "line 2: initiator: Input should be 'user', 'admin', 'policy' or 'system'" in (
        result.output
    )
    listed = _run(env, "audit", "list", "--json")
    assert listed.output == ""


def test_audit_list_filters_and_table(env: dict[str, str], tmp_path: Path) -> None:
    """audit list filters by user and session and prints a readable table."""
    _setup(env, tmp_path)
    events = [
        make_event("logout.user", session_id="s-1"),
        make_event("logout.user", session_id="s-9"),
    ]
    stdin = "\n".join(json.dumps(e) for e in events)
    assert _run(env, "publish", "-", stdin=stdin).exit_code == 0
    bob = [
        json.loads(x)
        for x in _run(env, "audit", "list", "--user", "bob", "--json").output.splitlines()
    ]
    assert bob[0]["type"] == "event.received"  # the logout's, though it names no user
    assert {x["user_id"] for x in bob[1:]} == {"bob"}
    session = _run(env, "audit", "list", "--session", "s-1", "--json").output.splitlines()
    assert {json.loads(x)["session_id"] for x in session} == {"s-1"}
    since = _run(env, "audit", "list", "--since", "2999-01-01", "--json")
    assert since.output == ""
    table = _run(env, "audit", "list", "--type", "session.ended").output
    assert "session.ended" in table
    assert "delivery.skipped" not in table


def test_providers_load_reports_provider_and_field(env: dict[str, str], tmp_path: Path) -> None:
    """An invalid providers file exits 2 naming the provider and the field."""
    (tmp_path / "bad.toml").write_text('[[providers]]\nname = "wiki"\n')
    result = CliRunner().invoke(main, ["providers", "load", str(tmp_path / "bad.toml")], env=env)
    assert result.exit_code == 2
    assert "provider 'wiki': protocol: Field required" in result.output


def test_config_show_redacts(env: dict[str, str]) -> None:
    """config show prints JSON with passwords masked."""
    result = _run({**env, "LOGOUT_BROKER_URL": "redis://:pw@host:6379/0"}, "config", "show")
    shown = json.loads(result.output)
    assert shown["broker_url"] == "redis://:***@host:6379/0"
    assert shown["worker_threads"] == 16


def test_bad_setting_is_a_clear_error(env: dict[str, str]) -> None:
    """A bad LOGOUT_* variable stops the command with the setting's name."""
    result = CliRunner().invoke(main, ["config", "show"], env={**env, "LOGOUT_WORKER_THREADS": "x"})
    assert result.exit_code == ExitCode.CONFIGURATION
    assert "worker_threads: Input should be a valid integer" in result.output


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            "[protocols.oidc]\nlogut_token_lifetime = 5\n",
            "protocols.oidc.logut_token_lifetime: Extra inputs are not permitted",
        ),
        (
            '[protocols.oidc]\nlogout_token_lifetime = "5m"\n',
            "protocols.oidc.logout_token_lifetime",
        ),
        ("[protocols.cas]\nx = 1\n", "protocols.cas: no handler 'cas' is installed"),
    ],
)
def test_config_show_checks_the_handlers_sections(
    env: dict[str, str], tmp_path: Path, section: str, message: str
) -> None:
    """As a worker does: `config show` is the command an operator checks settings with."""
    config = tmp_path / "logout.toml"
    config.write_text(section)
    result = CliRunner().invoke(
        main, ["--config", str(config), "config", "show"], env={**env, "LOGOUT_PROTOCOLS": "oidc"}
    )
    assert result.exit_code == ExitCode.CONFIGURATION, result.output
    assert message in result.output
    assert "logout.toml" in result.output


def test_worker_refuses_memory_broker(env: dict[str, str]) -> None:
    """A separate worker cannot share an in-process broker; it says what to use instead."""
    result = CliRunner().invoke(main, ["worker"], env=env)
    assert result.exit_code == ExitCode.CONFIGURATION
    assert "memory:// lives inside one process" in result.output


def test_demo_runs_on_embedded_defaults(tmp_path: Path) -> None:
    """The demo loads samples, handles events and prints the audit trail."""
    result = CliRunner().invoke(main, ["demo", "--data-dir", str(tmp_path / "demo")], env={})
    assert result.exit_code == 0, result.output
    for text in ("event.received", "session.ended", "event.duplicate", "event.rejected"):
        assert text in result.output
    assert "logout.completed" in result.output
    # The SAML SP over SOAP: it verified the signed LogoutRequest, we its signed response.
    assert "payroll  session s-1: succeeded (ok)" in result.output
    assert "payroll HTTP 200  name_id=alice@example.com session_index=_idx-1 reason=user" in (
        result.output
    )


def test_worker_options_are_applied(env: dict[str, str]) -> None:
    """--processes and --threads reach the settings (the memory broker then refuses clearly)."""
    result = CliRunner().invoke(main, ["worker", "--processes", "3", "--threads", "2"], env=env)
    assert result.exit_code == ExitCode.CONFIGURATION
    assert "memory:// lives inside one process" in result.output
    bad = CliRunner().invoke(main, ["worker", "--processes", "0"], env=env)
    assert bad.exit_code == 2
    assert "--processes" in bad.output


def test_an_unexpected_error_is_a_sentence_not_a_traceback(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug exits 1 with its type and message and how to see the traceback; DEBUG shows it."""
    from orchestrator.settings import Settings

    def broken(self: Settings) -> dict[str, object]:
        raise RuntimeError("boom")

    monkeypatch.setattr(Settings, "redacted", broken)
    result = CliRunner().invoke(main, ["config", "show"], env=env)
    assert result.exit_code == ExitCode.INTERNAL
    assert "internal error: RuntimeError: boom" in result.output
    assert "LOGOUT_LOG_LEVEL=DEBUG" in result.output
    debug = CliRunner().invoke(main, ["config", "show"], env={**env, "LOGOUT_LOG_LEVEL": "DEBUG"})
    assert isinstance(debug.exception, RuntimeError)


def test_an_unexpected_error_shows_its_first_line_only(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database error's SQL and parameters (which may hold the input) are never printed."""
    from orchestrator.settings import Settings

    def broken(self: Settings) -> dict[str, object]:
        raise RuntimeError("bad value\n[SQL: INSERT ...]\n[parameters: {'secret': 'x'}]")

    monkeypatch.setattr(Settings, "redacted", broken)
    result = CliRunner().invoke(main, ["config", "show"], env=env)
    assert result.exit_code == ExitCode.INTERNAL
    assert "internal error: RuntimeError: bad value" in result.output
    assert "parameters" not in result.output
    assert "INSERT" not in result.output


def test_memory_publish_not_handled_in_time_says_so(
    env: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Events still queued when --wait runs out: exit 8, nothing claimed as published."""
    from dramatiq.brokers.stub import StubBroker
    from dramatiq.errors import QueueJoinTimeout

    _setup(env, tmp_path)

    def late(self: StubBroker, queue_name: str, **_: object) -> None:
        raise QueueJoinTimeout(queue_name)  # type: ignore[no-untyped-call]

    monkeypatch.setattr(StubBroker, "join", late)
    event = make_event("logout.user", session_id="s-1")
    result = CliRunner().invoke(
        main, ["publish", "--wait", "5", "-"], env=env, input=json.dumps(event)
    )
    assert result.exit_code == ExitCode.INCOMPLETE
    assert "not every event was handled within 5 s" in result.output
    assert "publish the same input again with a longer --wait" in result.output
    assert "published logout.user" not in result.output


def test_memory_publish_refuses_a_binding_no_database_serves_with_the_rest(
    env: dict[str, str],
) -> None:
    """A valid event the in-process worker would refuse (a binding no database serves) is
    named with the input's other problems in one round, and nothing of the batch is handled
    (the worker used to refuse it only after the bad lines were fixed, the rest handled)."""
    refused = make_event(
        "session.started",
        session_id="s-b",
        user_id="u",
        ip="81.2.69.142",
        network_binding="bind_asn",
    )
    fine = make_event("session.started", session_id="s-f", user_id="u", ip="81.2.69.142")
    stdin = "\n".join([json.dumps(refused), json.dumps(fine), '{"type": "logout.user"}']) + "\n"
    result = _run(env, "publish", "-", stdin=stdin)
    assert result.exit_code == ExitCode.INPUT, result.output
    assert "line 1: network_binding: bind_asn needs the GeoIP ASN database" in result.output
    assert "line 3: event_id: Field required" in result.output
    listed = _run(env, "audit", "list", "--json")
    assert listed.exit_code == ExitCode.SCHEMA_OUTDATED, "nothing was handled, not even migrated"


def test_binding_check_refuses_bad_options_together(env: dict[str, str]) -> None:
    """A control character in --session and one in --method are named in one round, before
    any database or GeoIP file is needed (an oversized --path is clipped, not refused)."""
    result = _run(
        env,
        "binding",
        "check",
        "--session",
        "a\tb",
        "--ip",
        "1.2.3.4",
        "--path",
        "/" * 3000,
        "--method",
        "GET\r\n",
    )
    assert result.exit_code == ExitCode.INPUT, result.output
    assert "--session: contains the control character U+0009 at position 2" in result.output
    assert "--method: contains the control character U+000D at position 4" in result.output
    assert "--path" not in result.output


def test_publish_names_every_problem_with_wait_zero(env: dict[str, str], tmp_path: Path) -> None:
    """memory:// with --wait 0 and a bad line: both problems in the same refusal."""
    source = tmp_path / "e.jsonl"
    source.write_text('{"type": "logout.user"}\n', encoding="utf-8")
    result = _run(env, "publish", "--wait", "0", str(source))
    assert result.exit_code == ExitCode.INPUT, result.output
    assert "event 1: event_id: Field required" in result.output
    assert "--wait: with broker_url memory://" in result.output


@pytest.mark.parametrize("wait", ["nan", "inf", "1e300", "-1", "86401"])
def test_a_wait_no_clock_can_count_is_refused_with_the_range(
    env: dict[str, str], tmp_path: Path, wait: str
) -> None:
    """--wait nan, inf or 1e300 overflowed the deadline arithmetic (an internal error after
    the events were handled): refused at option parsing, naming --wait and its range."""
    source = tmp_path / "e.jsonl"
    source.write_text(json.dumps(make_event("logout.user", session_id="s-1")) + "\n")
    for command in (["publish", str(source)], ["providers", "remove", "wiki", "--actor", "a"]):
        result = _run(env, *command, "--wait", wait)
        assert result.exit_code == ExitCode.INPUT, result.output
        assert f"Invalid value for '--wait': {wait!r} is not a number of seconds" in result.stderr
        assert "up to 86,400 (a day)" in result.stderr
        assert "published" not in result.output


@pytest.mark.parametrize(
    ("variable", "url", "reason"),
    [
        ("LOGOUT_DATABASE_URL", "garbage", "database_url: not a database URL"),
        ("LOGOUT_DATABASE_URL", "sqlite://relative.db", "database_url: a SQLite URL names a file"),
        ("LOGOUT_BROKER_URL", "redis://127.0.0.1:notaport/0", "broker_url: its port 'notaport'"),
    ],
)
def test_a_url_no_driver_can_use_is_refused_by_every_command(
    env: dict[str, str], variable: str, url: str, reason: str
) -> None:
    """Checked when the settings are read: every command exits 6 naming the setting and its
    source, instead of an internal error from SQLAlchemy or redis-py in some of them."""
    bad = {**env, variable: url}
    for command in (
        ["audit", "list"],
        ["audit", "show", "3f2a"],
        ["audit", "export"],
        ["sessions", "list", "--user", "alice"],
        ["deliveries", "list"],
        ["events", "rejected"],
        ["providers", "list"],
        ["config", "show"],
        ["db", "upgrade"],
        ["publish", "/dev/null"],
        ["worker"],
    ):
        result = _run(bad, *command)
        assert result.exit_code == ExitCode.CONFIGURATION, (command, result.output)
        assert f"{variable} (environment): {reason}" in result.stderr, command
        assert "internal error" not in result.output


def test_help_lists_every_exit_status(env: dict[str, str]) -> None:
    """--help names each status of ExitCode (README: Exit codes), 9 included."""
    shown = " ".join(_run(env, "--help").output.split())
    listed = shown.partition("Exit statuses:")[2].partition("Options:")[0]
    for code in ExitCode:
        assert re.search(rf"(^| ){int(code)} [a-z]", listed), f"{code.name} missing: {listed}"
    assert "9 audit trail broken" in listed


@pytest.mark.parametrize(
    ("command", "actor", "message"),
    [
        (["providers", "disable", "wiki"], "", "is empty; give who does it"),
        (["providers", "enable", "wiki"], "   ", "is empty; give who does it"),
        (["events", "replay", "1"], "ops\x01", "'ops\\x01' holds a control character"),
        (["deliveries", "retry", "d-1"], "o\nps", "'o\\nps' holds a control character"),
        (["audit", "purge", "--before", "2026-01-01"], "x" * 256, "is 256 characters long"),
    ],
)
def test_an_actor_no_auditor_could_read_is_refused(
    env: dict[str, str], command: list[str], actor: str, message: str
) -> None:
    """`--actor` goes into the audit trail: empty, blank, a control character or over 255
    characters is a usage error naming it, before anything is done."""
    result = CliRunner().invoke(main, [*command, "--actor", actor], env=env)
    assert result.exit_code == 2, result.output
    assert "Invalid value for '--actor'" in result.output
    assert message in result.output


@pytest.mark.parametrize(
    ("reason", "advice"),
    [
        (
            "ConnectionClosedByBroker: (403) 'ACCESS_REFUSED - Login was refused using "
            "authentication mechanism PLAIN'",
            "the broker refused the login",
        ),
        ("WRONGPASS invalid username-password pair or user is disabled", "the broker refused"),
        ("Authentication required", "the broker refused"),
        ("Error 111 connecting to 127.0.0.1:6379. Connection refused", "broker unreachable"),
    ],
)
def test_a_refused_login_is_not_told_to_start_the_broker(reason: str, advice: str) -> None:
    from workers.exit_codes import broker_unreachable_message

    message = broker_unreachable_message("amqp://guest:***@mq:5672/", reason)
    assert message.startswith(advice), message
    if advice.startswith("the broker refused"):
        assert "fix the user and password in broker_url" in message
        assert "start it" not in message
    else:
        assert "start it, or fix broker_url" in message


def test_sessions_list_tells_a_bad_filter_from_no_match(env: dict[str, str]) -> None:
    """An address that is none, or a provider not loaded, matched nothing in silence."""
    assert _run(env, "db", "upgrade").exit_code == 0
    no_address = _run(env, "sessions", "list", "--ip", "999.0.0.1")
    assert no_address.exit_code == 2
    assert "--ip: '999.0.0.1' is not an IPv4 or IPv6 address" in no_address.output
    no_provider = _run(env, "sessions", "list", "--provider", "nosuch")
    assert no_provider.exit_code == 2
    assert "--provider: no provider 'nosuch' is loaded; see `providers list`" in no_provider.output
    none = _run(env, "sessions", "list", "--user", "nobody")
    assert none.exit_code == 0
    assert "no sessions match" in none.output


def test_db_upgrade_says_what_it_applied_then_that_nothing_was_left(
    env: dict[str, str],
) -> None:
    """The first run names the revisions it went from and to; the next says it applied
    nothing (it said "up to date" either way)."""
    from orchestrator.store.migrate import head_revisions

    head = ", ".join(sorted(head_revisions()))
    first = _run(env, "db", "upgrade")
    assert first.exit_code == 0
    assert f"database upgraded from none to {head}" in first.output
    again = _run(env, "db", "upgrade")
    assert again.exit_code == 0
    assert "database is up to date: nothing to apply" in again.output
