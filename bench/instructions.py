"""The fan-out's CPU cost as instructions counted by valgrind: a figure that does not drift.

``LogoutEngine.handle_batch`` is called in this process on batches of ``--batch`` events,
each ending one IdP session with provider sessions at 5 OIDC relying parties (nginx on
127.0.0.1, else the Python server), every delivery signed (``--alg``) and POSTed, on a fresh
PostgreSQL database: the fan-out of ``bench.fanout``'s throughput rows without the broker.
The process runs under ``valgrind --tool=callgrind`` with counting off; it is switched on
(``callgrind_control -i on``) only for the measured batches, after the set-up and a warm-up,
and each thread's count is kept apart. The engine's own work (the stages, their SQL and the
audit writes) runs in the main thread; the sender's event loop, the signing threads and the
lease keeper in the others.

Instructions are not time (a cache miss or a system call counts little), but the same code
on the same inputs counts the same to ~0.5% in most runs (about one in five comes out ~4%
higher, when the threads interleave differently: run three, take the lowest), whatever else
the machine is doing: on a shared machine whose speed drifts by ±20% between minutes, the
figure to compare two versions by.
PostgreSQL's and the relying parties' work is not counted (other processes). Needs Debian's
``valgrind``; a run of 320 events takes about a minute.

Run ``python -m bench.instructions --help``; see ``bench/README.md``.
"""

from __future__ import annotations

import gc
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bench.common import (
    POSTGRES_URL,
    RESULTS,
    BenchError,
    add_json_option,
    command_line,
    exit_on_sigterm,
    logout_event,
    machine_info,
    machine_line,
    new_parser,
    postgres_database,
    postgres_version,
    render_table,
    write_json,
)

DEFAULT_JSON = RESULTS / "instructions.json"
#: Relying parties per event, as in ``bench.fanout``'s throughput rows.
RPS = 5
#: The flag the measured child runs with (under valgrind).
CHILD_FLAG = "--child"
#: How long the child may take to set up, or to run its batches, under valgrind.
STEP_TIMEOUT = 900.0
#: A per-thread file's count: ``totals:`` (its ``summary:`` line may say 0 when counting
#: started after the thread did).
_TOTALS = re.compile(r"^totals:\s*(\d+)", re.MULTILINE)


@dataclass(frozen=True)
class Count:
    """One run's instructions: the engine's thread, every other thread, and in all."""

    alg: str
    events: int
    batch: int
    deliveries: int
    engine: int
    others: int

    @property
    def total(self) -> int:
        return self.engine + self.others


def thread_totals(outputs: Sequence[Path]) -> list[int]:
    """Each thread's instruction count from callgrind's per-thread files (``FILE-01`` is the
    main thread), in thread order."""
    totals = []
    for path in sorted(outputs, key=lambda p: int(p.name.rsplit("-", 1)[1])):
        found = _TOTALS.search(path.read_text(encoding="utf-8", errors="replace"))
        if found is None:
            raise BenchError(f"no instruction total in {path.name}")
        totals.append(int(found.group(1)))
    return totals


def per_delivery(value: int, deliveries: int) -> str:
    """Thousands of instructions per delivery, as the table shows them."""
    return f"{value / deliveries / 1000:,.0f}k"


def markdown_table(counts: Sequence[Count]) -> str:
    rows = [
        [
            count.alg,
            f"{count.events:,}",
            str(count.batch),
            f"{count.deliveries:,}",
            per_delivery(count.engine, count.deliveries),
            per_delivery(count.others, count.deliveries),
            per_delivery(count.total, count.deliveries),
        ]
        for count in counts
    ]
    return render_table(
        [
            "keys",
            "events",
            "batch",
            "deliveries",
            "engine thread, instructions/delivery",
            "other threads",
            "in all",
        ],
        "lrrrrrr",
        rows,
    )


# -- the measured child ----------------------------------------------------------------


def _wait_for(path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise BenchError(f"{path.name} did not appear within {timeout:.0f}s")
        time.sleep(0.05)


def run_child(gate: Path, alg: str, events: int, batch: int, warmup: int) -> int:
    """Set up, warm up, then (between the gate's ``go`` and ``done``) handle ``events``."""
    from bench.fanout import generate_key_file, oidc_settings, seed
    from bench.rp_server import light_rp_server
    from orchestrator import Runtime
    from orchestrator.logging import configure_logging

    configure_logging("WARNING", "json")
    with ExitStack() as stack:
        data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="lo-instr-")))
        key = generate_key_file(data_dir / "keys", "RS256" if alg == "RS256" else "ES256")
        server = stack.enter_context(light_rp_server(RPS))
        url = stack.enter_context(postgres_database(POSTGRES_URL))
        runtime = Runtime.start(oidc_settings(data_dir, url, f"instr{uuid.uuid4().hex[:8]}", key))
        stack.callback(runtime.close)
        sessions = [(f"s-{index:06d}", RPS) for index in range(warmup + events)]
        seed(runtime, server, RPS, sessions)
        engine = runtime.processor(schedule=lambda _delivery, _delay: None)
        work = [(logout_event(session), str(uuid.uuid4())) for session, _ in sessions]
        for first in range(0, warmup, batch):
            engine.handle_batch(work[first : min(first + batch, warmup)])
        # As a worker does once started (workers/process.py): what set-up made is kept out of
        # the collector's scans (a full scan of it took ~0.2 s, counted here but not there).
        gc.collect()
        gc.freeze()
        (gate / "ready").write_text(str(os.getpid()), encoding="utf-8")
        _wait_for(gate / "go", STEP_TIMEOUT)
        timed = work[warmup:]
        for first in range(0, len(timed), batch):
            engine.handle_batch(timed[first : first + batch])
        (gate / "done").write_text("", encoding="utf-8")
        _wait_for(gate / "end", STEP_TIMEOUT)
    return 0


