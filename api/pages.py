"""The operators' HTML pages of the service, rendered with Jinja2: autoescaping on, every
value escaped where it goes, no script at all, and served under the front-channel pages'
strict Content-Security-Policy (:mod:`orchestrator.frontchannel.csp`): only the page's own
nonce-carrying style may apply.

The one page so far is a logout's timeline (``GET /v1/logouts/{event_id}/timeline``), the
same :class:`~orchestrator.timeline.Timeline` that ``audit show`` draws in the terminal.
"""

from __future__ import annotations

from datetime import datetime
from functools import cache

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from orchestrator.frontchannel.csp import Page, content_security_policy, new_nonce
from orchestrator.timeline import Timeline
from orchestrator.timeline_text import attempt_summary, duration_text, offset_text, step_summary

__all__ = ["render_timeline"]


def _when(at: datetime) -> str:
    return at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + " UTC"


def _slug(text: str) -> str:
    """A CSS class part of an outcome or type: ``timed_out`` -> ``timed-out``."""
    return "".join(char if char.isalnum() else "-" for char in text.lower())


@cache
def _environment() -> Environment:
    """Built once per process: templates are compiled on first use and kept."""
    environment = Environment(
        loader=PackageLoader("api", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    environment.filters.update(
        when=_when,
        offset=offset_text,
        duration=duration_text,
        slug=_slug,
        step_summary=step_summary,
        attempt_summary=attempt_summary,
    )
    return environment


def render_timeline(timeline: Timeline) -> Page:
    """The timeline page, with a fresh nonce and its policy (serve it with ``.headers``)."""
    nonce = new_nonce()
    html = _environment().get_template("timeline.html").render(timeline=timeline, nonce=nonce)
    return Page(html=html, nonce=nonce, csp=content_security_policy(nonce))
