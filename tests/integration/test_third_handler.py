"""The protocol contract stands alone: a third handler, a distribution of its own
(``tests/plugins/cas``: CAS back-channel logout), installed through its entry point, with its
own settings section and identifier model (a service ticket), logs a session out over real
HTTP, with nothing of it in ``orchestrator/``."""

from __future__ import annotations

import json
import shutil
import tomllib
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs

import pytest
from lxml import etree
from sqlalchemy import select

from orchestrator.store import Delivery, ProviderSession

from .servers import RecordingEndpoint, serving
from .support import Stack, logout_event
from .test_backchannel_http import python_path

pytestmark = pytest.mark.integration

DISTRIBUTION = Path(__file__).parent.parent / "plugins" / "cas"
SAMLP = "urn:oasis:names:tc:SAML:2.0:protocol"


def install(distribution: Path, target: Path) -> str:
    """The distribution's package copied to ``target`` with a ``.dist-info`` made from its
    ``pyproject.toml`` (name, version, entry points), as pip would lay it out; the
    ``PYTHONPATH`` that makes it installed."""
    project = tomllib.loads((distribution / "pyproject.toml").read_text("utf-8"))["project"]
    for package in distribution.iterdir():
        if (package / "__init__.py").exists():
            shutil.copytree(package, target / package.name)
    info = target / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n",
        encoding="utf-8",
    )
    groups = project["entry-points"]
    (info / "entry_points.txt").write_text(
        "".join(
            f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in entries.items())
            for group, entries in groups.items()
        ),
        encoding="utf-8",
    )
    return python_path(target)


@pytest.fixture
def service() -> Iterator[RecordingEndpoint]:
    """A CAS-protected service's logout endpoint on 127.0.0.1: records each logoutRequest."""
    with serving(RecordingEndpoint()) as server:
        yield server


def test_a_third_handler_logs_out_through_its_entry_point(
    stack: Stack, tmp_path: Path, service: RecordingEndpoint
) -> None:
    """providers load, sessions import (the handler's identifier model refuses a ``sid``,
    takes a ``ticket``) and a worker's logout: the service gets a logoutRequest naming the
    ticket, its ID from the handler's own setting (LOGOUT_CAS_REQUEST_ID_PREFIX)."""
    env = {
        "PYTHONPATH": install(DISTRIBUTION, tmp_path / "site"),
        "LOGOUT_CAS_REQUEST_ID_PREFIX": "CAS-IT-",
        "LOGOUT_EGRESS_ALLOW": "127.0.0.1",
    }
    stack.protocols = ["cas"]
    providers = tmp_path / "providers.toml"
    url = service.url("/cas/logout")
    providers.write_text(
        f'[[providers]]\nname = "library"\nprotocol = "cas"\nservice_url = "{url}"\n',
        encoding="utf-8",
    )
    loaded = stack.cli("providers", "load", str(providers), env=env)
    assert loaded.returncode == 0, loaded.stderr

    def lines(identifiers: dict[str, str]) -> Path:
        path = tmp_path / "sessions.jsonl"
        records = [
            {"kind": "session", "session_id": "s-cas", "user_id": "alice"},
            {
                "kind": "provider_session",
                "session_id": "s-cas",
                "provider": "library",
                "identifiers": identifiers,
            },
        ]
        path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
        return path

    refused = stack.cli("sessions", "import", str(lines({"sid": "abc"})), env=env)
    assert refused.returncode == 2, refused.stderr
    assert "sid: is not an identifier of protocol 'cas'" in refused.stderr
    assert "ticket" in refused.stderr
    imported = stack.cli("sessions", "import", str(lines({"ticket": "ST-1-a2b3"})), env=env)
    assert imported.returncode == 0, imported.stderr
    with stack.db() as db:
        stored = db.scalar(select(ProviderSession.identifiers))
    assert stored == {"ticket": "ST-1-a2b3"}

    stack.start_worker(env)
    with stack.publisher() as publisher:
        publisher.publish(logout_event("s-cas"))

    def delivered() -> bool:
        with stack.db() as db:
            return db.scalar(select(Delivery.status)) == "succeeded"

    stack.wait_for(delivered, what="the CAS delivery to succeed", timeout=60)
    with service.lock:
        [(path, content_type, body)] = service.received
    form = parse_qs(body.decode())
    assert (path, content_type) == ("/cas/logout", "application/x-www-form-urlencoded")
    request = etree.fromstring(form["logoutRequest"][0].encode())
    assert request.tag == f"{{{SAMLP}}}LogoutRequest"
    assert request.get("ID", "").startswith("CAS-IT-")
    assert request.findtext(f"{{{SAMLP}}}SessionIndex") == "ST-1-a2b3"


def test_the_distribution_touches_nothing_in_the_host() -> None:
    """The third handler imports ``protocols`` and ``schemas`` only, never ``orchestrator``."""
    for source in DISTRIBUTION.rglob("*.py"):
        text = source.read_text("utf-8")
        assert "orchestrator" not in text.replace("logout_orchestrator", ""), source
