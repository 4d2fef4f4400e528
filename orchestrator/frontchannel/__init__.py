"""The front-channel stage plan in the browser: pages rendered from a plan, strict CSP.

:mod:`orchestrator.frontchannel.app` is the mountable ASGI app that serves them (it needs
the ``web`` extra: ``pip install 'logout-orchestrator[web]'``); this package itself needs
nothing beyond the project's dependencies.
"""

from orchestrator.frontchannel.csp import Page, content_security_policy, new_nonce
from orchestrator.frontchannel.errors import RenderError, UnsafeUrlError
from orchestrator.frontchannel.render import (
    native_entry,
    render_iframe_stage,
    render_native_step,
    render_post_form,
    script_json,
)
from orchestrator.frontchannel.urls import check_local_url, check_url, origin

__all__ = [
    "Page",
    "RenderError",
    "UnsafeUrlError",
    "check_local_url",
    "check_url",
    "content_security_policy",
    "native_entry",
    "new_nonce",
    "origin",
    "render_iframe_stage",
    "render_native_step",
    "render_post_form",
    "script_json",
]
