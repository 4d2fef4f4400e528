"""Discovery at scale: logout of one session among 10 million provider sessions (PostgreSQL).

Fills a database of its own (created on the ``--postgres`` server, dropped afterwards) with
``--small`` and then ``--large`` provider sessions (defaults 10,000 and 10,000,000), spread as
logins are: each IdP session has 1 to 7 provider sessions (4 on average) at 40 providers, each
user two IdP sessions, and a quarter of the sessions ended long ago by an earlier logout (so
``ended_by_event`` is filled as in a database that has served for a while). Rows are written by
the server itself (``INSERT ... SELECT generate_series``, foreign keys trusted while loading:
the rows are consistent by construction), then ``VACUUM (ANALYZE)``.

At each size it logs out ``--runs`` open sessions picked at random (after ``--warmup`` others),
one ``logout.user`` event each, through the engine's public entry point,
``Runtime.processor(...).handle(event, message_id)``; a cursor listener on the engine times
every statement the engine sends, as it sends it. *Discovery* is what it sends to
``provider_sessions``: ending the session's open provider sessions (``UPDATE``) and reading
back the ones the event ended (``SELECT``), summed per logout. Reported: p50 and p99 of
discovery, of each of its statements and of the whole ``handle()``, the ratio large / small of
each, and ``EXPLAIN`` of the discovery statements with the parameters of a measured logout
(an index scan is required, or the run fails).
"""

from __future__ import annotations

import math
import random
import re
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, event, text
from sqlalchemy.engine import make_url

from bench.common import (
    POSTGRES_URL,
    REPO,
    BenchError,
    add_json_option,
    bench_settings,
    command_line,
    exit_on_sigterm,
    fmt,
    logout_event,
    machine_info,
    machine_line,
    new_parser,
    percentile,
    postgres_database,
    postgres_version,
    render_table,
    write_json,
)
from orchestrator.logging import configure_logging
from orchestrator.logout import HandleResult
from orchestrator.runtime import Runtime

__all__ = [
    "LINKS_PER_SESSION",
    "PROVIDERS",
    "Timings",
    "main",
    "open_sessions",
    "plan_uses_index",
    "ratios",
    "sessions_for",
    "statement_label",
    "summary",
]

DEFAULT_JSON = REPO / "bench" / "results" / "discovery.json"
#: Providers the provider sessions are spread over.
PROVIDERS = 40
#: Provider sessions per IdP session, on average (1 to 7).
LINKS_PER_SESSION = 4
#: The table whose statements are discovery.
DISCOVERY_TABLE = "provider_sessions"
#: The statements of a logout that are discovery, by :func:`statement_label`.
_DISCOVERY = {f"UPDATE {DISCOVERY_TABLE}", f"SELECT {DISCOVERY_TABLE}"}
#: IdP sessions per loading transaction (about 1,000,000 provider sessions).
_LOAD_CHUNK = 250_000

_PROVIDER_ROWS = text(
    """
    INSERT INTO providers (name, protocol, enabled, full_logout_on_rp_initiated, settings,
                           updated_at)
    SELECT 'rp-' || lpad(p::text, 2, '0'), 'bench', true, false, '{}', now()
    FROM generate_series(0, CAST(:providers AS integer) - 1) AS p
    """
)
# Session g: user g / 2 (two sessions each); one in four ended an hour ago by an event of
# its own (the md5 of its number, as a UUID).
_SESSION_ROWS = text(
    """
    INSERT INTO idp_sessions (session_id, user_id, created_at, last_seen, expires_at, ip,
                              ended_at, end_reason, ended_by_event, remember_me,
                              stay_signed_in, network_binding, geoip_binding)
    SELECT 's-' || lpad(g::text, 9, '0'), 'u-' || (g / 2),
           now() - interval '2 hours', now() - interval '5 minutes', now() + interval '1 day',
           '10.' || (g / 65536 % 256) || '.' || (g / 256 % 256) || '.' || (g % 256),
           CASE WHEN g % 4 = 0 THEN now() - interval '1 hour' END,
           CASE WHEN g % 4 = 0 THEN 'logout.user' END,
           CASE WHEN g % 4 = 0 THEN md5(g::text)::uuid::text END,
           false, false, 'no_binding', 'no_binding'
    FROM generate_series(CAST(:first AS integer), CAST(:last AS integer)) AS g
    """
)


@dataclass
class Timings:
    """Seconds per statement label, per logout, and of each whole ``handle()``."""

    statements: dict[str, list[float]] = field(default_factory=lambda: defaultdict(list))
    discovery: list[float] = field(default_factory=list)
    handle: list[float] = field(default_factory=list)


