"""The operator's commands in-process (SQLite, ``memory://``): their output, and every bad
input a clear usage error naming the option, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import Result

from tests.unit.conftest import make_event
from tests.unit.test_cli import _run, _setup, env  # noqa: F401  (env: the fixture)
from workers.exit_codes import ExitCode


@pytest.fixture
def logged_out(env: dict[str, str], tmp_path: Path) -> dict[str, str]:  # noqa: F811
    """test_cli's providers (disabled) and sessions; s-1 and s-9 logged out: 4 deliveries,
    skipped."""
    _setup(env, tmp_path)
    for session_id in ("s-1", "s-9"):
        event = make_event("logout.user", session_id=session_id)
        assert _run(env, "publish", "-", stdin=json.dumps(event)).exit_code == 0
    return env


def _usage(result: Result, *words: str) -> None:
    assert result.exit_code == ExitCode.INPUT, result.output
    assert "Traceback" not in result.output
    for word in words:
        assert word in result.output


def test_deliveries_list_json_table_and_cut_note(logged_out: dict[str, str]) -> None:
    rows = [
        json.loads(line)
        for line in _run(logged_out, "deliveries", "list", "--json").stdout.splitlines()
    ]
    assert len(rows) == 4
    assert {row["status"] for row in rows} == {"skipped"}
    cut = _run(logged_out, "deliveries", "list", "--limit", "3", "--provider", "wiki")
    assert cut.stdout.splitlines()[0].split()[:3] == ["id", "status", "provider"]
    assert len(cut.stdout.splitlines()) == 3  # the header and wiki's two
    limited = _run(logged_out, "deliveries", "list", "--limit", "1")
    assert "showing the latest 1 of 4 deliveries; use --limit or --json" in limited.stderr
    none = _run(logged_out, "deliveries", "list", "--status", "failed", "--json")
    assert none.stdout == ""


def test_a_skipped_delivery_is_not_retried(logged_out: dict[str, str]) -> None:
    [row, *_] = [
        json.loads(line)
        for line in _run(logged_out, "deliveries", "list", "--json").stdout.splitlines()
    ]
    result = _run(logged_out, "deliveries", "retry", row["id"], "--actor", "ops")
    assert result.exit_code == ExitCode.INPUT
    assert f"{row['id']}: skipped (no handler for protocol" in result.stderr
    assert "only a failed delivery can be retried" in result.stderr


def test_bad_options_are_usage_errors(logged_out: dict[str, str]) -> None:
    cli_env = logged_out
    _usage(_run(cli_env, "deliveries", "retry", "--actor", "ops"), "give delivery IDS or --failed")
    _usage(
        _run(cli_env, "deliveries", "retry", "x", "--provider", "wiki", "--actor", "ops"),
        "--provider and --since select with --failed",
    )
    _usage(_run(cli_env, "deliveries", "retry", "x"), "Missing option '--actor'")
    _usage(
        _run(cli_env, "deliveries", "list", "--since", "yesterday"), "'--since'", "not a timestamp"
    )
    _usage(_run(cli_env, "deliveries", "list", "--event", "zz"), "'--event'", "no audit record")
    _usage(_run(cli_env, "deliveries", "list", "--status", "lost"), "'--status'")
    _usage(_run(cli_env, "events", "replay", "one", "--actor", "ops"), "'ID'")
    _usage(_run(cli_env, "events", "replay", "7", "--actor", "ops"), "no rejected event 7")
    for beyond in ("99999999999999999999999", "2147483648", "0"):  # no INTEGER id: no row
        replay = _run(cli_env, "events", "replay", beyond, "--actor", "ops")
        _usage(replay, f"no rejected event {beyond}; see `events rejected`")
    _usage(_run(cli_env, "providers", "remove", "wikki", "--actor", "ops"), "did you mean wiki")


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"])
def test_a_time_out_of_range_is_a_usage_error_naming_the_option(
    env: dict[str, str],  # noqa: F811
    when: str,
) -> None:
    """Every --since, --until and --before refuses a time whose UTC reading datetime cannot
    hold (exit 2 naming the option and the range), never an OverflowError."""
    assert _run(env, "db", "upgrade").exit_code == 0
    for *command, option in [
        ("deliveries", "list", "--since"),
        ("deliveries", "retry", "--failed", "--actor", "ops", "--since"),
        ("events", "rejected", "--since"),
        ("audit", "list", "--since"),
        ("audit", "verify", "--since"),
        ("audit", "export", "--since"),
        ("audit", "export", "--until"),
        ("audit", "purge", "--before"),
    ]:
        result = _run(env, *command, option, when)
        _usage(result, f"'{option}'", "is out of range", "9999-12-31T23:59:59.999999Z")


def test_providers_list_and_disable(logged_out: dict[str, str]) -> None:
    cli_env = logged_out
    listed = [
        json.loads(line)
        for line in _run(cli_env, "providers", "list", "--json").stdout.splitlines()
    ]
    assert [(p["name"], p["method"], p["enabled"], p["open_sessions"]) for p in listed] == [
        ("chat", "none (no handler enabled)", False, 1),
        ("payroll", "none (no handler enabled)", False, 0),
        ("wiki", "none (no handler enabled)", False, 1),
    ]
    again = _run(cli_env, "providers", "disable", "wiki", "--actor", "ops")
    assert again.stdout.strip() == "provider 'wiki' was already disabled; nothing changed"
    refused = _run(cli_env, "providers", "enable", "wiki", "--actor", "ops")
    assert refused.exit_code == ExitCode.INPUT
    assert "no enabled handler serves 'oidc'" in refused.stderr
