"""Lazy package exports (PEP 562): each name is imported the first time it is used, so
``import package`` stays cheap.

A command that needs one settings object does not pay for the SAML, HTTP and broker stacks.
A package writes each export twice, as type checkers need it: imported in its
``if TYPE_CHECKING:`` block (which also says where it lives) and listed in ``__all__``.
Where each name lives is read from that block (the package's own source, parsed the first
time a lazy name is asked for), so it is written nowhere else::

    if TYPE_CHECKING:
        from package.module import Name

    __all__ = ["Name"]

    __getattr__, __dir__ = lazy_exports(__name__)
"""

from __future__ import annotations

import ast
import importlib
import sys
from collections.abc import Callable, Mapping
from functools import cache
from typing import Any

__all__ = ["lazy_exports", "type_checking_exports"]


def _is_type_checking(test: ast.expr) -> bool:
    """``TYPE_CHECKING`` or ``typing.TYPE_CHECKING``."""
    if isinstance(test, ast.Name):
        return test.id == "TYPE_CHECKING"
    return isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"


def _absolute(package: str, level: int, module: str | None) -> str:
    """The module ``from <level dots><module> import`` names inside ``package``."""
    if level == 0:
        return module or ""
    base = package.rsplit(".", level - 1)[0]
    return f"{base}.{module}" if module else base


def type_checking_exports(package: str) -> dict[str, tuple[str, str]]:
    """What ``package``'s top-level ``if TYPE_CHECKING:`` block imports: for each name it
    binds, the module and the name there (``from m import a as b`` binds ``b``)."""
    spec = sys.modules[package].__spec__
    get_source = getattr(spec.loader if spec is not None else None, "get_source", None)
    source = get_source(package) if get_source is not None else None
    if not isinstance(source, str):
        raise ImportError(f"{package}: no source to read its lazy exports from")
    imports: dict[str, tuple[str, str]] = {}
    for node in ast.parse(source).body:
        if not (isinstance(node, ast.If) and _is_type_checking(node.test)):
            continue
        for statement in node.body:
            if isinstance(statement, ast.ImportFrom):
                module = _absolute(package, statement.level, statement.module)
                for alias in statement.names:
                    imports[alias.asname or alias.name] = (module, alias.name)
    return imports


def _checked(package: str, namespace: Mapping[str, Any]) -> dict[str, tuple[str, str]]:
    """The package's lazy exports; ValueError when they cannot work as written."""
    where = type_checking_exports(package)
    # Importing a submodule sets it as the package's attribute, and then no __getattr__ is
    # asked: a name shared by an export and a submodule must stay an eager import.
    shared = {module.rsplit(".", 1)[-1] for module, _ in where.values()} & set(where)
    if shared:
        raise ValueError(f"{package}: exports named like its submodules: {sorted(shared)}")
    # Each name in __all__ must be importable: eagerly imported, or in the block.
    unmapped = set(namespace.get("__all__", ())) - set(where) - set(namespace)
    if unmapped:
        raise ValueError(f"{package}: __all__ names no module exports: {sorted(unmapped)}")
    return where


def lazy_exports(package: str) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``, whose ``if TYPE_CHECKING:`` block
    names its lazy exports.

    Usage in a package ``__init__``: ``__getattr__, __dir__ = lazy_exports(__name__)``.
    """
    namespace = sys.modules[package].__dict__
    exports = cache(lambda: _checked(package, namespace))

    def __getattr__(name: str) -> Any:
        found = exports().get(name)
        if found is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = found
        value = getattr(importlib.import_module(module), attribute)
        namespace[name] = value  # later look-ups are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *exports()})

    return __getattr__, __dir__
