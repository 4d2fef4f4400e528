"""docker-compose.yml stays in step with the code: real settings, real commands."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import click
import pytest
import yaml

from orchestrator import Settings
from workers.cli import main

COMPOSE = Path(__file__).resolve().parents[2] / "docker-compose.yml"


def _compose() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))
    return document


def _interpolated(value: str) -> str:
    """``value`` as compose reads it when the variable is unset: ``${NAME:-default}`` is the
    default."""
    return re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", value)


def test_services_are_the_documented_ones() -> None:
    """Redis, PostgreSQL, a one-shot migration, a scalable worker and the HTTP service."""
    services = _compose()["services"]
    assert set(services) == {"redis", "postgres", "migrate", "worker", "api"}
    for scalable in ("worker", "api"):
        assert "container_name" not in services[scalable], "would prevent --scale"
        deps = services[scalable]["depends_on"]
        assert deps["migrate"]["condition"] == "service_completed_successfully"
        assert deps["redis"]["condition"] == "service_healthy"
    assert services["migrate"]["restart"] == "no"


@pytest.mark.parametrize("service", ["redis", "postgres", "worker", "api"])
def test_long_running_services_have_healthchecks(service: str) -> None:
    """Each server has a healthcheck; the service's asks /readyz, the worker's its metrics
    port (which it serves because LOGOUT_METRICS_PORT is set)."""
    definition = _compose()["services"][service]
    check = " ".join(definition["healthcheck"]["test"])
    if service == "api":
        assert "http://127.0.0.1:8080/readyz" in check
        assert "--port 8080" in " ".join(definition["command"])
    if service == "worker":
        port = definition["environment"]["LOGOUT_METRICS_PORT"]
        assert f"http://127.0.0.1:{port}/metrics" in check


@pytest.mark.parametrize("service", ["migrate", "worker", "api"])
def test_environment_names_real_settings(service: str) -> None:
    """Every LOGOUT_* variable is a setting the code reads."""
    environment = _compose()["services"][service]["environment"]
    names = {key.removeprefix("LOGOUT_").lower() for key in environment}
    assert names <= set(Settings.model_fields), names - set(Settings.model_fields)
    values: dict[str, Any] = {
        k.removeprefix("LOGOUT_").lower(): _interpolated(v) for k, v in environment.items()
    }
    if "api_tokens" in values:  # JSON, as the environment gives it
        values["api_tokens"] = json.loads(values["api_tokens"])
    Settings.load(None, **values)


@pytest.mark.parametrize("service", ["migrate", "worker", "api"])
def test_commands_exist(service: str) -> None:
    """Each service's command is a real subcommand with real options."""
    args = _compose()["services"][service]["command"]
    context = main.make_context("logout-orchestrator", list(args), resilient_parsing=True)
    name, command, rest = main.resolve_command(context, list(args))
    assert isinstance(command, click.Command), name
    if isinstance(command, click.Group):
        name, command, rest = command.resolve_command(context, rest)
        assert command is not None
    assert command is not None
    command.make_context(str(name), rest)


def test_data_volume_is_shared() -> None:
    """Workers share the data directory, so they sign with one generated key."""
    compose = _compose()
    for service in ("migrate", "worker"):
        assert "logout-data:/var/lib/logout-orchestrator" in compose["services"][service]["volumes"]
    dockerfile = COMPOSE.with_name("Dockerfile").read_text(encoding="utf-8")
    assert "ENV LOGOUT_DATA_DIR=/var/lib/logout-orchestrator" in dockerfile


def test_image_installs_dependencies_before_the_source_and_no_tests() -> None:
    """The dependency layer comes from pyproject.toml alone, before any package is copied;
    only the packages are copied (no tests, no benchmarks), and .dockerignore keeps them out
    of the build context too."""
    dockerfile = COMPOSE.with_name("Dockerfile").read_text(encoding="utf-8")
    copies = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")]
    assert copies == ["pyproject.toml", "schemas", "orchestrator", "protocols", "workers", "api"]
    dependencies = dockerfile.index("pip install --no-cache-dir --only-binary lxml,xmlsec")
    assert dependencies < dockerfile.index("COPY schemas")
    ignored = COMPOSE.with_name(".dockerignore").read_text(encoding="utf-8").split()
    assert {"tests", "bench"} <= set(ignored)
