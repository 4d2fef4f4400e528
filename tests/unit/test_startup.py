"""Start-up: cheap imports, the exit-status table, the schema check, the worker's back-off."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError, ProgrammingError
from structlog.testing import capture_logs

from orchestrator.errors import (
    BrokerUnavailableError,
    ConfigurationError,
    DatabaseUnavailableError,
    IncompleteError,
    InputError,
    LogoutError,
    Problem,
    SchemaOutdatedError,
)
from orchestrator.store.migrate import check_schema, head_revisions, upgrade
from schemas._lazy import lazy_exports
from workers import outage
from workers.exit_codes import ExitCode, exit_code_for, foreign_error

HEAVY = (
    "lxml",
    "xmlsec",
    "aiohttp",
    "httpx",
    "dramatiq",
    "pika",
    "redis",
    "psycopg",
    "alembic",
    "jwt",
    "maxminddb",
)


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys, json; print(json.dumps(sorted(sys.modules)))"],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout
    return set(json.loads(out.splitlines()[-1]))


def test_cli_import_loads_no_heavy_stack() -> None:
    """Importing the CLI (what --help needs) loads no SAML, HTTP, broker or database stack."""
    loaded = _modules_after("import workers.cli")
    assert not {m.split(".")[0] for m in loaded} & {*HEAVY, "sqlalchemy", "pydantic"}


def test_packages_import_lazily() -> None:
    """Importing the packages and the settings loads none of the heavy stacks."""
    loaded = _modules_after(
        "import orchestrator, protocols, schemas, workers, orchestrator.settings"
    )
    assert not {m.split(".")[0] for m in loaded} & {*HEAVY, "sqlalchemy"}


def test_config_show_loads_neither_database_nor_logging(tmp_path: Path) -> None:
    """config show reads the settings only: no SQLAlchemy, no structlog, no heavy stack."""
    code = (
        "import contextlib, io, json, sys\n"
        "from workers.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    main(['config', 'show'], standalone_mode=False)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGOUT_") or "_TEST_" in k}
    env.update(LOGOUT_DATA_DIR=str(tmp_path), LOGOUT_BROKER_URL="memory://")
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    loaded = {m.split(".")[0] for m in json.loads(out.splitlines()[-1])}
    assert not loaded & {*HEAVY, "sqlalchemy", "structlog"}


def test_audit_list_path_loads_no_heavy_stack() -> None:
    """What audit list imports (runtime, audit query, table) leaves the other stacks alone."""
    loaded = _modules_after(
        "import orchestrator.runtime, orchestrator.audit, orchestrator.store.migrate, "
        "workers.tables"
    )
    assert not {m.split(".")[0] for m in loaded} & set(HEAVY)


def test_lazy_exports_refuse_a_name_shared_with_a_submodule() -> None:
    """An export named like a submodule would resolve to the module once it is imported."""
    with pytest.raises(ValueError, match=r"exports named like its submodules: \['evaluate'\]"):
        lazy_exports("orchestrator.binding", {"orchestrator.binding.evaluate": ("evaluate",)})


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (InputError([Problem("line 1", "type", "bad")]), ExitCode.INPUT),
        (ConfigurationError("x"), ExitCode.CONFIGURATION),
        (DatabaseUnavailableError("x"), ExitCode.DATABASE_UNAVAILABLE),
        (BrokerUnavailableError("x"), ExitCode.BROKER_UNAVAILABLE),
        (SchemaOutdatedError("x"), ExitCode.SCHEMA_OUTDATED),
        (IncompleteError("x"), ExitCode.INCOMPLETE),
        (LogoutError("x"), ExitCode.INTERNAL),
    ],
)
def test_exit_status_of_each_error(error: LogoutError, code: ExitCode) -> None:
    """Each error type has its documented exit status; binding check keeps 3."""
    assert exit_code_for(error) == code
    assert int(ExitCode.BINDING_BROKEN) == 3


def test_library_connection_errors_are_translated() -> None:
    """A redis or SQLAlchemy connection error reaching the boundary becomes ours."""
    import redis
    from sqlalchemy.exc import OperationalError

    broker = foreign_error(redis.ConnectionError("Connection refused."), "db", "redis://h/0")
    assert isinstance(broker, BrokerUnavailableError)
    assert "redis://h/0: Connection refused;" in str(broker)
    refused = Exception('connection to server at "h" failed: Connection refused')
    database = foreign_error(OperationalError("SELECT 1", {}, refused), "pg://h", "b")
    assert isinstance(database, DatabaseUnavailableError)
    assert str(database).startswith("database unreachable: pg://h: connection to server")
    assert foreign_error(KeyError("x"), "db", "b") is None


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (OperationalError("x", {}, Exception("no such table: outbox")), SchemaOutdatedError,
         "missing a table (no such table: outbox); run `logout-orchestrator db upgrade`"),
        (ProgrammingError("x", {}, Exception('relation "outbox" does not exist')),
         SchemaOutdatedError, "run `logout-orchestrator db upgrade`"),
        (OperationalError("x", {}, Exception("database is locked")), DatabaseUnavailableError,
         "the database refused the work: db: database is locked; nothing of this command"),
        (OperationalError("x", {}, Exception("attempt to write a readonly database")),
         DatabaseUnavailableError, "refused the work: db: attempt to write a readonly database"),
    ],
)  # fmt: skip
def test_database_errors_that_are_not_unreachable_say_what_they_are(
    error: Exception, kind: type[Exception], text: str
) -> None:
    """A missing table is the schema (exit 7), a locked or read-only database is named as it
    is, never "check that it runs"."""
    translated = foreign_error(error, "db", "b")
    assert isinstance(translated, kind)
    assert text in str(translated)
    assert "check that it runs" not in str(translated)


def test_head_revisions_match_alembic() -> None:
    """The cheap head read from the version files is what Alembic's script directory says."""
    from alembic.script import ScriptDirectory

    from orchestrator.store.migrate import alembic_config

    assert head_revisions() == set(ScriptDirectory.from_config(alembic_config()).get_heads())


