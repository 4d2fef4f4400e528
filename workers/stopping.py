"""Stopping on SIGTERM or SIGINT without a lock in the signal handler.

A Python signal handler runs in the main thread between two bytecodes, wherever that thread
is, and a second signal can run it again inside the first. Setting a
:class:`threading.Event` there takes the event's lock: a second signal arriving while the
first handler holds it (Ctrl-C reaches a supervisor's whole process group, then the
supervisor sends each worker SIGTERM) waited for that lock forever, and the worker never
stopped. Here the handler only writes the signal's number to a pipe (a system call, no
lock); a thread reads it, logs it and sets the event.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import structlog

__all__ = ["STOP_SIGNALS", "stop_on_signals"]

_log = structlog.get_logger("logout.worker")

#: The signals that stop a worker or a supervisor.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


@contextmanager
def stop_on_signals(
    stop: threading.Event, signals: Iterable[signal.Signals] = STOP_SIGNALS
) -> Iterator[None]:
    """Within the block, set ``stop`` when one of ``signals`` arrives (each logged); the
    handlers before it are put back at its end. Enter it in the main thread (only it may
    install signal handlers)."""
    read_end, write_end = os.pipe()
    os.set_blocking(write_end, False)

    def _handler(signum: int, _frame: Any) -> None:
        # The pipe full of signals not read yet: one is enough.
        with suppress(BlockingIOError):
            os.write(write_end, bytes([signum]))

    before: dict[signal.Signals, Any] = {}
    try:
        for number in signals:  # outside the main thread this raises: nothing is left open
            before[number] = signal.signal(number, _handler)
        threading.Thread(
            target=_watch, args=(read_end, stop), name="logout-signals", daemon=True
        ).start()
    except BaseException:
        _restore(before)
        os.close(read_end)
        os.close(write_end)
        raise
    try:
        yield
    finally:
        _restore(before)
        os.close(write_end)  # the watching thread reads the end of the pipe and stops


def _restore(handlers: dict[signal.Signals, Any]) -> None:
    for number, handler in handlers.items():
        signal.signal(number, handler)


def _watch(read_end: int, stop: threading.Event) -> None:
    try:
        while received := os.read(read_end, 64):
            for number in received:
                _log.info("stopping", signal=signal.Signals(number).name)
            stop.set()
    finally:
        os.close(read_end)
