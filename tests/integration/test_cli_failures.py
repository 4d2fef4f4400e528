"""Failures of the command line, driven as a user meets them: one or two sentences naming the
problem and the fix, a documented exit status, no traceback, and nothing lost."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from workers.exit_codes import ExitCode

from .support import CLI, Stack, closed_port, json_lines, logout_event

pytestmark = pytest.mark.integration


def _fails(result: subprocess.CompletedProcess[str], code: ExitCode, *texts: str) -> None:
    """Exited ``code`` with one or two lines on stderr holding ``texts``, and no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert 1 <= len(lines) <= 2, result.stderr
    for text in texts:
        assert text in result.stderr, result.stderr


def test_toml_syntax_error_names_file_line_and_column(stack: Stack, tmp_path: Path) -> None:
    """A broken config file: its path, the line and column, exit 4."""
    config = tmp_path / "logout.toml"
    config.write_text('issuer = "https://idp.example.test"\nworker_threads = = 3\n')
    result = stack.cli("--config", str(config), "config", "show")
    _fails(result, ExitCode.CONFIGURATION, str(config), "line 2, column 18", "not valid TOML")
    assert result.stdout == ""


def test_unsupported_database_url_names_installed_drivers(stack: Stack) -> None:
    """mysql:// is refused naming what is installed (sqlite, postgresql via psycopg)."""
    env = {"LOGOUT_DATABASE_URL": "mysql://logout@127.0.0.1/logout"}
    for command in (["audit", "list"], ["providers", "load", "/dev/null"]):
        result = stack.cli(*command, env=env)
        _fails(result, ExitCode.CONFIGURATION, "mysql:// is not supported", "sqlite")
        assert "postgresql (psycopg)" in result.stderr


def test_unreachable_database(stack: Stack) -> None:
    """PostgreSQL on a closed port: the database, the driver's reason and the fix, exit 5."""
    url = f"postgresql://postgres@127.0.0.1:{closed_port()}/logout"
    result = stack.cli("audit", "list", env={"LOGOUT_DATABASE_URL": url})
    _fails(result, ExitCode.DATABASE_UNAVAILABLE, "database unreachable", url, "refused")


def test_unreachable_broker_publishes_nothing(stack: Stack, tmp_path: Path) -> None:
    """publish with Redis or RabbitMQ down says nothing was published and exits 6."""
    source = tmp_path / "events.jsonl"
    source.write_text(json_lines([logout_event("s-1")]), encoding="utf-8")
    port = closed_port()
    for broker, shown in (
        (f"redis://127.0.0.1:{port}/0", f"redis://127.0.0.1:{port}/0"),
        (f"amqp://guest:guest@127.0.0.1:{port}/%2F", f"amqp://guest:***@127.0.0.1:{port}/"),
    ):
        result = stack.cli("publish", str(source), env={"LOGOUT_BROKER_URL": broker})
        _fails(
            result,
            ExitCode.BROKER_UNAVAILABLE,
            "broker unreachable",
            shown,
            "Connection refused",
            "Nothing was published",
        )
        assert "published" not in result.stdout
        assert "guest:guest" not in result.stderr, "the password was shown"
    assert stack.queue_length("events") == 0


def test_unwritable_key_and_data_directories(stack: Stack) -> None:
    """keys generate --dir /proc/x and a data_dir there: which directory, and the fix, exit 4."""
    keys = stack.cli("keys", "generate", "--dir", "/proc/x/keys")
    _fails(keys, ExitCode.CONFIGURATION, "cannot write keys to /proc/x/keys")
    data = stack.cli(
        "sessions",
        "import",
        "/dev/null",
        env={"LOGOUT_DATA_DIR": "/proc/x", "LOGOUT_DATABASE_URL": ""},
    )
    _fails(data, ExitCode.CONFIGURATION, "/proc/x", "LOGOUT_DATA_DIR")
    jwks = stack.cli("keys", "jwks", env={"LOGOUT_DATA_DIR": "/proc/x"})
    _fails(jwks, ExitCode.CONFIGURATION, "cannot write keys to /proc/x/oidc-keys")


def test_memory_broker_without_wait_is_refused_before_anything(
    stack: Stack, tmp_path: Path
) -> None:
    """memory:// with --wait 0 cannot handle the events it was given: refused, nothing applied."""
    stack.protocols = []
    source = tmp_path / "events.jsonl"
    event = logout_event("s-1")
    source.write_text(json_lines([event]), encoding="utf-8")
    env = {"LOGOUT_BROKER_URL": "memory://"}
    assert stack.cli("db", "upgrade", env=env).returncode == 0
    result = stack.cli("publish", "--wait", "0", str(source), env=env)
    assert result.returncode == ExitCode.INPUT, result.stderr
    assert "Traceback" not in result.stderr
    assert "nothing was applied" in result.stderr
    assert "--wait" in result.stderr
    listed = stack.cli("audit", "list", "--json", env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout == ""
    handled = stack.cli("publish", "--wait", "10", str(source), env=env)
    assert handled.returncode == 0, handled.stderr
    listed = stack.cli("audit", "list", "--event", event["event_id"], "--json", env=env)
    types = [json.loads(line)["type"] for line in listed.stdout.splitlines()]
    assert "event.received" in types


def test_read_only_commands_never_migrate(stack: Stack) -> None:
    """audit list on an empty database: exit 7 and `db upgrade` named, no Alembic line, no table."""
    result = stack.cli("audit", "list", env={"LOGOUT_LOG_LEVEL": "INFO"})
    _fails(result, ExitCode.SCHEMA_OUTDATED, "no schema", "logout-orchestrator db upgrade")
    assert "alembic" not in result.stderr.lower()
    with stack.engine.connect() as connection:
        assert not stack.engine.dialect.has_table(connection, "alembic_version")
    assert stack.cli("db", "upgrade").returncode == 0
    for command in (["audit", "list"], ["config", "show"], ["keys", "jwks"]):
        quiet = stack.cli(*command, env={"LOGOUT_LOG_LEVEL": "INFO"})
        assert quiet.returncode == 0, quiet.stderr
        assert "alembic" not in quiet.stderr.lower(), quiet.stderr


def test_version() -> None:
    """--version prints the installed package's version."""
    from importlib.metadata import version

    result = subprocess.run(
        [str(CLI), "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0
    assert result.stdout.strip() == f"logout-orchestrator, version {version('logout-orchestrator')}"
