"""A small ASGI app an IdP mounts to serve its logout plans to the browser (Starlette;
``pip install 'logout-orchestrator[web]'``).

Routes, relative to where it is mounted (every plan page needs only the plan's id, which
must be unguessable: it is the capability):

==========================================  ===========================================
``GET  /plans/{plan_id}``                   303 to the plan's first front-channel stage
``GET  /plans/{plan_id}/iframe``            the iframe stage page
``POST /plans/{plan_id}/report``            ``{"entry_id", "outcome", "elapsed_ms"}``:
                                            ``frontchannel.loaded`` / ``.timed_out``
``GET  /plans/{plan_id}/native``            303 to the first native step without outcome,
                                            or to ``done``
``GET  /plans/{plan_id}/native/{entry_id}`` one native step page
``POST /plans/{plan_id}/native/{entry_id}/skip``  ``reason=timeout|unreachable|returned``:
                                            ``frontchannel.skipped``
``GET|POST /native/return``                 the provider's answer; its handler says
                                            which step (delivery) it answers and
                                            with what outcome:
                                            ``frontchannel.completed``
``GET  /plans/{plan_id}/done``              the IdP's LogoutResponse to the SP that
                                            started (``plan.respond_to``), else 303 to
                                            ``next_url``
==========================================  ===========================================

Where providers send their answers (for SAML: the SLO response location, ``slo_urls`` of
``[protocols.saml]`` in the IdP metadata) is where ``/native/return`` is mounted.
Database work runs in Starlette's thread pool.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import structlog
from pydantic import ValidationError
from sqlalchemy import select
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route

from orchestrator.errors import InputError
from orchestrator.frontchannel.outcomes import Ledger
from orchestrator.frontchannel.plan_entries import (
    MAX_ID,
    Report,
    Responder,
    entry_of,
    sent_entry,
)
from orchestrator.frontchannel.render import (
    render_iframe_stage,
    render_native_step,
    render_post_form,
)
from orchestrator.frontchannel.requests import (
    Problem,
    html_page,
    no_store,
    read_form,
    see_other,
    wrap,
)
from orchestrator.frontchannel.urls import check_local_url, check_url
from orchestrator.request_body import media_type, read_body
from orchestrator.runtime import Runtime
from orchestrator.store import Database, Provider, utcnow
from protocols import (
    FrontchannelAnswer,
    ProtocolHandler,
    ProviderInfo,
)
from schemas import AuditType, LogoutPlan, PlanEntry
from schemas.errors import DeliveryError
from schemas.plan import IFRAME_STAGE, NATIVE_STAGE

__all__ = ["FrontchannelApp", "NextUrl", "create_app"]

_log = structlog.get_logger("logout.frontchannel")

#: Where the browser goes when the plan is done: a URL or path, or one per plan.
NextUrl = str | Callable[[LogoutPlan], str]

_REPORT_LIMIT = 2048
_SKIP_LIMIT = 1024
_SKIP_REASONS = frozenset({"timeout", "unreachable", "returned"})


@dataclass(frozen=True, slots=True)
class FrontchannelApp:
    """The app's parts, explicit: the database, the handlers, where the browser ends."""

    database: Database
    handlers: Mapping[str, ProtocolHandler]
    next_url: NextUrl
    probe: bool = True
    report_grace_ms: int = 1000
    answer_limit: int = 256 * 1024

    @property
    def ledger(self) -> Ledger:
        return Ledger(self.database)

    # -- helpers -------------------------------------------------------------------------

    @staticmethod
    def _base(request: Request, plan_id: str) -> str:
        return f"{request.scope.get('root_path', '')}/plans/{plan_id}"

    async def _plan(self, plan_id: str) -> LogoutPlan:
        if len(plan_id) > MAX_ID:
            raise Problem(404, "no such logout plan")
        plan = await run_in_threadpool(self.ledger.plan, plan_id)
        if plan is None:
            raise Problem(404, f"no logout plan {plan_id!r} (unknown, or not built yet)")
        return plan

    def _final_url(self, plan: LogoutPlan) -> str:
        url = self.next_url(plan) if callable(self.next_url) else self.next_url
        return check_local_url(url, "next_url")

    def _provider(self, name: str, handler: ProtocolHandler) -> ProviderInfo | None:
        with self.database() as db:
            row = db.scalar(select(Provider).where(Provider.name == name))
        if row is None or row.protocol != handler.protocol:
            return None
        try:
            settings = handler.stored_settings(row.name, row.settings)
        except InputError:
            return None
        return ProviderInfo(
            row.name, row.protocol, row.enabled, row.full_logout_on_rp_initiated, settings
        )

    # -- endpoints -----------------------------------------------------------------------

    async def start(self, request: Request) -> StarletteResponse:
        plan = await self._plan(request.path_params["plan_id"])
        base = self._base(request, plan.plan_id)
        if plan.stage(IFRAME_STAGE) is not None:
            return see_other(f"{base}/iframe")
        return see_other(f"{base}/native")

    async def iframe(self, request: Request) -> StarletteResponse:
        plan = await self._plan(request.path_params["plan_id"])
        base = self._base(request, plan.plan_id)
        if plan.stage(IFRAME_STAGE) is None:
            return see_other(f"{base}/native")
        page = render_iframe_stage(
            plan,
            report_url=f"{base}/report",
            next_url=f"{base}/native",
            report_grace_ms=self.report_grace_ms,
        )
        return html_page(page)

    async def report(self, request: Request) -> StarletteResponse:
        plan = await self._plan(request.path_params["plan_id"])
        if media_type(request) != "application/json":
            raise Problem(415, "expected application/json")
        try:
            report = Report.model_validate_json(await read_body(request, _REPORT_LIMIT))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            raise Problem(400, f"invalid report: {problems}") from exc
        entry = entry_of(plan, "iframe", report.entry_id)
        kind = (
            AuditType.FRONTCHANNEL_LOADED
            if report.outcome == "loaded"
            else AuditType.FRONTCHANNEL_TIMED_OUT
        )
        recorded = await run_in_threadpool(
            self.ledger.record,
            plan,
            entry,
            kind,
            report.outcome,
            {"elapsed_ms": report.elapsed_ms, "timeout_ms": entry.timeout_ms},
        )
        body = {"entry_id": entry.entry_id, "recorded": recorded.new, "outcome": recorded.outcome}
        return no_store(JSONResponse(body))

    async def native(self, request: Request) -> StarletteResponse:
        plan = await self._plan(request.path_params["plan_id"])
        base = self._base(request, plan.plan_id)
        stage = plan.stage(NATIVE_STAGE)
        if stage is not None and stage.entries:
            outcomes = await run_in_threadpool(self.ledger.outcomes, plan)
            for entry in stage.entries:
                if entry.entry_id not in outcomes:
                    return see_other(f"{base}/native/{entry.entry_id}")
        return see_other(f"{base}/done")

    async def step(self, request: Request) -> StarletteResponse:
        plan = await self._plan(request.path_params["plan_id"])
        entry = entry_of(plan, "native", request.path_params["entry_id"])
        base = self._base(request, plan.plan_id)
        outcomes = await run_in_threadpool(self.ledger.outcomes, plan)
        if entry.entry_id in outcomes:  # done already: never run a step twice
            return see_other(f"{base}/native")
        page = render_native_step(
            plan, entry.entry_id, skip_url=f"{base}/native/{entry.entry_id}/skip", probe=self.probe
        )
        return html_page(page)

    async def skip(self, request: Request) -> StarletteResponse:
        plan = await self._plan(request.path_params["plan_id"])
        entry = entry_of(plan, "native", request.path_params["entry_id"])
        form = await read_form(request, _SKIP_LIMIT)
        reason = form.get("reason", "")
        if reason not in _SKIP_REASONS or set(form) != {"reason"}:
            raise Problem(400, f"reason must be one of {', '.join(sorted(_SKIP_REASONS))}")
        await run_in_threadpool(
            self.ledger.record,
            plan,
            entry,
            AuditType.FRONTCHANNEL_SKIPPED,
            "skipped",
            {"reason": reason, "timeout_ms": entry.timeout_ms},
        )
        return see_other(f"{self._base(request, plan.plan_id)}/native")

    async def answer(self, request: Request) -> StarletteResponse:
        if request.method == "POST":
            form, query = await read_form(request, self.answer_limit), ""
        else:
            form, query = {}, request.url.query
            if len(query) > self.answer_limit:
                raise Problem(414, "query too long")
        answer = FrontchannelAnswer(method=request.method, query=query, form=form)
        found = (handler.answered_delivery(answer) for handler in self.handlers.values())
        delivery_id = next((found_id for found_id in found if found_id), None)
        if not delivery_id or len(delivery_id) > MAX_ID:
            raise Problem(400, "no handler recognises this answer: cannot tell its logout step")
        plan = await run_in_threadpool(self.ledger.plan_of_delivery, delivery_id)
        if plan is None:
            raise Problem(400, "the answer names no step of a logout plan")
        stage = plan.stage(NATIVE_STAGE)
        entry = next(
            (e for e in (stage.entries if stage else ()) if e.delivery_id == delivery_id), None
        )
        if entry is None:
            # An SP logged out in a frame may send its answer back inside that frame: the
            # frame's outcome is what the iframe page reports, so this only ends its load.
            return no_store(
                HTMLResponse(
                    "<!doctype html><title>Signed out</title>",
                    headers={"Content-Security-Policy": "default-src 'none'"},
                )
            )
        await run_in_threadpool(self._record_answer, plan, entry, answer)
        root = request.scope.get("root_path", "")
        return see_other(f"{root}/plans/{plan.plan_id}/native")

    def _record_answer(
        self, plan: LogoutPlan, entry: PlanEntry, answer: FrontchannelAnswer
    ) -> None:
        if entry.entry_id in self.ledger.outcomes(plan):
            return  # skipped before it came back, or a repeated answer: the first stands
        handler = self.handlers.get(entry.protocol)
        provider = self._provider(entry.provider, handler) if handler is not None else None
        detail: dict[str, Any] = {"binding_back": "post" if answer.method == "POST" else "redirect"}
        if handler is None or provider is None:
            outcome = "failed"
            detail["error"] = f"provider {entry.provider!r} or its handler is no longer configured"
        else:
            try:
                handler.frontchannel_answer(provider, sent_entry(entry), answer)
            except DeliveryError as exc:
                outcome, detail["error"] = "failed", exc.detail
                for name, value in exc.facts.items():
                    detail.setdefault(name, value)
            except NotImplementedError as exc:
                outcome, detail["error"] = "failed", str(exc)
            else:
                outcome = "success"
        self.ledger.record(plan, entry, AuditType.FRONTCHANNEL_COMPLETED, outcome, detail)

    async def done(self, request: Request) -> StarletteResponse:
        plan = await self._plan(request.path_params["plan_id"])
        final = self._final_url(plan)
        respond_to = plan.respond_to
        if respond_to is None:
            return see_other(final)
        handler = self.handlers.get(respond_to.protocol)
        provider = (
            await run_in_threadpool(self._provider, respond_to.provider, handler)
            if handler is not None
            else None
        )
        if not isinstance(handler, Responder) or provider is None:
            _log.warning(
                "cannot answer the provider that started the logout",
                plan_id=plan.plan_id,
                provider=respond_to.provider,
            )
            return see_other(final)
        partial = await run_in_threadpool(self.ledger.partial, plan)
        entry = await run_in_threadpool(
            lambda: handler.logout_response_entry(
                provider,
                in_response_to=respond_to.in_response_to,
                partial=partial,
                relay_state=respond_to.relay_state,
                now=utcnow(),
            )
        )
        _log.info(
            "logout response to the initiating provider",
            plan_id=plan.plan_id,
            event_id=plan.event_id,
            provider=respond_to.provider,
            partial=partial,
            binding=entry.binding,
        )
        if entry.binding == "post" and entry.form:
            page = render_post_form(
                entry.url, dict(entry.form), message=f"Returning to {respond_to.provider}…"
            )
            return html_page(page)
        return see_other(check_url(entry.url, "logout response url"))


