"""Signed checkpoints: the chain's head (position and hash) at a time, as a JWS.

Signed with the IdP's OIDC signing key (the one ``keys jwks`` publishes), so anyone holding
the JWKS verifies a checkpoint, and nobody who can only write to the database can make one:
a superuser who rewrites the chain and every hash after a record still cannot sign the head
the rewritten chain has, so the last checkpoint before the rewrite no longer matches.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final, Protocol

import jwt
from sqlalchemy import Connection, Engine, select

from orchestrator.chain.canonical import format_at
from orchestrator.chain.sealing import ChainHead, chain_head, take_seal_lock, try_seal_lock
from orchestrator.store.core import audit_checkpoints
from orchestrator.store.models import utcnow

__all__ = [
    "CHECKPOINT_TYPE",
    "Checkpoint",
    "CheckpointKeys",
    "SigningKeyLike",
    "checkpoint_if_due",
    "read_checkpoints",
    "signature_problem",
    "write_checkpoint",
]

#: The JWS ``typ`` of a checkpoint (never a logout token: relying parties refuse it).
CHECKPOINT_TYPE: Final = "audit-checkpoint+jwt"
_CP = audit_checkpoints.c


class SigningKeyLike(Protocol):
    """What signs a checkpoint (``protocols.oidc.keys.SigningKey`` is one)."""

    @property
    def kid(self) -> str: ...
    @property
    def alg(self) -> str: ...
    @property
    def private_key(self) -> Any: ...


@dataclass(frozen=True, slots=True)
class CheckpointKeys:
    """The key that signs new checkpoints (None: only verifying) and the JWKS that verifies."""

    signing: SigningKeyLike | None
    jwks: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """One checkpoint as stored: ``jws`` states the rest, which is its copy for queries."""

    id: str
    at: datetime
    count: int
    head_hash: str
    reason: str
    jws: str

    def claims(self, issuer: str) -> dict[str, Any]:
        """What the JWS signs."""
        return {
            "iss": issuer,
            "jti": self.id,
            "at": format_at(self.at),
            "count": self.count,
            "head": self.head_hash,
            "reason": self.reason,
        }


def _sign(head: ChainHead, reason: str, key: SigningKeyLike, issuer: str) -> Checkpoint:
    unsigned = Checkpoint(str(uuid.uuid4()), utcnow(), head.count, head.hash, reason, "")
    jws = jwt.encode(
        unsigned.claims(issuer),
        key.private_key,
        algorithm=key.alg,
        headers={"typ": CHECKPOINT_TYPE, "kid": key.kid},
    )
    return Checkpoint(unsigned.id, unsigned.at, head.count, head.hash, reason, jws)


def write_checkpoint(
    db: Connection, keys: CheckpointKeys, issuer: str, reason: str, head: ChainHead | None = None
) -> Checkpoint:
    """Sign and store a checkpoint of ``head`` (default: the chain's head now) in ``db``'s
    transaction, holding the sealer's lock so that no round moves the head meanwhile."""
    if keys.signing is None:
        raise ValueError("no signing key to write a checkpoint with")
    take_seal_lock(db)
    checkpoint = _sign(head or chain_head(db), reason, keys.signing, issuer)
    db.execute(
        audit_checkpoints.insert().values(
            id=checkpoint.id,
            at=checkpoint.at,
            count=checkpoint.count,
            head_hash=checkpoint.head_hash,
            reason=checkpoint.reason,
            jws=checkpoint.jws,
        )
    )
    return checkpoint


def checkpoint_if_due(
    engine: Engine, keys: Callable[[], CheckpointKeys], issuer: str, interval: float
) -> Checkpoint | None:
    """A new ``interval`` checkpoint when the last one is ``interval`` seconds old or more
    and the chain grew since (an idle trail gets none); None when not due, or when another
    transaction holds the seal lock (the next round looks again). ``keys`` is only called
    when one is due."""
    with engine.begin() as db:
        if not try_seal_lock(db):
            return None
        last = (
            db.execute(select(_CP.at, _CP.count).order_by(_CP.at.desc(), _CP.count.desc()))
            .mappings()
            .first()
        )
        head = chain_head(db)
        if last is not None and (
            utcnow() - last["at"] < timedelta(seconds=interval) or last["count"] >= head.count
        ):
            return None
        if last is None and head.count == 0:
            return None
        return write_checkpoint(db, keys(), issuer, "interval", head)


def read_checkpoints(db: Connection) -> list[Checkpoint]:
    """Every stored checkpoint, by position then time (a few a day: they fit in memory)."""
    rows = db.execute(select(audit_checkpoints).order_by(_CP.count, _CP.at)).mappings()
    return [Checkpoint(**{name: row[name] for name in Checkpoint.__slots__}) for row in rows]


def signature_problem(checkpoint: Checkpoint, jwks: dict[str, Any]) -> str | None:
    """Why ``checkpoint`` cannot be trusted (None: its JWS verifies with a key of ``jwks``
    and states exactly its columns)."""
    try:
        header = jwt.get_unverified_header(checkpoint.jws)
    except jwt.PyJWTError:
        return "its JWS is not a JWS"
    kid = header.get("kid")
    if header.get("typ") != CHECKPOINT_TYPE:
        return f"its JWS is not a checkpoint (typ {header.get('typ')!r})"
    jwk = next((k for k in jwks.get("keys", []) if k.get("kid") == kid), None)
    if jwk is None:
        return f"it is signed with key {kid!r}, which the JWKS does not hold"
    try:
        key = jwt.PyJWK(jwk)
        claims = jwt.decode(checkpoint.jws, key.key, algorithms=[key.algorithm_name])
    except jwt.PyJWTError:
        return f"its signature does not verify with key {kid!r}"
    stated = checkpoint.claims(str(claims.get("iss")))
    differing = sorted(name for name, value in stated.items() if claims.get(name) != value)
    if differing:
        return f"its columns differ from what its JWS signs: {', '.join(differing)}"
    return None
