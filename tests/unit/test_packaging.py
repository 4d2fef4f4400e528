"""What the distribution ships besides code: the licence its metadata names, and py.typed."""

from __future__ import annotations

import tomllib
from importlib.resources import files
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_license_file_matches_the_declared_licence() -> None:
    """pyproject says Apache-2.0 and ships LICENSE; the file is that licence's text."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "Apache-2.0"
    assert project["license-files"] == ["LICENSE"]
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert "Apache License" in text
    assert "Version 2.0, January 2004" in text


@pytest.mark.parametrize("package", ["schemas", "orchestrator", "protocols", "workers"])
def test_packages_are_marked_typed(package: str) -> None:
    """Each package carries py.typed (PEP 561), so users' type checkers read our hints."""
    assert files(package).joinpath("py.typed").is_file()
