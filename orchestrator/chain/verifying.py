"""Verifying the chain: every altered, deleted, inserted or reordered record, named.

:class:`ChainVerifier` is fed the records in chain order (from the database or an export)
and the checkpoints, and keeps only the previous record and the breaks it found, so it runs
in constant memory on a trail of any length. A break (a record whose ``prev_hash`` is not
the chain hash of the record before it) is explained at the end with two look-ups
(:class:`Lookups`): which record owns that hash, and which of the records before a break
another record follows. How each tampering shows:

- altered: a record's content no longer hashes to its ``record_hash``, or its chain hash
  does not follow from its ``prev_hash`` and ``record_hash``, or (a chain rewritten from it
  on) a signed checkpoint names another chain hash at its position;
- deleted: a record follows a hash no record has, positions before the first are missing
  with no signed purge checkpoint for them, or a checkpoint counts more records than remain;
- inserted: a record that no record follows while the next one follows the one before it;
- reordered: a record follows a record that is elsewhere in the trail.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from orchestrator.chain.canonical import GENESIS, chain_hash, record_hash
from orchestrator.chain.checkpoints import Checkpoint, signature_problem

__all__ = ["ChainVerifier", "Finding", "Lookups", "Owner"]


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong: its kind, the record (id and position) or checkpoint, and what."""

    kind: str
    """``altered``, ``deleted``, ``inserted``, ``reordered`` or ``forged checkpoint``."""
    position: int | None
    record_id: str | None
    problem: str

    def __str__(self) -> str:
        where = []
        if self.record_id is not None:
            where.append(f"record {self.record_id}")
        if self.position is not None:
            where.append(f"at position {self.position}")
        return f"{self.kind}: {' '.join(where) + ': ' if where else ''}{self.problem}"

    def as_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "position": self.position,
            "record_id": self.record_id,
            "problem": self.problem,
        }


@dataclass(frozen=True, slots=True)
class Owner:
    """The record that has a chain hash."""

    position: int
    record_id: str


class Lookups(Protocol):
    """The two questions a break needs answered about the whole trail."""

    def owners(self, hashes: set[str]) -> dict[str, Owner]:
        """The record whose chain hash is each of ``hashes`` (those that one has)."""

    def followed(self, hashes: set[str]) -> set[str]:
        """Those of ``hashes`` that some record names as its ``prev_hash``."""


@dataclass(frozen=True, slots=True)
class _Link:
    position: int
    record_id: str
    prev_hash: str
    chain_hash: str


@dataclass(frozen=True, slots=True)
class _Break:
    row: _Link
    before: _Link | None
    before_that: str | None
    """The chain hash of the record before ``before`` (or the anchor)."""


