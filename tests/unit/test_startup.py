"""Start-up: cheap imports, the exit-status table, the schema check, the worker's back-off."""

from __future__ import annotations

import importlib
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
from schemas._lazy import type_checking_exports
from tests.cli_imports import NEVER_ON_READING_COMMANDS, command_modules, loaded_of
from workers import outage
from workers.exit_codes import ExitCode, exit_code_for, foreign_error
from workers.tables import AUDIT_COLUMNS

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


def test_config_show_loads_no_database_logging_or_other_stack(tmp_path: Path) -> None:
    """config show reads the settings only: no SQLAlchemy, no psycopg, nothing of
    NEVER_ON_READING_COMMANDS (pydantic-settings, structlog, rich, the other stacks)."""
    env = {"LOGOUT_DATA_DIR": str(tmp_path), "LOGOUT_BROKER_URL": "memory://"}
    output, loaded = command_modules(["config", "show"], env)
    assert json.loads(output)["broker_url"] == "memory://"
    assert loaded_of(loaded, [*NEVER_ON_READING_COMMANDS, "sqlalchemy", "psycopg"]) == []


def test_audit_list_on_sqlite_loads_core_only(tmp_path: Path) -> None:
    """audit list on the embedded database reads through SQLAlchemy Core: no ORM, Alembic,
    structlog, rich, psycopg or other stack (NEVER_ON_READING_COMMANDS)."""
    engine = create_engine(f"sqlite:///{tmp_path / 'logout.db'}")
    upgrade(engine)
    engine.dispose()
    env = {"LOGOUT_DATA_DIR": str(tmp_path), "LOGOUT_BROKER_URL": "memory://"}
    output, loaded = command_modules(["audit", "list"], env)
    assert output.split() == list(AUDIT_COLUMNS)  # the header of an empty trail
    assert "sqlalchemy.dialects.sqlite" in loaded
    assert loaded_of(loaded, [*NEVER_ON_READING_COMMANDS, "psycopg"]) == []


def test_reading_commands_run_as_the_program_flush_and_keep_their_status(tmp_path: Path) -> None:
    """Run as the program, config show and audit list end the process without the
    interpreter's teardown: their whole output still arrives, with their exit status."""
    cli = Path(sys.executable).parent / "logout-orchestrator"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGOUT_") or "_TEST_" in k}
    env.update(LOGOUT_DATA_DIR=str(tmp_path), LOGOUT_BROKER_URL="memory://")
    shown = subprocess.run([cli, "config", "show"], env=env, capture_output=True, text=True)
    assert (shown.returncode, json.loads(shown.stdout)["broker_url"]) == (0, "memory://")
    missing = subprocess.run([cli, "audit", "list"], env=env, capture_output=True, text=True)
    assert missing.returncode == ExitCode.SCHEMA_OUTDATED
    assert missing.stderr.startswith("error: no database at ")
    engine = create_engine(f"sqlite:///{tmp_path / 'logout.db'}")
    upgrade(engine)
    engine.dispose()
    listed = subprocess.run([cli, "audit", "list"], env=env, capture_output=True, text=True)
    assert (listed.returncode, listed.stdout.split()) == (0, list(AUDIT_COLUMNS))


LAZY_PACKAGES = ("orchestrator", "orchestrator.store", "protocols", "schemas", "workers")


def _package(root: Path, name: str, init: str, **modules: str) -> None:
    """A package ``name`` under ``root`` with this ``__init__`` and submodules."""
    (root / name).mkdir()
    (root / name / "__init__.py").write_text(init, encoding="utf-8")
    for module, body in modules.items():
        (root / name / f"{module}.py").write_text(body, encoding="utf-8")


_LAZY_INIT = (
    "from typing import TYPE_CHECKING\n"
    "from schemas._lazy import lazy_exports\n"
    "if TYPE_CHECKING:\n"
    "    from {name}.{module} import {names}\n"
    "__all__ = {all}\n"
    "__getattr__, __dir__ = lazy_exports(__name__)\n"
)


def test_lazy_exports_import_on_first_use(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A name of the TYPE_CHECKING block is imported when first asked for, aliases and
    relative imports included."""
    init = _LAZY_INIT.format(
        name="lazy_ok", module="impl", names="one, two as deux", all='["deux", "one", "three"]'
    ).replace("if TYPE_CHECKING:\n", "if TYPE_CHECKING:\n    from .more import three\n")
    _package(tmp_path, "lazy_ok", init, impl="one = 1\ntwo = 2\n", more="three = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazy_ok  # type: ignore[import-not-found]

    assert "lazy_ok.impl" not in sys.modules
    assert (lazy_ok.one, lazy_ok.deux, lazy_ok.three) == (1, 2, 3)
    assert {"one", "deux", "three"} <= set(dir(lazy_ok))
    with pytest.raises(AttributeError, match="has no attribute 'two'"):
        _ = lazy_ok.two


def test_lazy_exports_refuse_a_name_shared_with_a_submodule(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An export named like a submodule would resolve to the module once it is imported."""
    init = _LAZY_INIT.format(
        name="lazy_shared", module="evaluate", names="evaluate", all='["evaluate"]'
    )
    _package(tmp_path, "lazy_shared", init, evaluate="def evaluate(): pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazy_shared  # type: ignore[import-not-found]

    with pytest.raises(ValueError, match=r"exports named like its submodules: \['evaluate'\]"):
        _ = lazy_shared.evaluate


def test_lazy_exports_refuse_a_listed_name_no_module_exports(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A name in __all__ that the TYPE_CHECKING block does not import is refused."""
    init = _LAZY_INIT.format(name="lazy_gap", module="impl", names="one", all='["one", "two"]')
    _package(tmp_path, "lazy_gap", init, impl="one = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import lazy_gap  # type: ignore[import-not-found]

    with pytest.raises(ValueError, match=r"__all__ names no module exports: \['two'\]"):
        _ = lazy_gap.one


@pytest.mark.parametrize("name", LAZY_PACKAGES)
def test_lazy_export_lists_agree(name: str) -> None:
    """The TYPE_CHECKING imports and __all__ name the same exports, each of which resolves
    to the object its module defines."""
    package = importlib.import_module(name)
    imported = type_checking_exports(name)
    assert sorted(imported) == sorted(package.__all__)
    for export, (module, attribute) in imported.items():
        assert getattr(package, export) is getattr(importlib.import_module(module), attribute)


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
