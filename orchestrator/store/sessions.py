"""ORM sessions on an engine, for the commands and workers that write."""

from __future__ import annotations

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

__all__ = ["SessionFactory", "make_session_factory"]

SessionFactory = sessionmaker[Session]


def make_session_factory(engine: Engine) -> SessionFactory:
    """Sessions that keep loaded objects usable after commit."""
    return sessionmaker(engine, expire_on_commit=False)
