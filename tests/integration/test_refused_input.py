"""Operator input refused early, clearly and in one round, driven through the command line.

Each case found by fuzzing or by an operator's mistake: the exit status, the input named,
no traceback, and nothing applied (no event handled, no row written).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
from sqlalchemy import text

from workers.exit_codes import ExitCode

from .support import CLI, Stack, closed_port, json_lines, logout_event

pytestmark = pytest.mark.integration

PROVIDER = """
[[providers]]
name = "wiki"
protocol = "oidc"
client_id = "wiki"
backchannel_logout_uri = "https://wiki.invalid/logout"
"""


def _refused(result: subprocess.CompletedProcess[str], code: ExitCode, *texts: str) -> None:
    """Exited ``code``, named each of ``texts`` on stderr, and printed no traceback."""
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    assert "internal error" not in result.stderr, result.stderr
    for expected in texts:
        assert expected in result.stderr, result.stderr


def _count(stack: Stack, table: str) -> int:
    with stack.engine.connect() as connection:
        return int(connection.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())


def test_publish_in_process_with_an_unwritable_data_dir_is_refused_at_start(
    stack: Stack, tmp_path: Path
) -> None:
    """memory:// handles events here and must sign with a generated key: a data_dir it
    cannot write is exit 6 before any event is taken (it was exit 8 once the delivery failed
    to generate its key), naming the directory, the variable and the settings to use."""
    providers = tmp_path / "providers.toml"
    providers.write_text(PROVIDER, encoding="utf-8")
    sessions = tmp_path / "sessions.jsonl"
    sessions.write_text(
        json_lines(
            [
                {"kind": "session", "session_id": "s-1", "user_id": "u-1"},
                {"kind": "provider_session", "session_id": "s-1", "provider": "wiki", "sid": "x"},
            ]
        ),
        encoding="utf-8",
    )
    assert stack.cli("providers", "load", str(providers)).returncode == 0
    assert stack.cli("sessions", "import", str(sessions)).returncode == 0
    source = tmp_path / "events.jsonl"
    source.write_text(json_lines([logout_event("s-1")]), encoding="utf-8")
    result = stack.cli(
        "publish",
        str(source),
        env={"LOGOUT_BROKER_URL": "memory://", "LOGOUT_DATA_DIR": "/proc/x"},
    )
    _refused(
        result,
        ExitCode.CONFIGURATION,
        "cannot write generated signing keys to /proc/x/oidc-keys",
        "LOGOUT_DATA_DIR (environment)",
        "key_files of [protocols.oidc] (LOGOUT_OIDC_KEY_FILES)",
    )
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert result.stdout == ""
    assert _count(stack, "events") == 0
    assert _count(stack, "audit_records") == 0


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ('{"type": "logout.user", "session_id": ' + "1" * 5000 + "}", "4300 digits"),
        (
            json.dumps(logout_event("s-1"))[:-1]
            + ', "request": {"args": {"a": '
            + "[" * 300
            + "]" * 300
            + "}}}",
            "request.args.a: must be a string, a number, a boolean, null or a list of strings",
        ),
        ('{"a": ' + "[" * 5000 + "]" * 5000 + "}", "nested too deeply"),
        (json.dumps(logout_event("s\x001")), "session_id: contains the control character U+0000"),
    ],
    ids=["5000-digits", "nesting-300", "nesting-5000", "nul"],
)
def test_publish_refuses_what_fuzzing_found(
    stack: Stack, tmp_path: Path, line: str, reason: str
) -> None:
    """A huge number, deep nesting or a NUL is one refusal naming the line: exit 2, nothing
    published."""
    source = tmp_path / "events.jsonl"
    source.write_text(json.dumps(logout_event("s-ok")) + "\n" + line + "\n", encoding="utf-8")
    result = stack.cli("publish", str(source))
    _refused(result, ExitCode.INPUT, "line 2", reason, "nothing was applied")
    assert result.stdout == ""
    assert stack.queue_length("events") == 0


def test_sessions_import_with_a_nul_names_the_line_not_the_sql(
    stack: Stack, tmp_path: Path
) -> None:
    """A NUL in an identifier is refused on validation; PostgreSQL never sees it, so no SQL
    parameters are printed, and every other problem of the file comes in the same round."""
    sessions = tmp_path / "sessions.jsonl"
    sessions.write_text(
        '{"kind": "session", "session_id": "s\\u00001", "user_id": "u-1"}\n'
        '{"kind": "session", "session_id": "s-2", "user_id": "u\\u00002"}\n'
        '{"kind": "provider_session", "session_id": "s-9", "provider": "nope", "sid": "x"}\n',
        encoding="utf-8",
    )
    result = stack.cli("sessions", "import", str(sessions))
    _refused(
        result,
        ExitCode.INPUT,
        "refused: 4 problem(s)",
        "line 1: session_id: contains the control character U+0000 at position 2",
        "line 2: user_id: contains the control character U+0000",
        "line 3: provider: no such provider",
        "line 3: session_id: no such IdP session",
    )
    for leaked in ("INSERT", "parameters", "psycopg"):
        assert leaked not in result.stderr
    assert _count(stack, "idp_sessions") == 0


def test_providers_load_reports_every_problem_before_the_database(
    stack: Stack, tmp_path: Path
) -> None:
    """An uninstalled protocol, a misspelled field and a URI with a password are named at
    once with the file and provider, even with the database down: the file is checked first."""
    providers = tmp_path / "providers.toml"
    providers.write_text(
        '[[providers]]\nname = "a"\nprotocol = "openid"\nclient_id = "a"\n'
        '[[providers]]\nname = "b"\nprotocol = "oidc"\nclient_id = "b"\nenabeld = true\n'
        'backchannel_logout_uri = "https://u:pw@b.test/logout"\n',
        encoding="utf-8",
    )
    down = f"postgresql://postgres@127.0.0.1:{closed_port()}/logout"
    result = stack.cli("providers", "load", str(providers), env={"LOGOUT_DATABASE_URL": down})
    _refused(
        result,
        ExitCode.INPUT,
        "refused: 3 problem(s)",
        f"{providers}: provider 'a': protocol: no installed handler serves 'openid' (did you "
        "mean oidc?)",
        f"{providers}: provider 'b': enabeld: unknown field (did you mean enabled?)",
        f"{providers}: provider 'b': backchannel_logout_uri: must not carry a user or password",
    )


def test_providers_load_refuses_deep_toml_and_an_endless_certificate(
    stack: Stack, tmp_path: Path
) -> None:
    """Deeply nested TOML and sp_certificate = "/dev/zero" are refusals naming the file and
    provider, at once (the certificate used to be read forever)."""
    deep = tmp_path / "deep.toml"
    deep.write_text(
        '[[providers]]\nname = "x"\nprotocol = "oidc"\nclient_id = '
        + "[" * 3000
        + "]" * 3000
        + "\n",
        encoding="utf-8",
    )
    _refused(
        stack.cli("providers", "load", str(deep)),
        ExitCode.INPUT,
        f"{deep}: invalid TOML: nested too deeply",
    )
    zero = tmp_path / "zero.toml"
    zero.write_text(
        '[[providers]]\nname = "sp"\nprotocol = "saml"\nentity_id = "https://sp.test"\n'
        'sls_binding = "soap"\nsls_url = "https://sp.test/sls"\nsp_certificate = "/dev/zero"\n',
        encoding="utf-8",
    )
    _refused(
        stack.cli("providers", "load", str(zero), timeout=30),
        ExitCode.INPUT,
        f"{zero}: provider 'sp': sp_certificate: cannot read /dev/zero: a character device",
    )
    _refused(
        stack.cli("sessions", "import", "/dev/zero", timeout=30),
        ExitCode.INPUT,
        "/dev/zero: a character device, not a file",
    )


def test_a_database_url_from_the_config_file_is_attributed_to_it(
    stack: Stack, tmp_path: Path
) -> None:
    """mysql:// written in the TOML file: the error names the file, not LOGOUT_DATABASE_URL."""
    config = tmp_path / "logout.toml"
    config.write_text('database_url = "mysql://logout@127.0.0.1/logout"\n', encoding="utf-8")
    env = stack.env()
    del env["LOGOUT_DATABASE_URL"]
    result = subprocess.run(
        [str(CLI), "--config", str(config), "audit", "list"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    _refused(
        result,
        ExitCode.CONFIGURATION,
        f"database_url in {config}: mysql:// is not supported",
        "postgresql (psycopg)",
    )
