"""The export: the chain's records with their chain data and the checkpoints, as JSON lines
or CSV, written and read back one line at a time (constant memory both ways).

Every line has a ``kind``: one ``export`` line first (what was asked, when), then every
``checkpoint`` that covers the exported stretch, then each ``record`` in chain order. In
CSV, ``detail`` is its JSON text and an empty cell is an absent value (``null``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import IO, Any, Final

from orchestrator.chain.canonical import format_at
from orchestrator.chain.checkpoints import Checkpoint
from orchestrator.chain.reading import CHAIN_FIELDS
from orchestrator.errors import InputError, Problem

__all__ = ["EXPORT_COLUMNS", "FORMATS", "checkpoint_line", "read_export", "write_export"]

FORMATS: Final = ("jsonl", "csv")
_CHECKPOINT_FIELDS: Final = ("id", "at", "count", "head_hash", "reason", "jws")
#: The CSV header: every field any kind of line has.
EXPORT_COLUMNS: Final = (
    "kind",
    *CHAIN_FIELDS,
    *(name for name in _CHECKPOINT_FIELDS if name not in CHAIN_FIELDS),
    "since",
    "until",
)
_INTEGERS: Final = frozenset({"chain_seq", "count"})


def checkpoint_line(checkpoint: Checkpoint) -> dict[str, Any]:
    """A checkpoint as an export line."""
    line = {name: getattr(checkpoint, name) for name in _CHECKPOINT_FIELDS}
    line["at"] = format_at(checkpoint.at)
    return {"kind": "checkpoint", **line}


def write_export(out: IO[str], fmt: str, lines: Iterable[dict[str, Any]]) -> int:
    """Write an export's ``lines`` (its header, checkpoints and records) to ``out`` in
    ``fmt``; returns how many records were written."""
    records = 0
    writer = csv.DictWriter(out, EXPORT_COLUMNS, lineterminator="\n") if fmt == "csv" else None
    if writer is not None:
        writer.writeheader()
    for line in lines:
        records += line["kind"] == "record"
        if writer is None:
            out.write(json.dumps(line, ensure_ascii=False, separators=(",", ":")) + "\n")
            continue
        cells = {name: "" if value is None else value for name, value in line.items()}
        if "detail" in line:
            cells["detail"] = json.dumps(line["detail"], ensure_ascii=False, sort_keys=True)
        writer.writerow(cells)
    return records


def _refused(path: str, line: int, problem: str) -> InputError:
    return InputError([Problem(f"{path}:{line}", "", problem)])


def _from_csv(row: dict[str, str], path: str, number: int) -> dict[str, Any]:
    line: dict[str, Any] = {name: (value if value != "" else None) for name, value in row.items()}
    try:
        for name in _INTEGERS:
            if line.get(name) is not None:
                line[name] = int(line[name])
        if line.get("detail") is not None:
            line["detail"] = json.loads(line["detail"])
    except ValueError as exc:
        raise _refused(path, number, f"not a line of an export: {exc}") from None
    return line


def _lines(path: str, text: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    first = text.readline()
    text.seek(0)
    if first.startswith("kind,"):
        for number, row in enumerate(csv.DictReader(text), start=2):
            yield number, _from_csv(row, path, number)
        return
    for number, raw in enumerate(text, start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            raise _refused(path, number, "not JSON: give a file `audit export` wrote") from None
        if not isinstance(line, dict):
            raise _refused(path, number, "not a JSON object: give a file `audit export` wrote")
        yield number, line


def _out_of_place(path: str, number: int, kind: str, first: bool) -> InputError | None:
    """The ``export`` line :func:`write_export` always writes (even for an empty stretch)
    comes first, and only first."""
    if first and kind != "export":
        return _refused(path, number, "no export line first: give a file `audit export` wrote")
    if not first and kind == "export":
        return _refused(path, number, "a second export line: give one file `audit export` wrote")
    return None


def read_export(path: str, text: IO[str]) -> Iterator[dict[str, Any]]:
    """The lines of an export (JSON lines or CSV, told by its first line), checked for the
    fields their kind needs, the ``export`` line first; anything else is an InputError naming
    the line (an empty file: the file)."""
    first = True
    for number, line in _lines(path, text):
        kind = line.get("kind")
        needed = {"record": CHAIN_FIELDS, "checkpoint": _CHECKPOINT_FIELDS, "export": ()}.get(
            str(kind)
        )
        if needed is None:
            raise _refused(path, number, f"unknown kind {kind!r}: export, checkpoint or record")
        missing = [name for name in needed if name not in line]
        if missing:
            raise _refused(path, number, f"a {kind} line without {', '.join(missing)}")
        if (misplaced := _out_of_place(path, number, str(kind), first)) is not None:
            raise misplaced
        first = False
        if kind == "checkpoint":
            try:
                line["at"] = datetime.fromisoformat(line["at"])
            except (TypeError, ValueError):
                raise _refused(path, number, "its at is not a timestamp") from None
        yield line
    if first:
        problem = "empty, so not an export (one starts with its export line)"
        raise InputError([Problem(path, "", f"{problem}: give a file `audit export` wrote")])
