"""Lazy package exports (PEP 562): a package names what it exports and where it lives, and
each name is imported the first time it is used, so ``import package`` stays cheap.

A command that needs one settings object does not pay for the SAML, HTTP and broker stacks.
Packages also import the names under ``TYPE_CHECKING``, so type checkers see them as usual.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    package: str, exports: Mapping[str, Sequence[str]]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for ``package``; ``exports`` maps module to names.

    Usage in a package ``__init__``: ``__getattr__, __dir__ = lazy_exports(__name__, {...})``.
    """
    where = {name: module for module, names in exports.items() for name in names}
    # Importing a submodule sets it as the package's attribute, and then no __getattr__ is
    # asked: a name shared by an export and a submodule must stay an eager import.
    shared = {module.rsplit(".", 1)[-1] for module in exports} & set(where)
    if shared:
        raise ValueError(f"{package}: exports named like its submodules: {sorted(shared)}")
    namespace = importlib.import_module(package).__dict__
    # Each name in __all__ must be importable: eagerly imported above, or mapped here.
    unmapped = set(namespace.get("__all__", ())) - set(where) - set(namespace)
    if unmapped:
        raise ValueError(f"{package}: __all__ names no module exports: {sorted(unmapped)}")

    def __getattr__(name: str) -> Any:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value  # later look-ups are plain attribute reads
        return value

    def __dir__() -> list[str]:
        return sorted({*namespace, *where})

    return __getattr__, __dir__
