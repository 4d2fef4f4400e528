"""The engine's shape: small modules and short functions, the audit keys and the delivery
status sets each defined once (checked on the source, so a regression fails here)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

import orchestrator

_ROOT = Path(orchestrator.__file__).parent
_ENGINE = [
    *sorted((_ROOT / "logout").glob("*.py")),
    *sorted((_ROOT / "trail").glob("*.py")),
    _ROOT / "store" / "statements.py",
    _ROOT / "store" / "tables.py",
]


@pytest.mark.parametrize("path", _ENGINE, ids=lambda p: str(p.relative_to(_ROOT)))
def test_engine_modules_and_functions_stay_small(path: Path) -> None:
    """Each engine module is at most 400 lines, each of its functions at most 60."""
    source = path.read_text()
    assert len(source.splitlines()) <= 400
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            assert length <= 60, f"{node.name} is {length} lines"


def test_audit_entries_are_built_only_in_the_trail() -> None:
    """Every ``AuditEntry(...)`` and its dedupe key is made in the ``orchestrator/trail`` package:
    the engine's records in ``logout.py``, people's and other systems' actions in ``actions.py``."""
    builders = {
        str(path.relative_to(_ROOT))
        for path in _ROOT.rglob("*.py")
        if re.search(r"\bAuditEntry\(\s*\n?\s*key=", path.read_text())
    }
    assert builders == {"trail/logout.py", "trail/actions.py"}


def test_delivery_status_sets_are_defined_once() -> None:
    """No module spells the open statuses out again (``OPEN_DELIVERY_STATUSES`` is it)."""
    spelled = re.compile(
        r"DeliveryStatus\.(PENDING|RETRYING)\s*,\s*DeliveryStatus\.(PENDING|RETRYING)"
    )
    found = [
        str(p.relative_to(_ROOT)) for p in _ROOT.rglob("*.py") if spelled.search(p.read_text())
    ]
    assert found == []