def statement_label(sql: str) -> str:
    """``UPDATE provider_sessions``, ``SELECT provider_sessions`` ...: the statement's verb and
    the first table it names (after ``FROM``, ``INTO`` or ``UPDATE``)."""
    words = sql.split(None, 1)
    verb = words[0].upper() if words else ""
    pattern = r"\bUPDATE\s+(\w+)" if verb == "UPDATE" else r"\b(?:FROM|INTO)\s+(\w+)"
    found = re.search(pattern, sql, re.IGNORECASE)
    return f"{verb} {found[1] if found else '?'}"


def sessions_for(links: int) -> int:
    """IdP sessions to generate for ``links`` provider sessions (a few have none)."""
    return math.ceil(links / LINKS_PER_SESSION) + 7


def open_sessions(links: int) -> int:
    """How many of the IdP sessions made for ``links`` provider sessions are open (3 in 4)."""
    sessions = sessions_for(links)
    return sessions - sessions // 4


def summary(seconds: Sequence[float]) -> dict[str, float]:
    """p50 and p99 (nearest rank) in milliseconds, and how many values."""
    ordered = sorted(seconds)
    return {
        "p50_ms": percentile(ordered, 0.50) * 1000,
        "p99_ms": percentile(ordered, 0.99) * 1000,
        "runs": len(ordered),
    }


def plan_uses_index(plan: Sequence[str], table: str) -> bool:
    """Whether an ``EXPLAIN`` reads ``table`` through an index and never sequentially."""
    lines = " / ".join(plan)
    if re.search(rf"Seq Scan on {table}\b", lines):
        return False
    index = rf"(?:Index (?:Only )?Scan (?:Backward )?using \w+|Bitmap Heap Scan) on {table}\b"
    return re.search(index, lines) is not None


# -- loading -----------------------------------------------------------------------------


#: The identifiers of each provider session, as the OIDC handler reads them (``sid``, ``sub``).
LINK_IDENTIFIERS = "json_build_object('sid', md5('sid' || g || '-' || j), 'sub', 'u-' || (g / 2))"

#: Provider sessions of sessions ``first..last``: 1 to 7 each at distinct providers, the first
#: ``:limit`` of them; ended with their session; their identifiers in the one JSON column.
LINK_ROWS = text(
    f"""
    INSERT INTO provider_sessions (session_id, provider, created_at, ended_at, ended_by_event,
                                   identifiers)
    SELECT 's-' || lpad(g::text, 9, '0'),
           'rp-' || lpad(((g * 31 + j) % k.providers)::text, 2, '0'),
           now() - interval '2 hours',
           CASE WHEN g % 4 = 0 THEN now() - interval '1 hour' END,
           CASE WHEN g % 4 = 0 THEN md5(g::text)::uuid::text END,
           {LINK_IDENTIFIERS}
    FROM (SELECT CAST(:first AS integer) AS first, CAST(:last AS integer) AS last,
                 CAST(:providers AS integer) AS providers) AS k,
         generate_series(k.first, k.last) AS g,
         generate_series(1, 1 + (g::bigint * 7919) % 7) AS j
    LIMIT CAST(:limit AS bigint)
    """  # noqa: S608 - our own column names
)


def _count_links(conn: Connection) -> int:
    return int(conn.scalar(text("SELECT count(*) FROM provider_sessions")) or 0)


def fill(engine: Engine, links: int, sessions_before: int) -> tuple[int, float]:
    """Add IdP sessions after ``sessions_before`` until there are ``links`` provider sessions;
    returns the IdP sessions there are now and the seconds it took (``VACUUM`` included)."""
    began = time.perf_counter()
    with engine.connect() as conn:
        loaded = _count_links(conn)
    last = sessions_before
    while loaded < links:
        first = last + 1
        last += min(_LOAD_CHUNK, sessions_for(links - loaded))
        with engine.begin() as conn:
            conn.execute(text("SET LOCAL session_replication_role = replica"))  # trust the FKs
            bounds = {"first": first, "last": last}
            conn.execute(_SESSION_ROWS, bounds)
            left = {"providers": PROVIDERS, "limit": links - loaded}
            loaded += conn.execute(LINK_ROWS, {**bounds, **left}).rowcount
        print(f"  sessions {first:,}..{last:,} loaded", file=sys.stderr)
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(text("VACUUM (ANALYZE) idp_sessions"))
        conn.execute(text(f"VACUUM (ANALYZE) {DISCOVERY_TABLE}"))
        conn.execute(text("ANALYZE providers"))
        if _count_links(conn) != links:
            raise BenchError(f"loaded {_count_links(conn)} provider sessions, not {links}")
    return last, time.perf_counter() - began


# -- measuring ---------------------------------------------------------------------------


