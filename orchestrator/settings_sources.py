"""Where settings values come from: keyword values, ``PREFIX_*`` variables and a TOML file.

Read for any pydantic model, so the one settings class is plain pydantic and a command that
only reads its settings does not load pydantic-settings. The rules are pydantic-settings' for
what the settings use: variable names match without regard to case; a variable of a container
field (a dict, a list, a model) is JSON unless the field is marked :data:`NoDecode`; sources
merge by priority, nested dicts key by key (``overrides`` > environment > file).
"""

from __future__ import annotations

import json
import os
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo

from orchestrator.errors import ConfigurationError

__all__ = ["NoDecode", "read_sources"]


class NoDecode:
    """Field marker (``Annotated[list[str], NoDecode]``): its variable reaches the field's own
    validators as the text it is, not decoded as JSON."""


_CONTAINERS = (BaseModel, Mapping, Sequence, tuple, set, frozenset)


def _is_container(annotation: Any) -> bool:
    kind = get_origin(annotation) or annotation
    return (
        isinstance(kind, type)
        and issubclass(kind, _CONTAINERS)
        and not issubclass(kind, str | bytes)
    )


def _json_rule(field: FieldInfo) -> tuple[bool, bool]:
    """(whether the field's variable is JSON, whether text that is no JSON stays text).

    A union with a container (``dict | None``) may also be given as text, as in
    pydantic-settings; the field's validation then judges it.
    """
    if NoDecode in field.metadata:
        return False, False
    annotation = field.annotation
    if _is_container(annotation):
        return True, False
    if get_origin(annotation) in (Union, types.UnionType) and any(
        _is_container(member) for member in get_args(annotation)
    ):
        return True, True
    return False, False


def _environment(model: type[BaseModel], prefix: str, environ: Mapping[str, str]) -> dict[str, Any]:
    """The values ``PREFIX_<FIELD>`` variables give the model's fields."""
    variables = {name.lower(): value for name, value in environ.items()}
    values: dict[str, Any] = {}
    for name, field in model.model_fields.items():
        text = variables.get(f"{prefix}{name}".lower())
        if text is None:
            continue
        decode, lenient = _json_rule(field)
        if not decode:
            values[name] = text
            continue
        try:
            values[name] = json.loads(text)
        except ValueError as exc:
            if not lenient:
                raise ConfigurationError(
                    f"invalid settings: {prefix}{name.upper()} (environment): {name}: "
                    f"not valid JSON ({exc})"
                ) from exc
            values[name] = text
    return values


def _file(path: Path) -> dict[str, Any]:
    """The TOML file's top-level keys; a file that cannot be read or parsed is a
    :class:`ConfigurationError` naming it and the fix. Only a regular file is read, and at
    most :data:`~protocols.files.CONFIG_MAX` bytes (``/dev/zero`` or a FIFO is refused)."""
    import tomllib  # only when there is a file to read

    from protocols.files import CONFIG_MAX, UnreadableFileError, read_regular_file

    try:
        text = read_regular_file(path, CONFIG_MAX).decode("utf-8")
        return tomllib.loads(text)
    except UnreadableFileError as exc:
        raise ConfigurationError(
            f"config file {path}: {exc}; fix --config (LOGOUT_CONFIG)"
        ) from exc
    except tomllib.TOMLDecodeError as exc:  # the message ends "(at line L, column C)"
        raise ConfigurationError(
            f"config file {path}: not valid TOML: {exc}; fix that line of the file"
        ) from exc
    except RecursionError as exc:
        raise ConfigurationError(
            f"config file {path}: not valid TOML: nested too deeply to read; flatten it"
        ) from exc
    except UnicodeDecodeError as exc:
        raise ConfigurationError(
            f"config file {path}: not UTF-8 text (byte {exc.start}); save it as UTF-8"
        ) from exc


def _merge(low: Mapping[str, Any], high: Mapping[str, Any]) -> dict[str, Any]:
    """``low`` updated by ``high``; where both hold a dict, merged key by key."""
    merged = dict(low)
    for key, value in high.items():
        below = merged.get(key)
        if isinstance(below, dict) and isinstance(value, dict):
            merged[key] = _merge(below, value)
        else:
            merged[key] = value
    return merged


def read_sources(
    model: type[BaseModel],
    prefix: str,
    values: Mapping[str, Any],
    path: Path | None = None,
    environ: Mapping[str, str] = os.environ,
    *,
    shape: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The values to validate ``model`` with: ``values``, then the environment, then ``path``.

    The file is read first, then the environment: a file that cannot be read or is no TOML,
    or a container variable that is no JSON, raises :class:`ConfigurationError` naming it.
    ``shape`` rearranges the file's values (say a table into fields); ``extra`` adds values
    the environment gives besides the model's own variables.
    """
    from_file = _file(path) if path is not None else {}
    if shape is not None:
        from_file = shape(from_file)
    from_environment = _merge(_environment(model, prefix, environ), extra or {})
    return _merge(_merge(from_file, from_environment), values)
