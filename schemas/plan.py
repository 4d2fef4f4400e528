"""Stage-plan contract: what the IdP shows the browser at logout, in order.

A plan is built by the worker for a logout event that carries a ``plan_id``. Its stages are
numbered explicitly: the IdP's own logout at index 0, then an **iframe logout stage at
index 1** when any provider session is logged out in hidden iframes (OIDC Front-Channel
URIs, SAML HTTP-Redirect requests), then a **native logout stage** (SAML HTTP-POST or
redirect navigations, one after another) at index 2, or at index 1 when there is no iframe
stage. Back-channel deliveries run server side and are not stages. Entries hold what is
needed to render them and no secret (a signed SAML request is not a secret: it is what the
browser carries).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator

__all__ = [
    "IFRAME_STAGE",
    "LOGOUT_STAGE",
    "NATIVE_STAGE",
    "InitiatorResponse",
    "LogoutPlan",
    "PlanEntry",
    "PlanStage",
    "StageKind",
]

StageKind = Literal["logout", "iframe_logout", "native_logout"]
LOGOUT_STAGE: StageKind = "logout"
IFRAME_STAGE: StageKind = "iframe_logout"
NATIVE_STAGE: StageKind = "native_logout"


class _Contract(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PlanEntry(_Contract):
    """One provider session to log out in the browser."""

    entry_id: str = Field(description="Unique in the plan; the browser reports outcomes by it.")
    delivery_id: str = Field(description="The delivery this entry carries out.")
    provider: str
    protocol: str
    binding: Literal["iframe", "redirect", "post"] = Field(
        description="iframe: load url in a hidden frame; redirect: navigate to url; "
        "post: auto-submit a form to url with the fields of form."
    )
    url: str
    form: dict[str, str] = Field(
        default_factory=dict,
        description="post: the form's fields, named by the protocol (SAML: SAMLRequest, "
        "RelayState).",
    )
    timeout_ms: int = Field(description="How long the browser waits for this entry.")

    @model_validator(mode="before")
    @classmethod
    def _stored_before_form(cls, data: Any) -> Any:
        """A plan stored before ``form`` (``saml_request``, ``relay_state``) reads as one."""
        if not isinstance(data, dict) or not {"saml_request", "relay_state"} & data.keys():
            return data
        data = dict(data)
        older = {"SAMLRequest": data.pop("saml_request", None)}
        older["RelayState"] = data.pop("relay_state", None)
        form = {name: value for name, value in older.items() if value is not None}
        return {**data, "form": {**form, **data.get("form", {})}}


class PlanStage(_Contract):
    """One stage; ``index`` is its position in the IdP's flow, stated, never implied."""

    index: int = Field(ge=0)
    kind: StageKind
    entries: list[PlanEntry] = Field(default_factory=list)


class InitiatorResponse(_Contract):
    """A SAML SP started this logout in the browser and waits for the IdP's LogoutResponse.

    Sent last, once the stages are done: ``Success``, with ``PartialLogout`` when any
    participant failed or could not be reached.
    """

    provider: str
    protocol: str
    in_response_to: str
    relay_state: str | None = None


class LogoutPlan(_Contract):
    """The front-channel stage plan of one logout."""

    plan_id: str
    event_id: str
    user_id: str | None = None
    session_id: str | None = None
    created_at: AwareDatetime
    stages: list[PlanStage]
    respond_to: InitiatorResponse | None = None
    timeout_ms: int = Field(description="The iframe stage's overall timeout.")

    def stage(self, kind: StageKind) -> PlanStage | None:
        """The stage of ``kind``, if the plan has one."""
        return next((stage for stage in self.stages if stage.kind == kind), None)
