"""The expiry sweeper at scale: how long a sweep takes over a million sessions.

Seeds a fresh PostgreSQL database with N open sessions (``INSERT ... SELECT generate_series``;
most fresh, some past their deadline, some idle), then times, in one run: a sweep with nothing
due (the cost every worker pays every ``expiry_interval``), sweeps that claim the due sessions
and write their events to the outbox in batches (``expiry_batch``) up to
``expiry_max_per_sweep``, and the query plans of the two scans (they must use the partial
indexes, not a sequential scan). The outbox is not relayed: what is measured is the database
work.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text

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
    postgres_database,
    postgres_version,
    render_table,
    write_json,
)
from orchestrator.expiry import ExpirySweeper
from orchestrator.logging import configure_logging
from orchestrator.runtime import Runtime
from orchestrator.session_policy import SessionPolicy
from orchestrator.store import IdpSession, OutboxRow, utcnow

DEFAULT_JSON = REPO / "bench" / "results" / "expiry.json"
ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/test"

_SEED = text(
    """
    INSERT INTO idp_sessions (session_id, user_id, created_at, last_seen, expires_at,
                              remember_me, stay_signed_in, network_binding, geoip_binding)
    SELECT 's-' || g, 'u-' || (g % 200000),
           now() - interval '1 hour',
           CASE WHEN g % :idle_every = 0 THEN now() - interval '3 hours' ELSE now() END,
           CASE WHEN g % :due_every = 0 THEN now() - interval '1 minute'
                ELSE now() + interval '1 day' END,
           false, false, 'no_binding', 'no_binding'
    FROM generate_series(1, :n) AS g
    """
)


def _plans(runtime: Runtime, policy: SessionPolicy) -> list[str]:
    """EXPLAIN of the two scans the sweeper runs (as it runs them, with LIMIT and locking)."""
    now = utcnow()
    idle_since = policy.idle_since(now)
    assert idle_since is not None
    scans = (
        select(IdpSession.session_id)
        .where(
            IdpSession.ended_at.is_(None),
            IdpSession.expiry_claimed_at.is_(None),
            IdpSession.expires_at <= now,
        )
        .order_by(IdpSession.expires_at),
        select(IdpSession.session_id)
        .where(
            IdpSession.ended_at.is_(None),
            IdpSession.expiry_claimed_at.is_(None),
            IdpSession.last_seen < idle_since,
        )
        .order_by(IdpSession.last_seen),
    )
    plans = []
    with runtime.engine.connect() as conn:
        for scan in scans:
            compiled = (
                scan.limit(500)
                .with_for_update(skip_locked=True)
                .compile(runtime.engine, compile_kwargs={"literal_binds": True})
            )
            rows = conn.execute(text(f"EXPLAIN {compiled}")).scalars().all()
            plans.append(" / ".join(str(r).strip() for r in rows))
    return plans


def run(
    sessions: int, due_every: int, idle_every: int, batch: int, per_sweep: int
) -> dict[str, Any]:
    with postgres_database(ADMIN_URL) as url, tempfile.TemporaryDirectory() as tmp:
        settings = bench_settings(Path(tmp), url)
        runtime = Runtime.start(settings, handlers={})
        try:
            began = time.perf_counter()
            with runtime.engine.begin() as conn:
                conn.execute(
                    _SEED, {"n": sessions, "due_every": due_every, "idle_every": idle_every}
                )
                conn.execute(text("ANALYZE idp_sessions"))
            seeded = time.perf_counter() - began
            due = (
                sessions // due_every
                + sessions // idle_every
                - sessions // (due_every * idle_every // _gcd(due_every, idle_every))
            )
            policy = SessionPolicy(idle_timeout=timedelta(hours=1))
            plans = _plans(runtime, policy)
            if any("Seq Scan" in plan for plan in plans):
                raise BenchError(f"a sweeper scan does not use its index: {plans}")
            sweeper = ExpirySweeper(runtime.database, policy, batch=batch, max_per_sweep=per_sweep)
            sweeps: list[tuple[int, float]] = []
            while True:
                began = time.perf_counter()
                report = sweeper.sweep()
                sweeps.append((report.claimed, time.perf_counter() - began))
                if report.claimed == 0:
                    break
            idle_times = []
            for _ in range(5):
                began = time.perf_counter()
                sweeper.sweep()
                idle_times.append(time.perf_counter() - began)
            with runtime.engine.connect() as conn:
                written, distinct = conn.execute(
                    select(func.count(), func.count(OutboxRow.event_id.distinct()))
                ).one()
            if written != due:
                raise BenchError(f"wrote {written} expiries to the outbox, expected {due}")
            if distinct != due:
                raise BenchError("an expiry was written twice")
        finally:
            runtime.close()
    claiming = [(n, t) for n, t in sweeps if n]
    claimed = sum(n for n, _ in claiming)
    claim_time = sum(t for _, t in claiming)
    return {
        "sessions": sessions,
        "due": due,
        "seed_seconds": seeded,
        "sweeps": sweeps,
        "claimed_per_second": claimed / claim_time if claim_time else None,
        "idle_sweep_ms": sorted(t * 1000 for t in idle_times),
        "plans": plans,
        "batch": batch,
        "max_per_sweep": per_sweep,
    }


def _gcd(a: int, b: int) -> int:
    while b:
        a, b = b, a % b
    return a


def main(argv: Sequence[str] | None = None) -> int:
    parser = new_parser("expiry", __doc__)
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument(
        "--due-every", type=int, default=100, help="1 in N sessions past expires_at"
    )
    parser.add_argument("--idle-every", type=int, default=250, help="1 in N sessions idle")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--max-per-sweep", type=int, default=20_000)
    add_json_option(parser, DEFAULT_JSON)
    args = parser.parse_args(argv)
    exit_on_sigterm()
    configure_logging("WARNING")
    info = machine_info({"postgresql": postgres_version(ADMIN_URL)})
    result = run(args.sessions, args.due_every, args.idle_every, args.batch, args.max_per_sweep)
    rows = [
        [
            "seed (INSERT ... SELECT + ANALYZE)",
            fmt(result["sessions"], 0),
            fmt(result["seed_seconds"] * 1000, 0),
            "-",
        ],
    ]
    for index, (published, seconds) in enumerate(result["sweeps"], start=1):
        rows.append(
            [
                f"sweep {index}",
                fmt(published, 0),
                fmt(seconds * 1000, 0),
                fmt(published / seconds, 0) if published else "-",
            ]
        )
    idle = result["idle_sweep_ms"]
    rows.append(["sweep with nothing due (median of 5)", "0", fmt(idle[len(idle) // 2], 1), "-"])
    print(f"Machine: {machine_line(info, 'PostgreSQL ' + info['postgresql'])}\n")
    print(f"Command: `{command_line('expiry', argv)}`\n")
    print(
        f"{result['sessions']:,} open sessions, {result['due']:,} due (absolute or idle); "
        f"batches of {result['batch']}, at most {result['max_per_sweep']:,} per sweep.\n"
    )
    print(render_table(["step", "sessions", "time (ms)", "claimed/s"], "lrrr", rows))
    print("\nPlans (LIMIT 500 FOR UPDATE SKIP LOCKED):")
    for plan in result["plans"]:
        print(f"* {plan}")
    if args.json:
        write_json(args.json, {"machine": info, "command": command_line("expiry", argv), **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