def test_schema_check_says_what_to_run(tmp_path: Path) -> None:
    """No schema, an older one, a newer one: each refused naming the fix; the head passes."""
    engine = create_engine(f"sqlite:///{tmp_path / 'db.sqlite'}")
    with pytest.raises(SchemaOutdatedError, match="no schema yet; run `logout-orchestrator db"):
        check_schema(engine)
    upgrade(engine)
    check_schema(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '0001'"))
    with pytest.raises(SchemaOutdatedError, match="at revision 0001, this version needs"):
        check_schema(engine)
    with engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    with pytest.raises(SchemaOutdatedError, match="newer than this version knows"):
        check_schema(engine)
    engine.dispose()


def test_reach_backs_off_and_logs_each_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    """Unreachable: one warning per attempt, the delay doubling up to the cap; then the value."""
    monkeypatch.setattr(outage, "BACKOFF_FIRST", 0.001)
    monkeypatch.setattr(outage, "BACKOFF_CAP", 0.004)
    attempts = iter([DatabaseUnavailableError("database unreachable: x")] * 4)

    def connect() -> str:
        error = next(attempts, None)
        if error is not None:
            raise error
        return "connected"

    with capture_logs() as logs:
        assert outage.reach(connect, threading.Event()) == "connected"
    assert [entry["retry_in"] for entry in logs] == [0.001, 0.002, 0.004, 0.004]
    assert all(e["event"].startswith("database unreachable: x; retrying in") for e in logs)


def test_reach_stops_when_asked_and_raises_other_errors() -> None:
    """A stop while waiting returns None at once; a configuration error is not retried."""
    stop = threading.Event()
    stop.set()

    def down() -> None:
        raise BrokerUnavailableError("broker unreachable: x")

    with capture_logs():
        assert outage.reach(down, stop) is None

    def wrong() -> None:
        raise ConfigurationError("database_url: mysql:// is not supported")

    with pytest.raises(ConfigurationError):
        outage.reach(wrong, threading.Event())
