"""Where each setting's value came from: an option, a ``LOGOUT_*`` variable, the TOML file,
or its default; so that a refused value's message names what to fix."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from pydantic import BaseModel
from pydantic_core import ErrorDetails

from orchestrator.settings_environment import ENV_PREFIX, MOVED, moved_message
from schemas.durations import describe_duration, duration_fields
from schemas.hints import closest

__all__ = ["SettingsOrigins"]

_BOUND_ERRORS: Final = frozenset(
    {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
)


class SettingsOrigins:
    """Names the source of a refused value: an option, an environment variable or the file."""

    def __init__(self, given: Mapping[str, Any], path: str | Path | None) -> None:
        self.given = dict(given)
        self.path = path
        self._variables = {
            variable.upper().removeprefix(ENV_PREFIX).lower(): variable
            for variable in os.environ
            if variable.upper().startswith(ENV_PREFIX)
        }
        self._file_keys: set[str] = set()
        if path is not None:
            import tomllib  # a refused value from the file: which keys it holds

            try:
                self._file_keys = set(tomllib.loads(Path(path).read_text(encoding="utf-8")))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError):
                self._file_keys = set()

    def label(self, field: str) -> str:
        """Where ``field``'s value came from, as the start of a message ("" for a default)."""
        if field in self.given:
            return "option: "
        if field in self._variables:
            return f"{self._variables[field]} (environment): "
        if field in self._file_keys and self.path is not None:
            return f"{self.path}: "
        return ""

    def section_label(self, protocol: str, field: str) -> str:
        """Where a protocol handler's setting came from, as the start of a message."""
        if "protocol_settings" in self.given:
            return "option: "
        variable = self._variables.get(f"{protocol}_{field}")
        if variable is not None:
            return f"{variable} (environment): "
        if "protocols" in self._file_keys and self.path is not None:
            return f"{self.path}: "
        return ""

    def origin(self, field: str) -> str:
        """``field`` and where its value came from, as ``Settings.origin`` says it."""
        if field in self.given:
            return f"{field} (option)"
        if field in self._variables:
            return f"{self._variables[field]} (environment)"
        if field in self._file_keys and self.path is not None:
            return f"{field} in {self.path}"
        return self.default(field)

    @staticmethod
    def default(field: str) -> str:
        """A field left at its default: named with the variable that would set it."""
        return f"{field} ({ENV_PREFIX}{field.upper()})"

    def describe(self, error: ErrorDetails, model: type[BaseModel]) -> str:
        """One refused value of ``model``: its source, the field (and nested place), and the
        reason."""
        loc = [str(part) for part in error["loc"]]
        if not loc:  # a check of several fields: say where each one it names came from
            message = error["msg"].removeprefix("Value error, ")
            named = [f for f in model.model_fields if re.search(rf"\b{f}\b", message)]
            sources = "; ".join(self.origin(field) for field in named)
            return f"settings: {message}" + (f" (set by {sources})" if sources else "")
        field = loc[0]
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden" and field in MOVED:
            message = moved_message(field)
        elif error["type"] == "extra_forbidden":
            close = closest(field, model.model_fields)
            message += f" ({field} is not a setting; did you mean {close}?)" if close else ""
        unit = duration_fields(model).get(field)
        if unit is not None and unit.name and error["type"] in _BOUND_ERRORS:
            limit = next(iter(error.get("ctx", {}).values()), None)
            message += f" {unit.name}"
            if isinstance(limit, int | float):
                message += f" ({describe_duration(unit.size * limit)})"
            got = error.get("input")
            if isinstance(got, int | float) and got >= 0:
                message += f"; got {describe_duration(unit.size * got)}"
        return f"{self.label(field)}{'.'.join(loc)}: {message}"
