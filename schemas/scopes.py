"""The HTTP service's token scopes. Free of pydantic: the CLI offers them as choices when it
is imported, which must stay cheap."""

from __future__ import annotations

from typing import Final, Literal, get_args

__all__ = ["SCOPES", "Scope"]

Scope = Literal["events:write", "sessions:write", "read", "ssf:streams"]
#: Every scope a token can hold: publish events; report session starts, sightings and binding
#: checks; read logouts, plans and (unless public) metrics; manage the holder's own SSF
#: streams (a Shared Signals receiver registering itself).
SCOPES: Final[tuple[Scope, ...]] = get_args(Scope)
