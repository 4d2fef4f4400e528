"""The layout's rules, checked on the source: ``protocols/`` imports nothing from
``orchestrator/`` (the protocol contract stands alone), and no module of ``orchestrator/`` or
``api/`` grows past 400 lines nor any of its functions past 60 (migrations aside: they are
written once and never edited)."""

from __future__ import annotations

import ast
from pathlib import Path

import api
import orchestrator
import protocols

_ORCHESTRATOR = Path(orchestrator.__file__).parent
_API = Path(api.__file__).parent
_PROTOCOLS = Path(protocols.__file__).parent


def _imported(path: Path) -> set[str]:
    """Every module name ``path`` imports, at any depth (``TYPE_CHECKING`` blocks included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
    return names


def test_protocols_import_nothing_from_the_host() -> None:
    """No module under ``protocols/`` imports ``orchestrator`` (or anything below it)."""
    upward = {
        f"{path.relative_to(_PROTOCOLS)}: {name}"
        for path in _PROTOCOLS.rglob("*.py")
        for name in _imported(path)
        if name == "orchestrator" or name.startswith("orchestrator.")
    }
    assert upward == set()


def test_the_check_sees_an_upward_import(tmp_path: Path) -> None:
    """The import walk finds ``orchestrator`` in the forms a module would use."""
    module = tmp_path / "m.py"
    module.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from orchestrator.settings import Settings\n"
        "def f():\n    import orchestrator.store\n"
    )
    assert {"orchestrator.settings", "orchestrator.store"} <= _imported(module)


def test_no_orchestrator_module_is_over_400_lines() -> None:
    """Modules stay small enough to read in one sitting."""
    long = {
        str(path.relative_to(_ORCHESTRATOR)): lines
        for path in _ORCHESTRATOR.rglob("*.py")
        if "migrations" not in path.parts
        and (lines := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    assert long == {}


def _long_functions(path: Path, limit: int = 60) -> dict[str, int]:
    """The functions and methods of ``path`` (nested ones too) longer than ``limit`` lines,
    from ``def`` to their last line, by name."""
    return {
        node.name: length
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and (length := (node.end_lineno or node.lineno) - node.lineno + 1) > limit
    }


def test_no_orchestrator_function_is_over_60_lines() -> None:
    """Each function of ``orchestrator/`` reads as one step: split by step past 60 lines."""
    long = {
        f"{path.relative_to(_ORCHESTRATOR)}: {name}": lines
        for path in _ORCHESTRATOR.rglob("*.py")
        if "migrations" not in path.parts
        for name, lines in _long_functions(path).items()
    }
    assert long == {}


def test_the_check_sees_a_long_method(tmp_path: Path) -> None:
    """The walk measures methods and nested functions from ``def`` to their last line."""
    module = tmp_path / "m.py"
    body = "".join(f"        x{n} = {n}\n" for n in range(60))
    module.write_text(
        f"class C:\n    def long(self):\n{body}\n    def short(self):\n        pass\n"
    )
    assert _long_functions(module) == {"long": 61}


def test_no_api_module_is_over_400_lines_nor_function_over_60() -> None:
    """The HTTP service keeps the same sizes: one module per area (the OpenAPI document's
    paths too), endpoints as methods rather than one long closure of closures."""
    long = {
        str(path.relative_to(_API)): lines
        for path in _API.rglob("*.py")
        if (lines := len(path.read_text(encoding="utf-8").splitlines())) > 400
    }
    long |= {
        f"{path.relative_to(_API)}: {name}": lines
        for path in _API.rglob("*.py")
        for name, lines in _long_functions(path).items()
    }
    assert long == {}