# -- the parent ------------------------------------------------------------------------


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise BenchError(f"{name} is not installed: apt-get install valgrind")
    return found


def _switch(control: str, pid: int, on: bool) -> None:
    subprocess.run(
        [control, "-i", "on" if on else "off", str(pid)],
        check=True,
        capture_output=True,
        timeout=60,
    )


def measure(alg: str, events: int, batch: int, warmup: int) -> Count:
    """One child under callgrind, counting only while it handles the measured events."""
    valgrind, control = _tool("valgrind"), _tool("callgrind_control")
    with tempfile.TemporaryDirectory(prefix="lo-instr-gate-") as folder:
        gate = Path(folder)
        command = [
            valgrind,
            "--tool=callgrind",
            "--instr-atstart=no",
            "--separate-threads=yes",
            f"--callgrind-out-file={gate / 'cg.out'}",
            sys.executable,
            "-m",
            "bench.instructions",
            CHILD_FLAG,
            str(gate),
            alg,
            str(events),
            str(batch),
            str(warmup),
        ]
        log = gate / "child.log"
        with log.open("wb") as output:
            child = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
            try:
                _step(child, gate / "ready", log)
                _switch(control, child.pid, on=True)
                (gate / "go").write_text("", encoding="utf-8")
                _step(child, gate / "done", log)
                _switch(control, child.pid, on=False)
                (gate / "end").write_text("", encoding="utf-8")
                if child.wait(timeout=STEP_TIMEOUT) != 0:
                    raise BenchError(f"the measured process failed:\n{_tail(log)}")
            finally:
                if child.poll() is None:
                    child.kill()
                    child.wait()
        totals = thread_totals(list(gate.glob("cg.out-*")))
    return Count(alg, events, batch, events * RPS, totals[0], sum(totals[1:]))


def _step(child: subprocess.Popen[bytes], path: Path, log: Path) -> None:
    deadline = time.monotonic() + STEP_TIMEOUT
    while not path.exists():
        if child.poll() is not None:
            raise BenchError(f"the measured process exited early:\n{_tail(log)}")
        if time.monotonic() > deadline:
            raise BenchError(f"the measured process did not reach {path.name}:\n{_tail(log)}")
        time.sleep(0.1)


def _tail(log: Path, lines: int = 30) -> str:
    text = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return "\n".join([line for line in text if not line.startswith("==")][-lines:])


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments[:1] == [CHILD_FLAG]:
        gate, alg, events, batch, warmup = arguments[1:6]
        return run_child(Path(gate), alg, int(events), int(batch), int(warmup))
    parser = new_parser("instructions", __doc__)
    parser.add_argument("--events", type=int, default=320, help="measured events (default 320)")
    parser.add_argument("--batch", type=int, default=32, help="events per batch (default 32)")
    parser.add_argument("--warmup", type=int, default=160, help="events before (default 160)")
    parser.add_argument(
        "--algs", default="ES256", help="comma-separated: ES256, RS256 (default ES256)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per algorithm (default 1)")
    add_json_option(parser, DEFAULT_JSON)
    args = parser.parse_args(arguments)
    algs = [alg.strip().upper() for alg in args.algs.split(",") if alg.strip()]
    wrong = sorted(set(algs) - {"ES256", "RS256"})
    if wrong or not algs:
        parser.error(f"--algs: ES256 and/or RS256, not {', '.join(wrong) or 'nothing'}")
    if min(args.events, args.batch, args.repeats) < 1 or args.warmup < 0:
        parser.error("--events, --batch and --repeats must be at least 1, --warmup at least 0")
    exit_on_sigterm()
    info = machine_info({"postgresql": postgres_version(POSTGRES_URL)})
    counts: list[Count] = []
    for alg in algs:
        for _ in range(args.repeats):
            print(f"counting {alg} ...", file=sys.stderr, flush=True)
            counts.append(measure(alg, args.events, args.batch, args.warmup))
    command = command_line("instructions", argv)
    print(f"Machine: {machine_line(info, 'PostgreSQL ' + info['postgresql'])}\n")
    print(f"Command: `{command}`\n")
    print(markdown_table(counts))
    if args.json:
        document: dict[str, Any] = {
            "machine": info,
            "command": command,
            "results": [{**asdict(count), "total": count.total} for count in counts],
        }
        write_json(args.json, document)
    return 0


if __name__ == "__main__":
    sys.exit(main())
