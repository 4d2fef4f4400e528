"""What ``audit verify`` and ``audit export`` run: seal, then read the chain from the
database (or an export) into the verifier or the export."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime
from itertools import chain
from typing import IO, Any

from sqlalchemy import Connection, Engine

from orchestrator.chain.canonical import format_at
from orchestrator.chain.checkpoints import (
    Checkpoint,
    CheckpointKeys,
    read_checkpoints,
    write_checkpoint,
)
from orchestrator.chain.exporting import checkpoint_line, read_export, write_export
from orchestrator.chain.reading import (
    DatabaseLookups,
    chain_records,
    first_position,
    hidden_records,
)
from orchestrator.chain.sealing import chain_head, seal
from orchestrator.chain.verifying import ChainVerifier, Finding, Lookups, Owner
from orchestrator.store.models import utcnow

__all__ = [
    "FileLookups",
    "Verification",
    "export_trail",
    "verify_chain",
    "verify_database",
    "verify_export",
]


@dataclass(frozen=True, slots=True)
class Verification:
    """What a verification read and found (nothing found: the chain verifies)."""

    records: int
    first: int | None
    last: int | None
    checkpoints: int
    findings: list[Finding]
    signed_through: int | None = None
    """The highest position a checkpoint that verified signs (``None``: none verified)."""

    @property
    def unsigned(self) -> tuple[int, int] | None:
        """The positions of the records read that no verified checkpoint covers (the tail
        after the last one), or ``None`` when every record read is covered."""
        if self.first is None or self.last is None:
            return None
        start = max(self.first, (self.signed_through or 0) + 1)
        return (start, self.last) if start <= self.last else None


def _verify(
    checkpoints: list[Checkpoint],
    jwks: dict[str, Any],
    records: Iterator[dict[str, Any]],
    partial: bool,
    lookups: Callable[[], Lookups],
) -> Verification:
    verifier = ChainVerifier(checkpoints, jwks, partial=partial)
    last = None
    for record in records:
        verifier.feed(record)
        last = int(record["chain_seq"])
    findings = verifier.finish(lookups())
    return Verification(
        verifier.checked, verifier.first, last, verifier.signed, findings, verifier.signed_through
    )


def _hidden(db: Connection) -> list[Finding]:
    return [
        Finding(
            "inserted",
            None,
            found.id,
            f"not part of the chain: a record with no link (seq {found.seq}) below "
            "records already sealed, where the sealer never links one",
        )
        for found in hidden_records(db)
    ]


def verify_chain(
    db: Connection, jwks: dict[str, Any], *, since: datetime | None = None
) -> Verification:
    """Verify the sealed chain (from ``since``) and every checkpoint in ``db``'s transaction,
    and name every record hidden below the chain's head (never sealed, so in no link)."""
    found = _verify(
        read_checkpoints(db),
        jwks,
        chain_records(db, since=since),
        since is not None,
        lambda: DatabaseLookups(db),
    )
    hidden = _hidden(db)
    if not hidden:
        return found
    return replace(found, findings=[*hidden, *found.findings])


def verify_database(
    engine: Engine, keys: CheckpointKeys, *, since: datetime | None = None
) -> Verification:
    """Seal what is committed, then verify the chain (from ``since``) and every checkpoint."""
    seal(engine)
    with engine.connect() as db:
        return verify_chain(db, keys.jwks, since=since)


def _covered(
    db: Connection, checkpoints: list[Checkpoint], until: datetime | None
) -> list[Checkpoint]:
    end = first_position(db, until) if until is not None else None
    return [cp for cp in checkpoints if end is None or cp.count < end]


def export_trail(
    engine: Engine,
    out: IO[str],
    fmt: str,
    keys: CheckpointKeys,
    issuer: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
) -> int:
    """Seal, sign a checkpoint of the head when it moved since the last one (so the whole
    export is covered by a signature), then stream the export; returns the records written."""
    seal(engine)
    if until is None and keys.signing is not None:
        with engine.begin() as db:
            head = chain_head(db)
            if head.count and not any(cp.count == head.count for cp in read_checkpoints(db)):
                write_checkpoint(db, keys, issuer, "export", head)
    with engine.connect() as db:
        checkpoints = _covered(db, read_checkpoints(db), until)
        header = {
            "kind": "export",
            "at": format_at(utcnow()),
            "since": format_at(since) if since else None,
            "until": format_at(until) if until else None,
        }
        lines = (
            header,
            *(checkpoint_line(cp) for cp in checkpoints),
        )
        records = (
            {"kind": "record", **record} for record in chain_records(db, since=since, until=until)
        )
        return write_export(out, fmt, chain(lines, records))


class FileLookups:
    """:class:`~orchestrator.chain.verifying.Lookups` by reading the export again."""

    def __init__(self, path: str, opener: Callable[[], IO[str]]) -> None:
        self._path = path
        self._open = opener

    def _records(self) -> Iterator[dict[str, Any]]:
        with self._open() as text:
            for line in read_export(self._path, text):
                if line["kind"] == "record":
                    yield line

    def owners(self, hashes: set[str]) -> dict[str, Owner]:
        if not hashes:
            return {}
        return {
            line["chain_hash"]: Owner(int(line["chain_seq"]), str(line["id"]))
            for line in self._records()
            if line["chain_hash"] in hashes
        }

    def followed(self, hashes: set[str]) -> set[str]:
        if not hashes:
            return set()
        return {line["prev_hash"] for line in self._records() if line["prev_hash"] in hashes}


def verify_export(path: str, opener: Callable[[], IO[str]], jwks: dict[str, Any]) -> Verification:
    """Verify an export offline: its records' chain and its checkpoints against ``jwks``."""
    with opener() as text:
        lines = read_export(path, text)
        checkpoints: list[Checkpoint] = []
        partial = False
        first: dict[str, Any] | None = None
        for line in lines:
            if line["kind"] == "export":
                partial = line.get("since") is not None
            elif line["kind"] == "checkpoint":
                checkpoints.append(Checkpoint(**{k: line[k] for k in Checkpoint.__slots__}))
            else:
                first = line
                break
        records = chain(
            [first] if first else [], (line for line in lines if line["kind"] == "record")
        )
        return _verify(checkpoints, jwks, records, partial, lambda: FileLookups(path, opener))
