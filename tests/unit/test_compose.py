"""docker-compose.yml stays in step with the code: real settings, real commands."""

from __future__ import annotations

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


def test_services_are_the_documented_ones() -> None:
    """Redis, PostgreSQL, a one-shot migration and a scalable worker."""
    services = _compose()["services"]
    assert set(services) == {"redis", "postgres", "migrate", "worker"}
    assert "container_name" not in services["worker"], "would prevent --scale"
    assert services["migrate"]["restart"] == "no"
    worker_deps = services["worker"]["depends_on"]
    assert worker_deps["migrate"]["condition"] == "service_completed_successfully"


@pytest.mark.parametrize("service", ["migrate", "worker"])
def test_environment_names_real_settings(service: str) -> None:
    """Every LOGOUT_* variable is a setting the code reads."""
    environment = _compose()["services"][service]["environment"]
    names = {key.removeprefix("LOGOUT_").lower() for key in environment}
    assert names <= set(Settings.model_fields), names - set(Settings.model_fields)
    Settings.load(None, **{k.removeprefix("LOGOUT_").lower(): v for k, v in environment.items()})


@pytest.mark.parametrize("service", ["migrate", "worker"])
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