@dataclass(slots=True)
class ChainVerifier:
    """Feed the records in chain order (:meth:`feed`), then :meth:`finish` for the findings.

    ``partial``: the records start at a time (``--since``), so the first one's link to the
    record before it is taken as given unless a checkpoint signed that record's position.
    """

    checkpoints: list[Checkpoint]
    jwks: dict[str, Any]
    partial: bool = False
    findings: list[Finding] = field(default_factory=list, init=False)
    checked: int = field(default=0, init=False)
    first: int | None = field(default=None, init=False)
    _signed: dict[int, list[Checkpoint]] = field(default_factory=dict, init=False)
    _last: _Link | None = field(default=None, init=False)
    _previous: _Link | None = field(default=None, init=False)
    _anchor: str = field(default=GENESIS, init=False)
    _breaks: list[_Break] = field(default_factory=list, init=False)
    _unsigned: list[tuple[Checkpoint, _Link]] = field(default_factory=list, init=False)
    """Records at a signed position whose chain hash is not the one signed."""

    def __post_init__(self) -> None:
        for checkpoint in self.checkpoints:
            problem = signature_problem(checkpoint, self.jwks)
            if problem is None:
                self._signed.setdefault(checkpoint.count, []).append(checkpoint)
            else:
                self.findings.append(
                    Finding(
                        "forged checkpoint", None, None, f"checkpoint {checkpoint.id}: {problem}"
                    )
                )

    @property
    def signed(self) -> int:
        """How many checkpoints verified."""
        return sum(len(found) for found in self._signed.values())

    @property
    def signed_through(self) -> int | None:
        """The highest position a checkpoint that verified signs (``None``: none did)."""
        return max(self._signed, default=None)

    def _start(self, link: _Link) -> None:
        self.first = link.position
        anchors = self._signed.get(link.position - 1, [])
        if link.position == 1:
            self._anchor = GENESIS
        elif anchors:
            self._anchor = anchors[0].head_hash
        elif self.partial:
            self._anchor = link.prev_hash
        else:
            self._anchor = link.prev_hash
            self.findings.append(
                Finding(
                    "deleted",
                    1,
                    None,
                    f"{_positions(1, link.position - 1)} missing: the trail "
                    f"starts at position {link.position} and no signed checkpoint accounts for "
                    "them (a purge leaves one)",
                )
            )

    def feed(self, row: Mapping[str, Any]) -> None:
        """Check one record (its canonical fields and its chain columns)."""
        link = _Link(int(row["chain_seq"]), str(row["id"]), row["prev_hash"], row["chain_hash"])
        self.checked += 1
        if self._last is None:
            self._start(link)
        expected = self._anchor if self._last is None else self._last.chain_hash
        if link.prev_hash != expected:
            before_that = self._anchor if self._previous is None else self._previous.chain_hash
            self._breaks.append(_Break(link, self._last, before_that))
        elif self._last is not None and link.position != self._last.position + 1:
            self._found("altered", link, f"its position should be {self._last.position + 1}")
        self._check_hashes(link, row)
        self._previous, self._last = self._last, link

    def _found(self, kind: str, link: _Link, problem: str) -> None:
        self.findings.append(Finding(kind, link.position, link.record_id, problem))

    def _check_hashes(self, link: _Link, row: Mapping[str, Any]) -> None:
        if not all(isinstance(row[name], str) for name in ("record_hash", "prev_hash")):
            self._found("altered", link, "its chain columns are empty")
        elif record_hash(row) != row["record_hash"]:
            self._found(
                "altered",
                link,
                "its content does not hash to its record_hash: changed since it was written",
            )
        elif chain_hash(link.prev_hash, row["record_hash"]) != link.chain_hash:
            self._found(
                "altered", link, "its chain_hash does not follow from its prev_hash and record_hash"
            )
        for checkpoint in self._signed.get(link.position, ()):
            if checkpoint.head_hash != link.chain_hash:
                self._unsigned.append((checkpoint, link))

    def finish(self, lookups: Lookups) -> list[Finding]:
        """The findings, once every record was fed: breaks explained, missing tails named."""
        last = self._last.position if self._last is not None else 0
        if self._last is None:
            last = max((n for n, cps in self._signed.items() if _purged(cps)), default=0)
        for count, checkpoints in sorted(self._signed.items()):
            if count > last:
                self.findings.append(
                    Finding(
                        "deleted",
                        last + 1,
                        None,
                        f"{_positions(last + 1, count)} missing: checkpoint "
                        f"{checkpoints[0].id} counted {count} records",
                    )
                )
        self._explain(lookups)
        self.findings.sort(key=_by_position)
        return self.findings

    def _explain_checkpoints(self, owners: dict[str, Owner]) -> None:
        """A signed head elsewhere: records were inserted or deleted before it; nowhere:
        the chain up to the checkpoint's position was rewritten."""
        for checkpoint, link in self._unsigned:
            signed = f"checkpoint {checkpoint.id} signed position {link.position}"
            owner = owners.get(checkpoint.head_hash)
            if owner is None:
                kind = "altered"
                problem = f"the chain up to here was rewritten: {signed} with another hash"
            else:
                kind = "inserted" if owner.position > link.position else "deleted"
                problem = (
                    f"records were {kind} before it: {signed} for record {owner.record_id}, "
                    f"now at position {owner.position}"
                )
            self._found(kind, link, problem)

    def _explain(self, lookups: Lookups) -> None:
        heads = {checkpoint.head_hash for checkpoint, _ in self._unsigned}
        owners = lookups.owners({b.row.prev_hash for b in self._breaks} | heads)
        self._explain_checkpoints(owners)
        candidates = {b.before.chain_hash for b in self._breaks if b.before is not None}
        signed = {cp.head_hash for cps in self._signed.values() for cp in cps}
        followed = lookups.followed(candidates) | signed
        inserted: dict[int, Finding] = {}
        explained: list[Finding] = []
        for found in self._breaks:
            row, before = found.row, found.before
            if before is not None and (
                before.prev_hash == row.prev_hash
                or (row.prev_hash == found.before_that and before.chain_hash not in followed)
            ):
                inserted[before.position] = Finding(
                    "inserted",
                    before.position,
                    before.record_id,
                    f"not part of the chain: no record follows it, and record {row.record_id} "
                    "follows the record before it",
                )
            elif (owner := owners.get(row.prev_hash)) is not None:
                explained.append(
                    Finding(
                        "reordered",
                        row.position,
                        row.record_id,
                        f"it follows record {owner.record_id} (position {owner.position}) "
                        "in the chain, not the record before it here",
                    )
                )
            else:
                empty = ""
                if before is not None and row.position > before.position + 1:
                    empty = f" ({_positions(before.position + 1, row.position - 1)} empty)"
                explained.append(
                    Finding(
                        "deleted",
                        row.position,
                        row.record_id,
                        "the record before it in the chain is missing: no record has the "
                        f"chain hash it follows{empty}",
                    )
                )
        kept = [f for f in explained if f.position not in inserted]
        self.findings.extend([*kept, *inserted.values()])


def _purged(checkpoints: Iterable[Checkpoint]) -> bool:
    return any(checkpoint.reason == "purge" for checkpoint in checkpoints)


def _by_position(finding: Finding) -> int:
    """Forged checkpoints first, then by position (a stable sort keeps the rest's order)."""
    return -1 if finding.position is None else finding.position


def _positions(low: int, high: int) -> str:
    if low == high:
        return f"the record at position {low} is"
    return f"the records at positions {low} to {high} are"
