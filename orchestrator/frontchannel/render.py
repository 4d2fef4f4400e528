"""The plan's stages as HTML pages: the iframe stage, one native step, an auto-POST form.

Pure functions of a :class:`~schemas.LogoutPlan`: no I/O, a fresh nonce per page, every
provider value escaped for where it goes. Data for a script travels in a
``<script type="application/json">`` element (``<``, ``>``, ``&`` escaped as ``\\u003c``...,
so it can never close the element); the scripts themselves are constants
(:mod:`orchestrator.frontchannel.scripts`). URLs pass :func:`check_url` or the page is not
rendered at all (:class:`UnsafeUrlError`).

How the native chain survives an SP that never answers
------------------------------------------------------
A native step is a top-level navigation on purpose: an SP logged out in the browser this
way gets its first-party cookies, which a frame would not carry (SameSite, third-party
cookie blocking) and which SPs that refuse framing need. So a watchdog cannot sit in a
parent page. Instead the step page, on the IdP's origin, is its own watchdog:

1. It arms a timer (the entry's ``timeout_ms``) and asks the SP's endpoint a
   credential-less ``HEAD`` first. An SP that cannot be reached (refused, DNS, TLS) is
   skipped at once (``unreachable``): navigating there would put the browser's error page
   in place of ours, and nothing could continue the chain.
2. It then submits the POST form (or assigns the redirect URL). Until the SP's response
   arrives the browser keeps the current document alive, timers included; so an SP that
   accepts the connection and never answers is cut off by the timer, which submits the
   skip form to the IdP and thereby cancels the pending navigation (``timeout``).
3. An SP that answers has the browser; it sends its LogoutResponse to the IdP's return
   endpoint, which records it and continues with the next step. If the tab ever comes
   back to a step it already started (Back button, reload, back/forward cache), the step
   is skipped (``returned``) rather than repeated: ``sessionStorage`` remembers it.

The chain's state lives on the server (which entries have an outcome), so every page of it
can be reloaded and the chain resumes at the first entry without one.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from orchestrator.frontchannel.csp import Page, content_security_policy, new_nonce
from orchestrator.frontchannel.errors import RenderError
from orchestrator.frontchannel.scripts import AUTO_SUBMIT_JS, IFRAME_STAGE_JS, NATIVE_STEP_JS
from orchestrator.frontchannel.urls import check_local_url, check_url, origin, without_query
from schemas.plan import IFRAME_STAGE, NATIVE_STAGE, LogoutPlan, PlanEntry

__all__ = [
    "native_entry",
    "render_iframe_stage",
    "render_native_step",
    "render_post_form",
    "script_json",
]

_NONCE = re.compile(r"[A-Za-z0-9+/_=-]{16,128}")
_STYLE = (
    "body{font:16px/1.5 system-ui,sans-serif;margin:3rem auto;max-width:36rem;"
    "padding:0 1rem;color:#222}"
    ".frames{position:absolute;width:0;height:0;overflow:hidden}"
    ".frames iframe{width:0;height:0;border:0}"
    "button{font:inherit}"
)


def script_json(data: Any) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element (no ``<``, ``>``, ``&``,
    no line separators: all escaped as ``\\uXXXX``)."""
    text = json.dumps(data, ensure_ascii=True, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _attr(value: str) -> str:
    return html.escape(value, quote=True)


def _self_or_origin(url: str) -> str:
    return "'self'" if url.startswith("/") else origin(url)


def _document(
    nonce: str, title: str, body: str, *, data_id: str = "", data: Any = None, script: str = ""
) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="robots" content="noindex">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        f'<style nonce="{nonce}">{_STYLE}</style>',
        f"</head><body><main>{body}</main>",
    ]
    if data_id:
        parts.append(f'<script type="application/json" id="{data_id}">{script_json(data)}</script>')
    if script:
        parts.append(f'<script nonce="{nonce}">{script}</script>')
    parts.append("</body></html>")
    return "".join(parts)


def _page(
    nonce: str | None,
    build: Callable[[str], str],
    *,
    frame_src: Iterable[str] = (),
    form_action: Iterable[str] = (),
    connect_src: Iterable[str] = (),
) -> Page:
    value = new_nonce() if nonce is None else nonce
    if not _NONCE.fullmatch(value):
        raise RenderError("nonce: 16 to 128 base64 characters expected")
    csp = content_security_policy(
        value, frame_src=frame_src, form_action=form_action, connect_src=connect_src
    )
    return Page(html=build(value), nonce=value, csp=csp)