@contextmanager
def _timed_statements(engine: Engine) -> Iterator[list[tuple[str, float, str, Any]]]:
    """Every statement the engine sends meanwhile: (label, seconds, SQL, parameters)."""
    sent: list[tuple[str, float, str, Any]] = []

    def before(_conn: Any, _cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        context._bench_began = time.perf_counter()

    def after(_conn: Any, _cursor: Any, sql: str, params: Any, context: Any, many: bool) -> None:
        seconds = time.perf_counter() - context._bench_began
        sent.append((statement_label(sql), seconds, sql, params))

    event.listen(engine, "before_cursor_execute", before)
    event.listen(engine, "after_cursor_execute", after)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", before)
        event.remove(engine, "after_cursor_execute", after)


def _no_schedule(_delivery_id: str, _delay: float) -> None:
    raise BenchError("a delivery was scheduled for retry; deliveries must end skipped")


def _targets(
    conn: Connection, sessions: int, count: int, rng: random.Random, seen: set[int]
) -> list[str]:
    """``count`` open sessions among the first ``sessions``, at random, that have provider
    sessions and are not in ``seen`` (logged out before), which they are added to."""
    picked: list[str] = []
    while len(picked) < count:
        g = rng.randint(1, sessions)
        if g % 4 == 0 or g in seen:
            continue
        seen.add(g)
        session_id = f"s-{g:09d}"
        if conn.scalar(
            text(f"SELECT 1 FROM {DISCOVERY_TABLE} WHERE session_id = :s LIMIT 1"),  # noqa: S608
            {"s": session_id},
        ):
            picked.append(session_id)
    return picked


def measure(
    runtime: Runtime, sessions: int, runs: int, warmup: int, pick: tuple[random.Random, set[int]]
) -> tuple[Timings, list[tuple[str, str, Any]]]:
    """Log out ``warmup`` then ``runs`` sessions one event at a time (``pick``: the random
    generator, the sessions logged out before); the timings of the runs and the discovery
    statements (label, SQL, parameters) of the last one."""
    with runtime.engine.connect() as conn:
        targets = _targets(conn, sessions, warmup + runs, *pick)
    processor = runtime.processor(schedule=_no_schedule)
    timings = Timings()
    last: list[tuple[str, str, Any]] = []
    with _timed_statements(runtime.engine) as sent:
        for index, session_id in enumerate(targets):
            sent.clear()
            began = time.perf_counter()
            result = processor.handle(logout_event(session_id), str(uuid.uuid4()))
            seconds = time.perf_counter() - began
            if result is not HandleResult.COMPLETED:
                raise BenchError(f"the logout of {session_id} ended {result}")
            discovery = [s for s in sent if s[0].endswith(" " + DISCOVERY_TABLE)]
            if {s[0] for s in discovery} != _DISCOVERY:
                raise BenchError(f"no discovery statements seen: {[s[0] for s in sent]}")
            if index < warmup:
                continue
            timings.handle.append(seconds)
            timings.discovery.append(sum(s[1] for s in discovery))
            for label, spent, _, _ in discovery:
                timings.statements[label].append(spent)
            last = [(label, sql, params) for label, _, sql, params in discovery]
    return timings, last


def explain(engine: Engine, statements: Sequence[tuple[str, str, Any]]) -> dict[str, list[str]]:
    """``EXPLAIN`` of each statement with its parameters (the first set of an executemany)."""
    plans: dict[str, list[str]] = {}
    with engine.connect() as conn:
        for label, sql, params in statements:
            first = params[0] if isinstance(params, list | tuple) and params else params
            rows = conn.exec_driver_sql(f"EXPLAIN {sql}", first).scalars().all()
            plans[label] = [str(row) for row in rows]
            if not plan_uses_index(plans[label], DISCOVERY_TABLE):
                raise BenchError(f"{label} does not use an index: {plans[label]}")
    return plans


def _database_size(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.scalar(text("SELECT pg_database_size(current_database())")) or 0)


def run(admin_url: str, sizes: Sequence[int], runs: int, warmup: int, seed: int) -> dict[str, Any]:
    """Fill to each size in turn and measure there; the figures per size."""
    pick = (random.Random(seed), set[int]())
    results: list[dict[str, Any]] = []
    with postgres_database(admin_url) as url, tempfile.TemporaryDirectory() as tmp:
        runtime = Runtime.start(bench_settings(Path(tmp), url), handlers={})
        try:
            with runtime.engine.begin() as conn:
                conn.execute(_PROVIDER_ROWS, {"providers": PROVIDERS})
            sessions = 0
            for links in sizes:
                print(f"filling to {links:,} provider sessions", file=sys.stderr)
                sessions, seconds = fill(runtime.engine, links, sessions)
                print(f"measuring {warmup:,} + {runs:,} logouts", file=sys.stderr)
                timings, last = measure(runtime, sessions, runs, warmup, pick)
                results.append(
                    {
                        "provider_sessions": links,
                        "idp_sessions": sessions,
                        "fill_seconds": seconds,
                        "database_bytes": _database_size(runtime.engine),
                        "discovery": summary(timings.discovery),
                        "statements": {k: summary(v) for k, v in timings.statements.items()},
                        "handle": summary(timings.handle),
                        "plans": explain(runtime.engine, last),
                    }
                )
        finally:
            runtime.close()
    return {"sizes": results, "ratios": ratios(results[0], results[-1])}


def ratios(small: Mapping[str, Any], large: Mapping[str, Any]) -> dict[str, float]:
    """p99 at the largest size over p99 at the smallest, per measure."""
    pairs = {
        "discovery": (small["discovery"], large["discovery"]),
        "handle": (small["handle"], large["handle"]),
        **{k: (v, large["statements"][k]) for k, v in small["statements"].items()},
    }
    return {name: b["p99_ms"] / a["p99_ms"] for name, (a, b) in pairs.items()}


def _table(result: Mapping[str, Any]) -> str:
    """p50 / p99 per measure and size, and the p99 ratio of the largest size to the smallest."""
    sizes = result["sizes"]

    def pick(size: Mapping[str, Any], key: str) -> Mapping[str, float]:
        found: Mapping[str, float] = size[key] if key in size else size["statements"][key]
        return found

    measures = [("discovery, both statements", "discovery")]
    measures += [(f"`{key}`", key) for key in sorted(sizes[0]["statements"])]
    measures += [("whole `handle()`", "handle")]
    rows = [
        [
            name,
            *(f"{fmt(pick(s, key)['p50_ms'])} / {fmt(pick(s, key)['p99_ms'])}" for s in sizes),
            fmt(result["ratios"][key]),
        ]
        for name, key in measures
    ]
    columns = ["measure", *(f"p50 / p99 ms, {s['provider_sessions']:,}" for s in sizes)]
    return render_table([*columns, "p99 ratio"], "l" + "r" * (len(sizes) + 1), rows)


def main(argv: Sequence[str] | None = None) -> int:
    parser = new_parser("discovery", __doc__)
    parser.add_argument(
        "--postgres",
        metavar="URL",
        default=POSTGRES_URL,
        help="the server to create the benchmark's own database on, as a user that may create "
        "and drop databases (default: LOGOUT_BENCH_POSTGRES_URL or %(default)s)",
    )
    parser.add_argument("--small", type=int, default=10_000, help="provider sessions, first")
    parser.add_argument("--large", type=int, default=10_000_000, help="provider sessions, then")
    parser.add_argument("--runs", type=int, default=1000, help="logouts measured per size")
    parser.add_argument("--warmup", type=int, default=100, help="logouts before, untimed")
    parser.add_argument("--seed", type=int, default=13, help="picks the sessions logged out")
    add_json_option(parser, DEFAULT_JSON)
    args = parser.parse_args(argv)
    if not 0 < args.small < args.large:
        parser.error("--small and --large: 0 < small < large")
    if open_sessions(args.small) < (args.runs + args.warmup) * 5 // 4:
        parser.error("--small: too few open sessions for --runs + --warmup logouts; raise it")
    exit_on_sigterm()
    configure_logging("WARNING")
    info = machine_info({"postgresql": postgres_version(args.postgres)})
    result = run(args.postgres, [args.small, args.large], args.runs, args.warmup, args.seed)
    # The URL as given, but never its password.
    shown = make_url(args.postgres).render_as_string(hide_password=True)
    command = command_line("discovery", argv).replace(args.postgres, shown)
    print(f"Machine: {machine_line(info, 'PostgreSQL ' + info['postgresql'])}\n")
    print(f"Command: `{command}`\n")
    for size in result["sizes"]:
        print(
            f"* {size['provider_sessions']:,} provider sessions ({size['idp_sessions']:,} IdP "
            f"sessions, database {size['database_bytes'] / 2**30:.2f} GiB), filled in "
            f"{size['fill_seconds']:.0f} s"
        )
    print(f"\n{args.runs:,} logouts per size after {args.warmup:,} warm-up ones.\n")
    print(_table(result))
    print("\nPlans at the largest size (EXPLAIN with a measured logout's parameters):")
    for label, plan in result["sizes"][-1]["plans"].items():
        print(f"* {label}: {' / '.join(line.strip() for line in plan)}")
    if args.json:
        write_json(args.json, {"machine": info, "command": command, **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
