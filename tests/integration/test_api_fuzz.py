"""A property-based fuzzer (schemathesis) against /v1/openapi.json: whatever it sends, valid
or not, the service answers without a 5xx."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.geoip_data import GeoipFiles

from .api_server import start_api
from .support import Stack, tail

pytestmark = pytest.mark.integration

SCHEMATHESIS = Path(sys.executable).parent / "schemathesis"
#: Serializers for the media types schemathesis lacks (application/secevent+jwt).
HOOKS = {
    "SCHEMATHESIS_HOOKS": "tests.integration.schemathesis_hooks",
    "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
}


def test_no_server_error_on_generated_requests(
    stack: Stack, tmp_path: Path, geoip_files: GeoipFiles
) -> None:
    """Every operation, with generated (valid and invalid) requests and the token of every
    scope: no 5xx. Kept short (a fixed seed, few examples per operation)."""
    api = start_api(
        stack,
        {
            "LOGOUT_GEOIP_CITY_DB": str(geoip_files.city),
            "LOGOUT_GEOIP_ASN_DB": str(geoip_files.asn),
            "LOGOUT_API_WAIT_MAX": "0.5",  # long polls of unknown plans end quickly
        },
    )
    try:
        with api.client("all") as client:
            document = tmp_path / "openapi.json"
            document.write_text(json.dumps(client.get("/v1/openapi.json").json()))
        run = subprocess.run(
            [
                str(SCHEMATHESIS),
                "run",
                str(document),
                "--url",
                api.base_url,
                "--header",
                f"Authorization: Bearer {api.tokens['all']}",
                "--checks",
                "not_a_server_error",
                "--phases",
                "examples,coverage,fuzzing",
                "--max-examples",
                "25",
                "--seed",
                "14",
                "--request-timeout",
                "10",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            check=False,
            cwd=tmp_path,
            env={**os.environ, **HOOKS},
        )
    finally:
        api.stop()
    assert run.returncode == 0, f"{tail(run.stdout)}\n{tail(api.output())}"
    operations = sum(
        method in {"get", "put", "post", "delete", "patch"}
        for item in json.loads(document.read_text())["paths"].values()
        for method in item
    )
    assert operations >= 29, "the document lost operations"
    assert f"Operations:       {operations} selected / {operations} total" in run.stdout, run.stdout
    fuzzed = re.search(r"Fuzzing \(in [^)]*\)\s+\S+ (\d+) passed", run.stdout)
    assert fuzzed is not None, run.stdout
    assert int(fuzzed[1]) == operations, run.stdout  # every operation was fuzzed
