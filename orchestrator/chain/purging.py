"""Retention: delete the oldest records and keep a signed checkpoint where they ended.

The checkpoint (``reason: purge``) signs the chain hash of the last record deleted, at its
position; the first record left follows exactly that hash, so what remains verifies from
the checkpoint as it did from the genesis. The purge is itself a record (``audit.purged``),
and it refuses a trail that does not verify: a signature over a hash that was already
tampered with would hide the tampering. The verification runs in the purge's transaction,
under the seal lock, so nothing seals or signs between what was verified and what is signed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Engine, delete, func, select

from orchestrator.audit import emit, write_audit
from orchestrator.chain.checking import Verification, verify_chain
from orchestrator.chain.checkpoints import Checkpoint, CheckpointKeys, write_checkpoint
from orchestrator.chain.reading import first_position
from orchestrator.chain.sealing import ChainHead, chain_head, seal, take_seal_lock
from orchestrator.store.core import audit_links, audit_records
from orchestrator.trail import audit_purged

__all__ = ["Purge", "purge_before"]

_AUDIT = audit_records.c
_LINK = audit_links.c


@dataclass(frozen=True, slots=True)
class Purge:
    """What a purge deleted: ``deleted`` records, positions up to ``through``, and the
    checkpoint that signs where they ended (None: nothing was old enough, or ``refused``).
    ``refused``: the trail did not verify (its findings), and nothing was deleted."""

    deleted: int
    through: int
    checkpoint: Checkpoint | None
    refused: Verification | None = None


def purge_before(
    engine: Engine, keys: CheckpointKeys, issuer: str, before: datetime, actor: str | None
) -> Purge:
    """Delete every sealed record of the chain before the first written at or after
    ``before``, in one transaction with its checkpoint and its ``audit.purged`` record, once
    the whole trail verified in that transaction (else nothing is deleted: ``refused``)."""
    seal(engine)
    with engine.begin() as db:
        take_seal_lock(db)
        verified = verify_chain(db, keys.jwks)
        if verified.findings:
            return Purge(0, 0, None, refused=verified)
        end = first_position(db, before)
        through = chain_head(db).count if end is None else end - 1
        low = db.scalar(select(func.min(_LINK.chain_seq)))
        if low is None or through < int(low):
            return Purge(0, through, None)
        head = db.scalar(select(_LINK.chain_hash).where(_LINK.chain_seq == through))
        checkpoint = write_checkpoint(db, keys, issuer, "purge", ChainHead(through, str(head)))
        purged = select(_LINK.seq).where(_LINK.chain_seq <= through)
        deleted = db.execute(delete(audit_records).where(_AUDIT.seq.in_(purged))).rowcount
        db.execute(delete(audit_links).where(_LINK.chain_seq <= through))
        entry = audit_purged(checkpoint.id, before, deleted, through, actor)
        written = write_audit(db, [entry])
    emit(written)
    return Purge(deleted, through, checkpoint)
