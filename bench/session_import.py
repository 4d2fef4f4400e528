"""``sessions import`` at scale: JSON lines per second through the session registry.

Generates N lines (N/2 IdP sessions, each followed by one OIDC provider session), loads one
provider, then imports the lines with :meth:`SessionRegistry.import_lines` (what
``logout-orchestrator sessions import`` runs: parsing, validation by the protocol handler,
references, then the writes, all or nothing) into an empty database, then once more over
the same rows (every line an update), ``--repeat`` times (the median is shown). Runs on
PostgreSQL (a database of yours, its registry tables emptied first) and on SQLite (a file in
a temporary folder).
"""

from __future__ import annotations

import json
import statistics
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
    postgres_version,
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
    with runtime.database() as db:
        return int(db.scalar(select(func.count()).select_from(model)) or 0)


def measure(database_url: str, data_dir: Path, lines: list[str], repeat: int) -> dict[str, Any]:
    """``repeat`` times: import ``lines`` into emptied tables, then again (every line an
    update); per kind, every run's seconds and client CPU seconds, and the median."""
    settings = bench_settings(data_dir, database_url, protocols=["oidc"])
    runtime = Runtime.start(settings)
    runs: dict[str, list[dict[str, Any]]] = {"created": [], "updated": []}
    try:
        for _ in range(repeat):
            _empty(runtime)
            runtime.registry.load_providers_file(PROVIDERS, "providers.toml")
            for name, done in runs.items():
                began, cpu = time.perf_counter(), time.process_time()
                summary = runtime.registry.import_lines(lines)
                seconds = time.perf_counter() - began
                expected = (len(lines), 0) if name == "created" else (0, len(lines))
                if (summary.created, summary.updated) != expected:
                    raise BenchError(f"{name}: {summary} instead of {expected}")
                done.append({"seconds": seconds, "client_cpu": time.process_time() - cpu})
            if _count(runtime, IdpSession) != len(lines) // 2:
                raise BenchError("not every session was stored")
            if _count(runtime, ProviderSession) != len(lines) // 2:
                raise BenchError("not every provider session was stored")
        _empty(runtime)
    finally:
        runtime.close()
    result: dict[str, Any] = {}
    for name, done in runs.items():
        seconds = statistics.median(run["seconds"] for run in done)
        result[name] = {
            "runs": done,
            "median_seconds": seconds,
            "median_lines_per_second": len(lines) / seconds,
            "best_lines_per_second": len(lines) / min(run["seconds"] for run in done),
            "median_client_cpu": statistics.median(run["client_cpu"] for run in done),
        }
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = new_parser("session_import", __doc__)
    parser.add_argument("--lines", type=int, default=60_000, help="JSON lines (even)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per database (median)")
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
    info = machine_info({"postgresql": postgres_version(args.postgres_url)})
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        results["postgresql"] = measure(args.postgres_url, Path(tmp), lines, args.repeat)
        if not args.skip_sqlite:
            sqlite_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
            results["sqlite"] = measure(sqlite_url, Path(tmp), lines, args.repeat)
    rows = []
    for database, kinds in results.items():
        for name, run in kinds.items():
            rows.append(
                [
                    database,
                    f"{len(lines):,} {name}",
                    fmt(run["median_seconds"], 2),
                    fmt(run["median_lines_per_second"], 0),
                    fmt(run["best_lines_per_second"], 0),
                    fmt(run["median_client_cpu"], 2),
                ]
            )
    print(f"Machine: {machine_line(info, 'PostgreSQL ' + info['postgresql'])}\n")
    print(f"Command: `{command_line('session_import', argv)}`\n")
    print(
        f"{len(lines):,} lines: {len(lines) // 2:,} sessions, one provider session each; "
        f"median of {args.repeat} runs.\n"
    )
    columns = ["database", "lines", "seconds", "lines/s", "best lines/s", "client CPU s"]
    print(render_table(columns, "llrrrr", rows))
    if args.json:
        document = {
            "machine": info,
            "command": command_line("session_import", argv),
            "lines": len(lines),
            "repeat": args.repeat,
            **results,
        }
        write_json(args.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
