"""The two statements that record delivery outcomes (one per row, and PostgreSQL's one for
a whole batch) set the same columns from the same parameters."""

from __future__ import annotations

import re

from sqlalchemy.dialects import postgresql

from orchestrator.store import statements as sql
from orchestrator.store.tables import DELIVERIES


def _set_clause(compiled: str) -> dict[str, str]:
    """``column = <parameter>`` pairs of an ``UPDATE ... SET ... (FROM|WHERE)``."""
    clause = re.search(r"\bSET (.*?) (?:FROM|WHERE)\b", compiled, re.S)
    assert clause is not None, compiled
    pairs = (part.split("=") for part in clause.group(1).split(","))
    return {left.strip(): right.strip() for left, right in pairs}


_PG = postgresql.dialect()  # type: ignore[no-untyped-call]


def test_both_outcome_statements_set_the_same_columns_from_the_same_parameters() -> None:
    one = _set_clause(str(sql.RECORD_OUTCOME.compile(dialect=_PG)))
    batch = _set_clause(str(sql.RECORD_OUTCOMES.compile(dialect=_PG)))
    expected = {column: param for column, (param, _) in sql.OUTCOME_COLUMNS.items()}
    assert {column: re.sub(r"^%\((\w+)\)s.*$", r"\1", p) for column, p in one.items()} == expected
    assert {column: p.removeprefix("r.") for column, p in batch.items()} == expected


def test_the_batch_statement_types_each_parameter_as_its_column() -> None:
    """``json_to_recordset``'s record type is the column's (a mismatch is a server error)."""
    text = str(sql.RECORD_OUTCOMES)
    typed = dict(re.findall(r"(b_\w+) (varchar|text|integer|timestamptz)", text))
    for column, (param, kind) in sql.OUTCOME_COLUMNS.items():
        assert typed[param] == kind
        python_type = DELIVERIES.c[column].type.python_type
        expected = {"varchar": str, "text": str, "integer": int}.get(kind)
        assert expected is None or python_type is expected, column
