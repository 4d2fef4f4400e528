"""``sessions import`` at scale: JSON lines per second through the session registry.

Generates N lines (N/2 IdP sessions, each followed by one OIDC provider session), loads one
provider, then imports the lines with :meth:`SessionRegistry.import_lines` (what
``logout-orchestrator sessions import`` runs: parsing, validation by the protocol handler,
references, then the writes, all or nothing) into an empty database, then once more over
the same rows (every line an update). Runs on PostgreSQL (a database of yours, emptied
first) and on SQLite (a file in a temporary folder).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import delete, func, select, text

from bench.common import (
    REPO,
    BenchError,
    add_json_option,
    bench_settings,
    command_line,
    exit_on_sigterm,
    fmt,
    machine_info,
    machine_line,
    new_parser,
    render_table,
    write_json,
)
from orchestrator.logging import configure_logging
from orchestrator.runtime import Runtime
from orchestrator.store import IdpSession, Provider, ProviderSession

DEFAULT_JSON = REPO / "bench" / "results" / "session_import.json"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/bench_imports"

PROVIDERS = """\
[[providers]]
name = "wiki"
protocol = "oidc"
client_id = "wiki"
backchannel_logout_uri = "https://wiki.example.test/backchannel-logout"
backchannel_logout_session_required = true
"""


def generate(lines: int) -> list[str]:
    """``lines`` JSON lines: a session, then its provider session, and so on."""
    out: list[str] = []
    for n in range(lines // 2):
        session_id = f"s-{n:08d}"
        out.append(
            json.dumps(
                {
                    "kind": "session",
                    "session_id": session_id,
                    "user_id": f"u-{n % 50_000}",
                    "ip": f"10.{n // 65536 % 256}.{n // 256 % 256}.{n % 256}",
                    "created": "2026-11-22T09:00:00+00:00",
                }
            )
        )
        out.append(
            json.dumps(
                {
                    "kind": "provider_session",
                    "session_id": session_id,
                    "provider": "wiki",
                    "sid": f"sid-{n}",
                    "sub": f"u-{n % 50_000}",
                }
            )
        )
    return out


def _empty(runtime: Runtime) -> None:
    with runtime.engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # no dead rows left behind for the next run
            conn.execute(text("TRUNCATE provider_sessions, idp_sessions, providers CASCADE"))
            return
        for model in (ProviderSession, IdpSession, Provider):
            conn.execute(delete(model))


def _count(runtime: Runtime, model: Any) -> int:
    with runtime.sessions() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def measure(database_url: str, data_dir: Path, lines: list[str]) -> dict[str, Any]:
    """Import ``lines`` into an empty database, then again (updates); seconds and lines/s."""
    settings = bench_settings(data_dir, database_url, protocols=["oidc"])
    runtime = Runtime.start(settings)
    try:
        _empty(runtime)
        runtime.registry.load_providers_file(PROVIDERS, "providers.toml")
        runs: dict[str, Any] = {}
        for name in ("created", "updated"):
            began = time.perf_counter()
            summary = runtime.registry.import_lines(lines)
            seconds = time.perf_counter() - began
            runs[name] = {
                "seconds": seconds,
                "lines_per_second": len(lines) / seconds,
                "created": summary.created,
                "updated": summary.updated,
            }
        if _count(runtime, IdpSession) != len(lines) // 2:
            raise BenchError("not every session was stored")
        if _count(runtime, ProviderSession) != len(lines) // 2:
            raise BenchError("not every provider session was stored")
        _empty(runtime)
    finally:
        runtime.close()
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = new_parser("session_import", __doc__)
    parser.add_argument("--lines", type=int, default=60_000, help="JSON lines (even)")
    parser.add_argument(
        "--postgres-url",
        default=DEFAULT_POSTGRES,
        help="an existing PostgreSQL database of yours; its registry tables are emptied",
    )
    parser.add_argument("--skip-sqlite", action="store_true")
    add_json_option(parser, DEFAULT_JSON)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    configure_logging("WARNING")
    lines = generate(args.lines)
    info = machine_info({})
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["postgresql"] = measure(args.postgres_url, Path(tmp), lines)
        if not args.skip_sqlite:
            sqlite_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            results["sqlite"] = measure(sqlite_url, Path(tmp), lines)
    rows = []
    for database, runs in results.items():
        for run in runs.values():
            rows.append(
                [
                    database,
                    f"{run['created']:,} created, {run['updated']:,} updated",
                    fmt(run["seconds"], 2),
                    fmt(run["lines_per_second"], 0),
                ]
            )
    print(f"Machine: {machine_line(info, 'SQLAlchemy, psycopg 3')}\n")
    print(f"Command: `{command_line('session_import', argv)}`\n")
    print(f"{len(lines):,} lines: {len(lines) // 2:,} sessions, one provider session each.\n")
    print(render_table(["database", "import", "seconds", "lines/s"], "llrr", rows))
    if args.json:
        document = {
            "machine": info,
            "command": command_line("session_import", argv),
            "lines": len(lines),
            **results,
        }
        write_json(args.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
