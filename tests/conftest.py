"""Fixtures shared by unit and integration tests."""

from __future__ import annotations

import pytest

from tests.geoip_data import GeoipFiles, write_geoip_databases


@pytest.fixture(scope="session")
def geoip_files(tmp_path_factory: pytest.TempPathFactory) -> GeoipFiles:
    """City and ASN test databases, written once per run from ``tests/geoip_data.py``."""
    return write_geoip_databases(tmp_path_factory.mktemp("geoip"))
