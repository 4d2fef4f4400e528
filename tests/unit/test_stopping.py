"""`stop_on_signals`: SIGTERM and SIGINT set the stop event from a thread of its own, never
inside the signal handler, where a second signal could wait forever for the event's lock."""

from __future__ import annotations

import signal
import threading

import pytest

from workers.stopping import stop_on_signals


class _Recording(threading.Event):
    """An event that remembers the threads that set it."""

    def __init__(self) -> None:
        super().__init__()
        self.setters: list[threading.Thread] = []

    def set(self) -> None:
        self.setters.append(threading.current_thread())
        super().set()


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_sets_the_event_outside_the_handler(number: signal.Signals) -> None:
    stop = _Recording()
    with stop_on_signals(stop):
        signal.raise_signal(number)  # the handler runs in this (the main) thread
        assert stop.wait(5)
    assert stop.setters
    assert threading.main_thread() not in stop.setters


def test_signals_in_a_row_while_the_event_is_being_set_stop_once() -> None:
    """Ctrl-C reaches a supervisor's whole process group, then the supervisor sends each
    worker SIGTERM: the second handler runs inside whatever the main thread is doing, the
    event's own ``set`` included, and must not wait for anything."""

    class _SignalledMidSet(threading.Event):
        """Holds a lock of its own while it is set, as ``Event.set`` holds the event's."""

        def __init__(self) -> None:
            super().__init__()
            self.setting = threading.Lock()

        def set(self) -> None:
            with self.setting:  # a handler setting the event here waited for it forever
                if threading.current_thread() is threading.main_thread():
                    signal.raise_signal(signal.SIGTERM)  # handled here, in this thread
                    signal.raise_signal(signal.SIGINT)
                super().set()

    stop = _SignalledMidSet()
    with stop_on_signals(stop):
        stop.set()  # in the main thread, which handles the signals while it holds the lock
        assert stop.is_set()


def test_the_handlers_before_are_put_back() -> None:
    before = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    with stop_on_signals(threading.Event()):
        assert signal.getsignal(signal.SIGTERM) not in before
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == before


def test_outside_the_main_thread_it_refuses_and_leaves_nothing_open() -> None:
    import os

    def _count() -> int:
        return len(os.listdir("/proc/self/fd"))

    def _watchers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "logout-signals"]

    for earlier in _watchers():  # the tests before: each ends once its pipe is closed
        earlier.join(5)
    caught: list[BaseException] = []
    before = _count()

    def _try() -> None:
        try:
            with stop_on_signals(threading.Event()):
                pass
        except ValueError as exc:
            caught.append(exc)

    worker = threading.Thread(target=_try)
    worker.start()
    worker.join()
    assert len(caught) == 1
    assert (_count(), _watchers()) == (before, [])
