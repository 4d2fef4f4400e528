"""How long ``logout-orchestrator`` takes to answer: each command run N times, in subprocesses.

    python -m bench.cli_startup                    # 15 runs per command; a Markdown table
    python -m bench.cli_startup --runs 30 --json   # ... and bench/results/cli_startup.json
    python -m bench.cli_startup --source DIR --label before --json bench/results/x.json
    python -m bench.cli_startup --postgres postgresql://user@host/db   # + audit list on it

Wall time runs from spawning the process until it exits; CPU time is the child's user + system
time. The commands run on embedded settings (SQLite in a temporary data directory, migrated
once beforehand, ``memory://`` broker), so no server is involved; ``--postgres URL`` adds
``audit list`` on that PostgreSQL database (its schema is upgraded first; nothing else is
written). ``--source DIR`` runs another checkout of the code (``PYTHONPATH=DIR``, same
virtualenv), e.g. the code before a change. Bytecode caches are written
(``PYTHONDONTWRITEBYTECODE`` is unset) and one untimed run per command warms them, as on an
installed system. The share of the machine's CPU other processes used during the run is
reported, as the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    fmt,
    machine_cpu,
    machine_info,
    machine_line,
    percentile,
    render_table,
)

COMMANDS: tuple[tuple[str, ...], ...] = (
    ("--help",),
    ("--version",),
    ("config", "show"),
    ("audit", "list"),
    ("keys", "jwks"),
)
#: Floors for comparison, run as ``python -c CODE``: the interpreter, the libraries a command
#: that reads the settings loads (click, pydantic), and those ``audit list`` adds (SQLAlchemy
#: Core; psycopg on PostgreSQL). Like the commands, they skip the interpreter's teardown.
REFERENCES: tuple[str, ...] = (
    "import os; os._exit(0)",
    "import click, pydantic.main, os; os._exit(0)",
    "import click, pydantic.main, sqlalchemy, os; os._exit(0)",
    "import click, pydantic.main, sqlalchemy, psycopg, os; os._exit(0)",
)
#: The PostgreSQL variant's label.
ON_POSTGRES = "audit list (PostgreSQL)"
RESULTS = Path(__file__).parent / "results"


def _cli() -> Path:
    return Path(sys.executable).parent / "logout-orchestrator"


def _env(data_dir: Path, source: Path | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOGOUT_")}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.update(
        LOGOUT_DATA_DIR=str(data_dir),
        LOGOUT_BROKER_URL="memory://",
        LOGOUT_LOG_LEVEL="WARNING",
    )
    if source is not None:
        env["PYTHONPATH"] = str(source)
    return env


def _argv(args: tuple[str, ...]) -> list[str]:
    if args[0] == "python -c":
        return [sys.executable, "-c", *args[1:]]
    if args[0] == ON_POSTGRES:
        return [str(_cli()), "audit", "list"]
    return [str(_cli()), *args]


def _works(args: tuple[str, ...], env: dict[str, str]) -> bool:
    """One untimed run; False when this version does not have the command (e.g. --version)."""
    result = subprocess.run(_argv(args), env=env, capture_output=True, check=False)
    return result.returncode == 0


def _run(args: tuple[str, ...], env: dict[str, str]) -> tuple[float, float]:
    """One run: (wall seconds, CPU seconds of the child)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(_argv(args), env=env, capture_output=True, check=False, timeout=120)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(args)} exited {result.returncode}: {result.stderr.decode()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _label(args: tuple[str, ...]) -> str:
    return f"python -c '{args[1]}'" if args[0] == "python -c" else " ".join(args)


def measure(
    runs: int, source: Path | None, postgres: str | None
) -> tuple[list[dict[str, Any]], float]:
    """Every command ``runs`` times (after one warm-up); the rounds interleave the commands.

    Also returns the share of the machine's CPU that other processes used meanwhile.
    """
    with tempfile.TemporaryDirectory(prefix="lo-cli-bench-") as tmp:
        env = _env(Path(tmp), source)
        envs: dict[tuple[str, ...], dict[str, str]] = {}
        _run(("db", "upgrade"), env)
        every = [*COMMANDS, *(("python -c", code) for code in REFERENCES)]
        if postgres is not None:
            envs[(ON_POSTGRES,)] = {**env, "LOGOUT_DATABASE_URL": postgres}
            _run(("db", "upgrade"), envs[(ON_POSTGRES,)])
            every.insert(len(COMMANDS), (ON_POSTGRES,))
        # Warm-up: bytecode caches, the generated OIDC key.
        commands = [args for args in every if _works(args, envs.get(args, env))]
        times: dict[tuple[str, ...], list[tuple[float, float]]] = {a: [] for a in commands}
        busy, total = machine_cpu()
        own = _own_cpu()
        for _ in range(runs):
            for args in commands:
                times[args].append(_run(args, envs.get(args, env)))
        busy, total = machine_cpu()[0] - busy, machine_cpu()[1] - total
        ours = _own_cpu() - own + sum(c for samples in times.values() for _, c in samples)
    others = max(0.0, busy - ours) / total if total > 0 else 0.0
    rows = []
    for args, samples in times.items():
        walls = sorted(w for w, _ in samples)
        rows.append(
            {
                "command": _label(args),
                "runs": runs,
                "wall_min_ms": walls[0] * 1000,
                "wall_median_ms": statistics.median(walls) * 1000,
                "wall_p90_ms": percentile(walls, 0.9) * 1000,
                "cpu_median_ms": statistics.median(c for _, c in samples) * 1000,
            }
        )
    return rows, others


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="timed runs per command")
    parser.add_argument("--source", type=Path, help="run the code of this checkout instead")
    parser.add_argument("--label", default="current", help="names the run in the JSON")
    parser.add_argument(
        "--postgres", metavar="URL", help="also run audit list on this PostgreSQL database"
    )
    parser.add_argument(
        "--json",
        nargs="?",
        const=str(RESULTS / "cli_startup.json"),
        help="write the results as JSON (default bench/results/cli_startup.json)",
    )
    options = parser.parse_args()
    info = machine_info({})
    rows, others = measure(options.runs, options.source, options.postgres)
    info["cpu_used_by_others"] = round(others, 3)
    print(f"{options.label}: {machine_line(info, 'logout-orchestrator CLI')}")
    print(f"other processes used {others:.0%} of the machine's CPU during the run")
    print()
    print(
        render_table(
            ["command", "wall min ms", "wall median ms", "wall p90 ms", "CPU median ms"],
            "lrrrr",
            (
                [
                    f"`{r['command']}`",
                    fmt(r["wall_min_ms"], 0),
                    fmt(r["wall_median_ms"], 0),
                    fmt(r["wall_p90_ms"], 0),
                    fmt(r["cpu_median_ms"], 0),
                ]
                for r in rows
            ),
        )
    )
    if options.json:
        path = Path(options.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(
            json.dumps({"label": options.label, "machine": info, "results": rows}, indent=2) + "\n",
            encoding="utf-8",
        )
        print(f"\nwritten to {path}")


if __name__ == "__main__":
    main()
