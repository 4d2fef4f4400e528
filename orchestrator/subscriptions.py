"""Provider subscriptions: a provider that hears of every ended session of a user (or of
every user) without a provider session of its own, such as an SSF stream that added the
user as a subject.

Discovery stays one rule (a delivery per provider session an event ended): when a logout
ends a session, each subscribed enabled provider without a provider session for it gets one
(:func:`attach`, in the logout's transaction), so it is ended, delivered, retried and audited
like any other.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import Connection, CursorResult, and_, bindparam, delete, or_, select
from sqlalchemy.orm import Session

from orchestrator.store.sql import dialect_name, insert_ignore, insert_ignore_for
from orchestrator.store.tables import PROVIDER_SESSIONS, PROVIDER_SUBSCRIPTIONS, PROVIDERS

__all__ = ["EVERY_USER", "attach", "subscribe", "subscribers", "unsubscribe"]

#: The ``user_id`` of a subscription to every user's sessions.
EVERY_USER = None
_SUBS = PROVIDER_SUBSCRIPTIONS


@cache
def _attach_statement(dialect: str) -> Any:
    """Open a provider session of ``b_session`` at each enabled provider subscribed to
    ``b_user`` or to every user, unless it has one."""
    subscribed = (
        select(bindparam("b_session"), _SUBS.c.provider, bindparam("b_now", type_=_created()))
        .join(PROVIDERS, PROVIDERS.c.name == _SUBS.c.provider)
        .where(
            PROVIDERS.c.enabled.is_(True),
            or_(_SUBS.c.user_id == bindparam("b_user"), _SUBS.c.user_id.is_(None)),
        )
        .distinct()
    )
    return insert_ignore_for(dialect, PROVIDER_SESSIONS, ["session_id", "provider"]).from_select(
        ["session_id", "provider", "created_at"], subscribed, include_defaults=False
    )


def _created() -> Any:
    return PROVIDER_SESSIONS.c.created_at.type


#: The users among ``b_ids`` with a subscription, and None when one is to every user.
_SUBSCRIBED_USERS = (
    select(_SUBS.c.user_id)
    .where(or_(_SUBS.c.user_id.in_(bindparam("b_ids", expanding=True)), _SUBS.c.user_id.is_(None)))
    .distinct()
)


def attach(conn: Connection, ended: Sequence[tuple[str, str]], now: datetime) -> None:
    """Give each subscribed provider a provider session of every ``(session, user)`` in
    ``ended`` it has none of, so ending their provider sessions includes it.

    One query first finds which of the users any subscription covers: the insert runs only
    for their sessions (most logouts concern no subscription, and skip it)."""
    if not ended:
        return
    pairs = list(dict.fromkeys(ended))
    users = sorted({user for _, user in pairs})
    covered = set(conn.scalars(_SUBSCRIBED_USERS, {"b_ids": users}))
    rows = [
        {"b_session": session, "b_user": user, "b_now": now}
        for session, user in pairs
        if EVERY_USER in covered or user in covered
    ]
    if rows:
        conn.execute(_attach_statement(dialect_name(conn)), rows)


def _match(provider: str, user_id: str | None) -> Any:
    who = _SUBS.c.user_id.is_(None) if user_id is None else _SUBS.c.user_id == user_id
    return and_(_SUBS.c.provider == provider, who)


def subscribe(db: Session, provider: str, user_id: str | None, now: datetime) -> bool:
    """Subscribe ``provider`` to ``user_id`` (:data:`EVERY_USER`: all); False when it was.

    One statement that ignores a conflict, so two requests at once add one row: the unique
    ``(provider, user_id)``, or for every user the partial unique index on ``provider``
    (a unique constraint does not compare nulls)."""
    if user_id is None:
        statement = insert_ignore(db, _SUBS, ["provider"], where=_SUBS.c.user_id.is_(None))
    else:
        statement = insert_ignore(db, _SUBS, ["provider", "user_id"])
    values = statement.values(provider=provider, user_id=user_id, created_at=now)
    # The id returned says it was added (an ORM session's rowcount is -1 on PostgreSQL here).
    return db.execute(values.returning(_SUBS.c.id)).first() is not None


def unsubscribe(db: Session, provider: str, user_id: str | None) -> bool:
    """End a subscription; False when there was none."""
    result: CursorResult[Any] = db.execute(delete(_SUBS).where(_match(provider, user_id)))  # type: ignore[assignment]
    return bool(result.rowcount)


def subscribers(db: Session, provider: str) -> list[str | None]:
    """The users ``provider`` is subscribed to (None: every user)."""
    rows = db.execute(select(_SUBS.c.user_id).where(_SUBS.c.provider == provider))
    return [user_id for (user_id,) in rows]
