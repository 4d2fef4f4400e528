"""Broker set-up, actors, middleware and the command line."""

from typing import TYPE_CHECKING

from schemas._lazy import lazy_exports

if TYPE_CHECKING:
    from workers.actors import Actors, declare_actors
    from workers.broker import build_broker, is_in_process
    from workers.middleware import LogContext
    from workers.process import (
        embedded,
        run_worker,
        serve,
    )

__all__ = [
    "Actors",
    "LogContext",
    "build_broker",
    "declare_actors",
    "embedded",
    "is_in_process",
    "run_worker",
    "serve",
]

__getattr__, __dir__ = lazy_exports(__name__)