def render_iframe_stage(
    plan: LogoutPlan,
    *,
    report_url: str,
    next_url: str,
    report_grace_ms: int = 1000,
    nonce: str | None = None,
) -> Page:
    """The iframe stage: every entry in a hidden frame at once, each outcome reported.

    ``report_url`` receives one JSON POST per entry (``entry_id``, ``outcome``:
    ``loaded`` | ``timed_out``, ``elapsed_ms``); the page then goes to ``next_url``.
    Both may be paths on the IdP's origin or absolute http(s) URLs.
    """
    stage = plan.stage(IFRAME_STAGE)
    if stage is None or not stage.entries:
        raise RenderError(f"plan {plan.plan_id!r} has no iframe stage")
    report_url = check_local_url(report_url, "report_url")
    next_url = check_local_url(next_url, "next_url")
    checked = [
        (entry, check_url(entry.url, f"entry {entry.entry_id!r} ({entry.provider!r}) url"))
        for entry in stage.entries
    ]
    entries = [
        {
            "entry_id": entry.entry_id,
            "provider": entry.provider,
            "url": url,
            "timeout_ms": entry.timeout_ms,
        }
        for entry, url in checked
    ]
    data = {
        "entries": entries,
        "report_url": report_url,
        "next_url": next_url,
        "timeout_ms": plan.timeout_ms,
        "report_grace_ms": report_grace_ms,
    }
    count = len(entries)
    noscript = "".join(
        f'<iframe src="{_attr(url)}" title="{_attr(entry.provider)}" '
        'sandbox="allow-scripts allow-same-origin allow-forms"></iframe>'
        for entry, url in checked
    )
    body = (
        "<h1>Signing you out</h1>"
        f"<p>Signing you out of {count} application{'s' if count != 1 else ''}…</p>"
        '<div class="frames" id="frames" aria-hidden="true"></div>'
        f'<noscript><div class="frames">{noscript}</div>'
        f'<p><a href="{_attr(next_url)}">Continue</a></p></noscript>'
    )
    return _page(
        nonce,
        lambda n: _document(
            n, "Signing out", body, data_id="plan-data", data=data, script=IFRAME_STAGE_JS
        ),
        frame_src=[origin(url) for _, url in checked],
        connect_src=[_self_or_origin(report_url)],
    )


def native_entry(plan: LogoutPlan, entry_id: str) -> tuple[int, PlanEntry]:
    """The position (from 0) and entry ``entry_id`` of the plan's native stage."""
    stage = plan.stage(NATIVE_STAGE)
    if stage is not None:
        for position, entry in enumerate(stage.entries):
            if entry.entry_id == entry_id:
                return position, entry
    raise RenderError(f"plan {plan.plan_id!r} has no native entry {entry_id!r}")


def _hidden(fields: Mapping[str, str]) -> str:
    return "".join(
        f'<input type="hidden" name="{_attr(name)}" value="{_attr(value)}">'
        for name, value in fields.items()
    )


def render_native_step(
    plan: LogoutPlan,
    entry_id: str,
    *,
    skip_url: str,
    probe: bool = True,
    nonce: str | None = None,
) -> Page:
    """One step of the native chain: one navigation to the SP, watched by a timer.

    ``skip_url`` (a path or URL on the IdP) receives a form POST with ``reason``
    (``timeout`` | ``unreachable`` | ``returned``) when the SP does not take over in time.
    With ``probe`` the SP's endpoint is asked a credential-less ``HEAD`` first (see the
    module's text).
    """
    position, entry = native_entry(plan, entry_id)
    stage = plan.stage(NATIVE_STAGE)
    total = len(stage.entries) if stage is not None else 0
    url = check_url(entry.url, f"entry {entry.entry_id!r} ({entry.provider!r}) url")
    skip_url = check_local_url(skip_url, "skip_url")
    if entry.binding == "post":
        if not entry.form:
            raise RenderError(f"entry {entry.entry_id!r} uses the POST binding without a form")
        fields = dict(entry.form)
        action = (
            f'<form id="step" method="post" action="{_attr(url)}">{_hidden(fields)}'
            "<noscript><button>Continue</button></noscript></form>"
        )
    elif entry.binding == "redirect":
        action = f'<noscript><p><a href="{_attr(url)}">Continue</a></p></noscript>'
    else:
        raise RenderError(f"entry {entry.entry_id!r} is an iframe entry, not a native step")
    data = {
        "binding": entry.binding,
        "url": url,
        "timeout_ms": entry.timeout_ms,
        "probe_url": without_query(url) if probe else None,
        "step_key": f"{plan.plan_id}:{entry.entry_id}",
    }
    body = (
        "<h1>Signing you out</h1>"
        f"<p>Signing you out of {html.escape(entry.provider)} "
        f"({position + 1} of {total})…</p>{action}"
        f'<form id="skip" method="post" action="{_attr(skip_url)}">'
        '<input type="hidden" name="reason" id="skip-reason" value="timeout"></form>'
    )
    sp = origin(url)
    return _page(
        nonce,
        lambda n: _document(
            n, "Signing out", body, data_id="step-data", data=data, script=NATIVE_STEP_JS
        ),
        form_action=[_self_or_origin(skip_url), sp],
        connect_src=[sp] if probe else [],
    )


def render_post_form(
    url: str, fields: Mapping[str, str], *, message: str, nonce: str | None = None
) -> Page:
    """A form of ``fields`` POSTed to ``url`` at once (a button without JavaScript)."""
    url = check_url(url, "form url")
    body = (
        f"<h1>Signing you out</h1><p>{html.escape(message)}</p>"
        f'<form id="auto" method="post" action="{_attr(url)}">{_hidden(fields)}'
        "<noscript><button>Continue</button></noscript></form>"
    )
    return _page(
        nonce,
        lambda n: _document(n, "Signing out", body, script=AUTO_SUBMIT_JS),
        form_action=[origin(url)],
    )
