"""What the front-channel app reads and hands on: the iframe page's reports, a plan's
entries, and the step as the handler built it."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.frontchannel.requests import Problem
from protocols import Channel, FrontchannelEntry, ProviderInfo
from schemas import LogoutPlan, PlanEntry
from schemas.plan import IFRAME_STAGE, NATIVE_STAGE

__all__ = ["MAX_ID", "Report", "Responder", "entry_of", "sent_entry"]

#: The longest plan, entry or delivery id accepted from the browser.
MAX_ID = 255


class Report(BaseModel):
    """What the iframe page reports for one frame."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    entry_id: str = Field(min_length=1, max_length=MAX_ID)
    outcome: Literal["loaded", "timed_out"]
    elapsed_ms: int = Field(ge=0, le=3_600_000)


@runtime_checkable
class Responder(Protocol):
    """A handler that can answer the provider that started the logout (SAML)."""

    def logout_response_entry(
        self,
        provider: ProviderInfo,
        *,
        in_response_to: str,
        partial: bool,
        relay_state: str | None,
        now: datetime,
    ) -> FrontchannelEntry: ...


def entry_of(plan: LogoutPlan, kind: str, entry_id: str) -> PlanEntry:
    """The ``iframe`` or ``native`` entry ``entry_id`` of ``plan``; a 400 problem if none."""
    stage = plan.stage(IFRAME_STAGE if kind == "iframe" else NATIVE_STAGE)
    for entry in stage.entries if stage is not None else ():
        if entry.entry_id == entry_id:
            return entry
    raise Problem(400, f"plan {plan.plan_id!r} has no {kind} entry {entry_id!r}")


def sent_entry(entry: PlanEntry) -> FrontchannelEntry:
    """The step as its handler built it, for :meth:`ProtocolHandler.frontchannel_answer`."""
    channel = (
        Channel.FRONTCHANNEL_IFRAME if entry.binding == "iframe" else Channel.FRONTCHANNEL_NATIVE
    )
    return FrontchannelEntry(
        provider=entry.provider,
        protocol=entry.protocol,
        channel=channel,
        binding=entry.binding,
        url=entry.url,
        form=entry.form,
    )
