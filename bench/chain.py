"""The audit chain's cost per record: sealing (hash and link) and verifying.

Seeds N audit records with ``write_audit`` (as the fan-out writes them: nothing of the chain),
then measures, on SQLite (a temporary file) and on PostgreSQL (a fresh database
``lo_bench_<hex>``, dropped afterwards): one sealing round that hashes and links the N
records (what every worker does in the background every ``audit_seal_interval``), and
``audit verify`` over them. CPU time of this process (``time.process_time``; PostgreSQL's
own work is not in it) is reported beside wall time: on a shared machine it is the figure
other processes disturb least.
"""

from __future__ import annotations

import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from bench.common import (
    POSTGRES_URL,
    RESULTS,
    add_json_option,
    bench_settings,
    command_line,
    exit_on_sigterm,
    fmt,
    machine_info,
    machine_line,
    new_parser,
    postgres_database,
    postgres_version,
    render_table,
    write_json,
)
from orchestrator import Runtime
from orchestrator.audit import AuditEntry, write_audit
from orchestrator.chain.checking import verify_database
from orchestrator.chain.checkpoints import CheckpointKeys
from orchestrator.chain.sealing import seal
from orchestrator.logging import configure_logging
from schemas import AuditType

DEFAULT_JSON = RESULTS / "chain.json"
_T = TypeVar("_T")


def _timed(call: Callable[[], _T]) -> tuple[_T, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = call()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _entries(count: int) -> list[AuditEntry]:
    """Records like a delivery's outcome: ids, a provider, a small detail."""
    return [
        AuditEntry(
            f"delivery.succeeded:{uuid.uuid4()}",
            AuditType.DELIVERY_SUCCEEDED,
            "succeeded",
            str(uuid.uuid4()),
            "alice",
            f"s-{n}",
            "hr",
            {
                "delivery_id": str(uuid.uuid4()),
                "protocol": "oidc",
                "attempt": 1,
                "status_code": 200,
            },
        )
        for n in range(count)
    ]


def measure(url: str, data_dir: Path, count: int) -> dict[str, Any]:
    """Seed ``count`` records on ``url``, seal them, verify them."""
    runtime = Runtime.start(bench_settings(data_dir, url), handlers={})
    try:
        entries = _entries(count)
        for start in range(0, count, 500):
            with runtime.database.begin() as db:
                write_audit(db, entries[start : start + 500])
        sealed, seal_wall, seal_cpu = _timed(lambda: seal(runtime.engine))
        keys = CheckpointKeys(None, {"keys": []})
        found, verify_wall, verify_cpu = _timed(lambda: verify_database(runtime.engine, keys))
        if sealed != count or found.records != count or found.findings:
            raise RuntimeError(f"sealed {sealed}, verified {found.records}: {found.findings}")
        return {
            "records": count,
            "seal_seconds": seal_wall,
            "seal_cpu_us_per_record": seal_cpu / count * 1e6,
            "verify_seconds": verify_wall,
            "verify_cpu_us_per_record": verify_cpu / count * 1e6,
        }
    finally:
        runtime.close()


@contextmanager
def _backends(admin_url: str) -> Iterator[tuple[Path, dict[str, str]]]:
    with (
        tempfile.TemporaryDirectory(prefix="lo-bench-chain-") as tmp,
        postgres_database(admin_url) as pg_url,
    ):
        yield Path(tmp), {"SQLite": f"sqlite:///{Path(tmp) / 'chain.db'}", "PostgreSQL": pg_url}


def main(argv: Sequence[str] | None = None) -> int:
    parser = new_parser("chain", __doc__)
    parser.add_argument("--records", type=int, default=20_000)
    add_json_option(parser, DEFAULT_JSON)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    configure_logging("WARNING")
    info = machine_info({"postgresql": postgres_version(POSTGRES_URL)})
    results = {}
    with _backends(POSTGRES_URL) as (tmp, urls):
        for backend, url in urls.items():
            (tmp / backend).mkdir()
            results[backend] = measure(url, tmp / backend, args.records)
    figures = ("records", "seal_seconds", "seal_cpu_us_per_record", "verify_seconds",
               "verify_cpu_us_per_record")  # fmt: skip
    rows = [
        [backend, *(fmt(r[name], 2 if name.endswith("seconds") else 0) for name in figures)]
        for backend, r in results.items()
    ]
    print(f"Machine: {machine_line(info, 'PostgreSQL ' + info['postgresql'])}\n")
    print(f"Command: `{command_line('chain', argv)}`\n")
    columns = ["backend", "records", "seal (s)",
               "seal (µs CPU/record)", "verify (s)", "verify (µs CPU/record)"]  # fmt: skip
    print(render_table(columns, "lrrrrr", rows))
    if args.json:
        write_json(args.json, {"machine": info, "command": command_line("chain", argv),
                               "results": results})  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
