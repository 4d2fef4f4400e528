"""JSON Schema files generated from the models, for publishers in other languages.

``python -m schemas.jsonschema`` rewrites ``schemas/json/``; a test fails when they drift.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pydantic import TypeAdapter

from schemas.audit import AuditRecord
from schemas.events import event_adapter
from schemas.plan import LogoutPlan
from schemas.registry import registry_record_adapter

__all__ = ["SCHEMA_DIR", "render_schemas", "write_schemas"]

SCHEMA_DIR = Path(__file__).parent / "json"
_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _document(adapter: TypeAdapter[Any], title: str, description: str) -> dict[str, Any]:
    schema = adapter.json_schema(mode="validation")
    return {"$schema": _DIALECT, "title": title, "description": description, **schema}


def render_schemas() -> dict[str, str]:
    """File name to file text, exactly as they are committed."""
    documents = {
        "event.schema.json": _document(
            event_adapter, "LogoutEvent", "An event an IdP component publishes for the worker."
        ),
        "logout-plan.schema.json": _document(
            TypeAdapter(LogoutPlan),
            "LogoutPlan",
            "The front-channel stage plan the IdP shows the browser at logout.",
        ),
        "audit-record.schema.json": _document(
            TypeAdapter(AuditRecord), "AuditRecord", "One record of the logout audit trail."
        ),
        "session-import.schema.json": _document(
            registry_record_adapter,
            "SessionImportLine",
            "One line of a `logout-orchestrator sessions import` JSON-lines file.",
        ),
    }
    return {
        name: json.dumps(doc, indent=2, sort_keys=True) + "\n" for name, doc in documents.items()
    }


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema file; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        written.append(path)
    return written


if __name__ == "__main__":  # pragma: no cover - a maintainer's command
    for path in write_schemas():
        sys.stdout.write(f"wrote {path.name}\n")
