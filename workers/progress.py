"""How far a long command got: a rich bar on a terminal, nothing when redirected; the summary.

``sessions import`` and ``publish`` hand a :class:`ProgressBar` to the work as its
``progress(stage, done, total)`` callback (the registry and the validation never import rich).
On a terminal (standard error is a TTY) each stage gets a bar, removed when the command ends;
otherwise nothing is drawn. The summary line goes to standard output either way.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import Self, TextIO, TypeVar, overload

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from orchestrator.registry import ImportSummary

__all__ = [
    "MAX_LISTED_ON_TERMINAL",
    "ProgressBar",
    "Reported",
    "import_summary",
    "publish_summary",
]

_T = TypeVar("_T")
#: ``publish`` lists each event it published, unless more than this many on a terminal.
MAX_LISTED_ON_TERMINAL = 100
#: Items between two reports of a :class:`Reported` sequence.
_REPORT_EVERY = 500


class ProgressBar:
    """``progress(stage, done, total)``: one bar per stage on a terminal, else nothing.

    Use it as a context manager around the work; :attr:`elapsed` is the time since entering.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        console = Console(file=stream or sys.stderr, highlight=False)
        self._bar: Progress | None = None
        if console.is_terminal:
            self._bar = Progress(
                TextColumn("{task.description:<10}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
        self._tasks: dict[str, TaskID] = {}
        self._started = time.perf_counter()

    @property
    def shown(self) -> bool:
        """Whether bars are drawn (standard error is a terminal)."""
        return self._bar is not None

    @property
    def elapsed(self) -> float:
        """Seconds since the work started."""
        return time.perf_counter() - self._started

    def __enter__(self) -> Self:
        self._started = time.perf_counter()
        if self._bar is not None:
            self._bar.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self._bar is not None:
            self._bar.stop()

    def __call__(self, stage: str, done: int, total: int) -> None:
        if self._bar is None:
            return
        task = self._tasks.get(stage)
        if task is None:
            task = self._tasks[stage] = self._bar.add_task(stage, total=total)
        self._bar.update(task, completed=done, total=total)


class Reported(Sequence[_T]):
    """``items``, telling ``progress(stage, done, total)`` how far they have been iterated
    (a publisher enqueues them one by one)."""

    def __init__(
        self, items: Sequence[_T], progress: Callable[[str, int, int], None], stage: str
    ) -> None:
        self._items = items
        self._progress = progress
        self._stage = stage

    def __len__(self) -> int:
        return len(self._items)

    @overload
    def __getitem__(self, index: int) -> _T: ...

    @overload
    def __getitem__(self, index: slice) -> Sequence[_T]: ...

    def __getitem__(self, index: int | slice) -> _T | Sequence[_T]:
        return self._items[index]

    def __iter__(self) -> Iterator[_T]:
        total = len(self._items)
        self._progress(self._stage, 0, total)
        for done, item in enumerate(self._items, start=1):
            yield item
            if done % _REPORT_EVERY == 0 or done == total:
                self._progress(self._stage, done, total)


def import_summary(summary: ImportSummary, seconds: float) -> str:
    """``sessions: 30,000 created, 0 updated; provider sessions: 30,000 created, 0 updated;
    in 1.4 s``."""
    return (
        f"sessions: {summary.sessions_created:,} created, {summary.sessions_updated:,} updated; "
        f"provider sessions: {summary.provider_sessions_created:,} created, "
        f"{summary.provider_sessions_updated:,} updated; in {seconds:.1f} s"
    )


def publish_summary(events: int, seconds: float) -> str:
    """``published 40,000 events in 3.2 s``."""
    return f"published {events:,} event{'s' if events != 1 else ''} in {seconds:.1f} s"
