"""Cooperative batching of the events a worker process's threads hold."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import pytest

from orchestrator import Runtime
from orchestrator.logout import HandleResult, LogoutEngine
from workers import build_broker, declare_actors
from workers.batching import EventBatcher


class _Recorder(LogoutEngine):
    """Stands in for the engine: records batches; 'poison' raises; the first batch waits
    (before its first transaction's end unless ``wait_after_begun``)."""

    def __init__(self, *, wait_after_begun: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.gate = threading.Event()
        self.wait_after_begun = wait_after_begun
        self.began: list[list[str]] = []  # batches past their first transaction, in order
        self._first = True
        self._lock = threading.Lock()

    def handle_batch(
        self, messages: Sequence[tuple[Any, str]], begun: Callable[[], None] | None = None
    ) -> list[HandleResult]:
        ids = [message_id for _, message_id in messages]
        with self._lock:
            self.batches.append(ids)
            first, self._first = self._first, False
        if first and not self.wait_after_begun:
            assert self.gate.wait(5), "the test never opened the gate"
        with self._lock:
            self.began.append(ids)
        if begun is not None:
            begun()
        if first and self.wait_after_begun:
            assert self.gate.wait(5), "the test never opened the gate"
        if any(raw == "poison" for raw, _ in messages):
            raise ValueError("poison")
        return [
            HandleResult.COMPLETED if raw != "dup" else HandleResult.DUPLICATE
            for raw, _ in messages
        ]


def _pile_up(
    batcher: EventBatcher, recorder: _Recorder, pool: ThreadPoolExecutor, raws: Sequence[str]
) -> tuple[Future[HandleResult], list[Future[HandleResult]]]:
    """Submit ``m-0``, wait until its batch has started, then submit ``m-1``... (one per raw)
    and wait until they are all queued behind it."""
    first = pool.submit(batcher.handle, "e", "m-0")
    while not recorder.batches:
        time.sleep(0.001)
    rest = [pool.submit(batcher.handle, raw, f"m-{n}") for n, raw in enumerate(raws, 1)]
    while len(batcher._pending) < len(raws):
        time.sleep(0.001)
    return first, rest


def test_events_that_pile_up_are_handled_together() -> None:
    """While one batch runs, the events that arrive meanwhile form the next batch."""
    recorder = _Recorder()
    batcher = EventBatcher(recorder, max_batch=64, concurrency=1)
    with ThreadPoolExecutor(max_workers=9) as pool:
        first, rest = _pile_up(
            batcher, recorder, pool, ["dup" if n == 3 else "e" for n in range(1, 9)]
        )
        recorder.gate.set()
        assert first.result(5) is HandleResult.COMPLETED
        results = [f.result(5) for f in rest]
    assert results[2] is HandleResult.DUPLICATE
    assert results.count(HandleResult.COMPLETED) == 7
    assert recorder.batches[0] == ["m-0"]
    assert sorted(recorder.batches[1]) == sorted(f"m-{n}" for n in range(1, 9))


def test_one_intake_at_a_time_but_fan_outs_overlap() -> None:
    """With free slots, a batch still waits for the one before it to finish its first
    transaction, taking everything that arrived meanwhile; once that batch is past it (its
    deliveries in flight), the next batch starts without waiting for its end."""
    recorder = _Recorder()
    batcher = EventBatcher(recorder, max_batch=64, concurrency=4)
    with ThreadPoolExecutor(max_workers=9) as pool:
        first, rest = _pile_up(batcher, recorder, pool, ["e"] * 8)
        time.sleep(0.05)  # three slots are free all along: nobody may start meanwhile
        assert recorder.batches == [["m-0"]]
        recorder.gate.set()
        results = [f.result(5) for f in [first, *rest]]
    assert results == [HandleResult.COMPLETED] * 9
    assert recorder.batches[0] == ["m-0"]
    assert sorted(recorder.batches[1]) == sorted(f"m-{n}" for n in range(1, 9))


def test_the_next_batch_starts_while_the_last_one_attempts() -> None:
    """A batch past its first transaction (waiting on its providers) keeps its slot but not
    the intake: an event arriving then is handled at once, not after it."""
    recorder = _Recorder(wait_after_begun=True)
    batcher = EventBatcher(recorder, max_batch=64, concurrency=2)
    with ThreadPoolExecutor(max_workers=2) as pool:
        slow = pool.submit(batcher.handle, "e", "m-slow")
        while not recorder.began:
            time.sleep(0.001)
        assert pool.submit(batcher.handle, "e", "m-next").result(5) is HandleResult.COMPLETED
        assert not slow.done()
        recorder.gate.set()
        assert slow.result(5) is HandleResult.COMPLETED
    assert recorder.batches == [["m-slow"], ["m-next"]]


def test_a_failed_batch_lets_the_intake_go() -> None:
    """A batch that raises before its first transaction ends does not keep the intake."""
    recorder = _Recorder()
    recorder.gate.set()
    batcher = EventBatcher(recorder, max_batch=64, concurrency=1)

    def explode(messages: Sequence[tuple[Any, str]], begun: Any = None) -> list[HandleResult]:
        raise RuntimeError("database gone")

    batcher._processor = type("Exploding", (), {"handle_batch": staticmethod(explode)})()
    with pytest.raises(RuntimeError, match="database gone"):
        batcher.handle("e", "m-1")
    batcher._processor = recorder
    assert batcher.handle("e", "m-2") is HandleResult.COMPLETED


def test_a_failing_event_fails_alone() -> None:
    """When a batch raises, its events are retried one by one; only the bad one fails."""
    recorder = _Recorder()
    recorder.gate.set()
    batcher = EventBatcher(recorder, max_batch=64)
    with ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(batcher.handle, "e", "warm-up").result(5)
    jobs = [("e", "m-1"), ("poison", "m-2"), ("e", "m-3")]
    from workers.batching import _Job

    queued = [_Job(raw, mid) for raw, mid in jobs]
    batcher._run(queued)
    assert queued[0].result.result(1) is HandleResult.COMPLETED
    with pytest.raises(ValueError, match="poison"):
        queued[1].result.result(1)
    assert queued[2].result.result(1) is HandleResult.COMPLETED
    assert recorder.batches[1:] == [["m-1", "m-2", "m-3"], ["m-1"], ["m-2"], ["m-3"]]


def test_batch_size_is_capped() -> None:
    """No batch takes more than max_batch events."""
    recorder = _Recorder()
    batcher = EventBatcher(recorder, max_batch=3, concurrency=1)
    with ThreadPoolExecutor(max_workers=8) as pool:
        first, rest = _pile_up(batcher, recorder, pool, ["e"] * 7)
        recorder.gate.set()
        for future in [first, *rest]:
            assert future.result(5) is HandleResult.COMPLETED
    assert max(len(batch) for batch in recorder.batches) <= 3
    assert sum(len(batch) for batch in recorder.batches) == 8


def test_retry_delays_are_rounded_up_to_the_millisecond(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry is scheduled no sooner than asked, even where float arithmetic truncates."""
    sent: list[int] = []
    broker = build_broker(runtime.settings)
    try:
        actors = declare_actors(broker, runtime)
        monkeypatch.setattr(
            actors.deliver, "send_with_options", lambda *, args, delay: sent.append(delay)
        )
        for seconds in (1.005, 7.0, 0.0001, 0.0):
            actors.schedule("d-1", seconds)
    finally:
        broker.close()
    assert sent == [1005, 7000, 1, 0]