def create_app(
    runtime: Runtime,
    *,
    next_url: NextUrl,
    probe: bool = True,
    report_grace_ms: int = 1000,
) -> Starlette:
    """The mountable app for ``runtime``'s database and protocol handlers.

    ``next_url`` is where the browser ends when a plan is done and no provider waits for
    an answer: a URL or a path on the IdP, or a function of the plan (an OIDC
    ``post_logout_redirect_uri`` with its ``state``, say). ``probe`` asks each native
    SP's endpoint a credential-less ``HEAD`` before navigating there, so an unreachable
    SP is skipped at once instead of stranding the browser on an error page.
    ``report_grace_ms``: how long the iframe page waits for its reports to be sent.
    """
    if isinstance(next_url, str):
        check_local_url(next_url, "next_url")
    limit = runtime.settings.response_body_limit * 2 + 4096  # base64, and the other fields
    runtime.start_handlers()
    app = FrontchannelApp(
        database=runtime.database,
        handlers=runtime.handlers,
        next_url=next_url,
        probe=probe,
        report_grace_ms=report_grace_ms,
        answer_limit=limit,
    )
    plan = "/plans/{plan_id}"
    routes = [
        Route(plan, wrap(app.start), methods=["GET"], name="plan"),
        Route(f"{plan}/iframe", wrap(app.iframe), methods=["GET"], name="iframe"),
        Route(f"{plan}/report", wrap(app.report), methods=["POST"], name="report"),
        Route(f"{plan}/native", wrap(app.native), methods=["GET"], name="native"),
        Route(f"{plan}/native/{{entry_id}}", wrap(app.step), methods=["GET"], name="step"),
        Route(f"{plan}/native/{{entry_id}}/skip", wrap(app.skip), methods=["POST"], name="skip"),
        Route("/native/return", wrap(app.answer), methods=["GET", "POST"], name="return"),
        Route(f"{plan}/done", wrap(app.done), methods=["GET"], name="done"),
    ]
    return Starlette(routes=routes)
