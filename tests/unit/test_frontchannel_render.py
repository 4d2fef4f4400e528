"""The plan's pages: every provider value escaped, URLs other than http(s) refused, and a
strict Content-Security-Policy with a fresh nonce on every page."""

from __future__ import annotations

import html
import json
import re
import subprocess
import sys
from datetime import UTC, datetime
from html.parser import HTMLParser

import pytest

from orchestrator.frontchannel import (
    RenderError,
    UnsafeUrlError,
    check_url,
    render_iframe_stage,
    render_native_step,
    render_post_form,
    script_json,
)
from orchestrator.logout.planning import build_plan
from orchestrator.plans import PlanTimeouts
from schemas import LogoutPlan, PlanEntry

HOSTILE_NAME = '"><script>alert("name")</script><img src=x onerror=alert(1)>'
HOSTILE_QUERY = "https://rp.example.com/fc?x=%3C/script%3E&y='onload='alert(1)"


def entry(entry_id: str, url: str, *, binding: str = "iframe", **fields: object) -> PlanEntry:
    values: dict[str, object] = {
        "entry_id": entry_id,
        "delivery_id": entry_id,
        "provider": f"provider {entry_id}",
        "protocol": "oidc" if binding == "iframe" else "saml",
        "binding": binding,
        "url": url,
        "timeout_ms": 1500,
        **fields,
    }
    return PlanEntry.model_validate(values)


def plan(*entries: PlanEntry) -> LogoutPlan:
    return build_plan(
        plan_id="p-1",
        event_id="e-1",
        user_id="alice",
        session_id="s-1",
        entries=entries,
        respond_to=None,
        timeouts=PlanTimeouts(page_ms=9000),
        now=datetime.now(UTC),
    )


class Tags(HTMLParser):
    """Every start tag of a document and its attributes, as a browser's parser sees them."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.seen.append((tag, attrs))


def data_of(page_html: str, element_id: str) -> object:
    match = re.search(
        rf'<script type="application/json" id="{element_id}">(.*?)</script>', page_html, re.S
    )
    assert match is not None
    return json.loads(match.group(1))


def scripts(page_html: str) -> list[str]:
    return re.findall(r"<script\b[^>]*>", page_html)


def directives(csp: str) -> dict[str, list[str]]:
    parts = (d.strip().split() for d in csp.split(";"))
    return {p[0]: p[1:] for p in parts if p}


def test_iframe_page_carries_entries_as_data_and_a_strict_policy() -> None:
    """Entries travel as JSON; one nonce'd script; frames only the providers' origins."""
    the_plan = plan(
        entry("a", "https://wiki.example.com/fc?iss=x&sid=1"),
        entry("b", "http://127.0.0.1:8081/fc"),
    )
    page = render_iframe_stage(the_plan, report_url="/plans/p-1/report", next_url="/next")
    data = data_of(page.html, "plan-data")
    assert data == {
        "entries": [
            {
                "entry_id": "a",
                "provider": "provider a",
                "url": "https://wiki.example.com/fc?iss=x&sid=1",
                "timeout_ms": 1500,
            },
            {
                "entry_id": "b",
                "provider": "provider b",
                "url": "http://127.0.0.1:8081/fc",
                "timeout_ms": 1500,
            },
        ],
        "report_url": "/plans/p-1/report",
        "next_url": "/next",
        "timeout_ms": 9000,
        "report_grace_ms": 1000,
    }
    policy = directives(page.csp)
    assert policy["default-src"] == ["'none'"]
    assert policy["script-src"] == [f"'nonce-{page.nonce}'"]
    assert policy["style-src"] == [f"'nonce-{page.nonce}'"]
    assert policy["frame-src"] == ["http://127.0.0.1:8081", "https://wiki.example.com"]
    assert policy["connect-src"] == ["'self'"]
    assert policy["form-action"] == ["'none'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert "unsafe-inline" not in page.csp
    assert "unsafe-eval" not in page.csp
    assert scripts(page.html) == [
        '<script type="application/json" id="plan-data">',
        f'<script nonce="{page.nonce}">',
    ]
    assert page.headers["Content-Security-Policy"] == page.csp
    assert page.headers["Cache-Control"] == "no-store"


def test_every_page_gets_a_fresh_nonce() -> None:
    the_plan = plan(entry("a", "https://wiki.example.com/fc"))
    nonces = {
        render_iframe_stage(the_plan, report_url="/r", next_url="/n").nonce for _ in range(20)
    }
    assert len(nonces) == 20
    assert all(len(n) >= 22 for n in nonces)


def test_hostile_provider_values_never_become_markup_or_script() -> None:
    """A provider name and URL query full of markup stay data: no element, no handler."""
    hostile = entry("a", HOSTILE_QUERY, provider=HOSTILE_NAME)
    page = render_iframe_stage(plan(hostile), report_url="/r", next_url="/n")
    assert len(scripts(page.html)) == 2
    assert "<script>alert" not in page.html
    assert "<img" not in page.html
    tags = Tags()
    tags.feed(page.html)
    assert not [a for _, attrs in tags.seen for a, _ in attrs if a.startswith("on")]
    assert {t for t, _ in tags.seen} <= {
        "html", "head", "meta", "title", "style", "body", "main", "h1", "p", "div",
        "noscript", "iframe", "a", "script",
    }  # fmt: skip
    data = data_of(page.html, "plan-data")
    assert isinstance(data, dict)
    assert data["entries"][0]["provider"] == HOSTILE_NAME  # intact, as data
    assert data["entries"][0]["url"] == HOSTILE_QUERY
    assert html.escape(HOSTILE_QUERY, quote=True) in page.html  # the noscript frame's src


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "JavaScript:alert(1)",
        " javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "//evil.example.com/fc",
        "/relative/fc",
        "https://user:pw@rp.example.com/fc",
        "https://rp.example.com/fc\nx",
        "https://rp.example.com/f c",
        "https://rp.example.com\\@evil.example.com/",
        "https:///no-host",
        "https://rp.example.com:99999/",
        'https://rp.example.com/"><script>alert(1)</script>',
    ],
)
def test_non_http_urls_are_refused_at_render_time(url: str) -> None:
    """No page is rendered for a URL that is not plain absolute http(s)."""
    with pytest.raises(UnsafeUrlError):
        render_iframe_stage(plan(entry("a", url)), report_url="/r", next_url="/n")
    with pytest.raises(UnsafeUrlError):
        render_native_step(
            plan(entry("n", url, binding="post", form={"SAMLRequest": "PHg+"})), "n", skip_url="/s"
        )


def test_markup_in_a_url_is_refused_not_repaired() -> None:
    """``"<>`` and the like are never in a URI unencoded: such a URL is not rendered."""
    for url in ("https://rp.example.com/fc?x=</script><script>alert(1)</script>", 'https://a.b/"'):
        with pytest.raises(UnsafeUrlError, match="percent-encoded"):
            render_iframe_stage(plan(entry("a", url)), report_url="/r", next_url="/n")


def test_a_refusal_names_the_entry_not_the_url() -> None:
    with pytest.raises(UnsafeUrlError, match="entry 'a'") as caught:
        render_iframe_stage(plan(entry("a", "javascript:alert(1)")), report_url="/r", next_url="/n")
    assert "alert" not in str(caught.value)


def test_the_idp_urls_are_checked_too() -> None:
    the_plan = plan(entry("a", "https://wiki.example.com/fc"))
    for bad in ("javascript:alert(1)", "//evil.example.com/", "data:,x"):
        with pytest.raises(UnsafeUrlError):
            render_iframe_stage(the_plan, report_url="/r", next_url=bad)
        with pytest.raises(UnsafeUrlError):
            render_iframe_stage(the_plan, report_url=bad, next_url="/n")


def test_script_json_cannot_close_its_element() -> None:
    text = script_json({"k": "</script><!-- & \u2028 \u2029 >"})
    assert "<" not in text
    assert ">" not in text
    assert "&" not in text
    assert "\u2028" not in text
    assert "\u2029" not in text
    assert json.loads(text) == {"k": "</script><!-- & \u2028 \u2029 >"}


def test_native_post_step_escapes_the_form_and_allows_only_the_sp() -> None:
    """The POST form's fields are attribute-escaped; forms go to the SP or the IdP only."""
    step = entry(
        "n",
        "https://payroll.example.com/sls?tenant=1",
        binding="post",
        form={"SAMLRequest": 'PHg+"><script>alert(1)</script>', "RelayState": 'r"&<'},
        provider=HOSTILE_NAME,
    )
    page = render_native_step(plan(step), "n", skip_url="/plans/p-1/native/n/skip")
    assert '<form id="step" method="post" action="https://payroll.example.com/sls?tenant=1">' in (
        page.html
    )
    assert 'value="PHg+&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"' in page.html
    assert 'name="RelayState" value="r&quot;&amp;&lt;"' in page.html
    assert "<script>alert" not in page.html
    assert len(scripts(page.html)) == 2
    policy = directives(page.csp)
    assert policy["form-action"] == ["'self'", "https://payroll.example.com"]
    assert policy["connect-src"] == ["https://payroll.example.com"]  # the probe
    assert policy["frame-src"] == ["'none'"]
    data = data_of(page.html, "step-data")
    assert data == {
        "binding": "post",
        "url": "https://payroll.example.com/sls?tenant=1",
        "timeout_ms": 1500,
        "probe_url": "https://payroll.example.com/sls",
        "step_key": "p-1:n",
    }


def test_native_redirect_step_without_probe() -> None:
    """A redirect step navigates by script; without the probe nothing may be fetched."""
    url = "https://travel.example.com/sls?SAMLRequest=abc&Signature=x"
    page = render_native_step(
        plan(entry("n", url, binding="redirect")), "n", skip_url="/s", probe=False
    )
    data = data_of(page.html, "step-data")
    assert isinstance(data, dict)
    assert (data["binding"], data["url"], data["probe_url"]) == ("redirect", url, None)
    assert directives(page.csp)["connect-src"] == ["'none'"]
    assert 'id="step"' not in page.html


def test_native_step_of_an_unknown_or_iframe_entry_is_refused() -> None:
    the_plan = plan(
        entry("a", "https://wiki.example.com/fc"),
        entry("n", "https://payroll.example.com/sls", binding="post", form={"SAMLRequest": "PHg+"}),
    )
    with pytest.raises(RenderError, match="no native entry 'zz'"):
        render_native_step(the_plan, "zz", skip_url="/s")
    with pytest.raises(RenderError, match="no native entry 'a'"):
        render_native_step(the_plan, "a", skip_url="/s")
    with pytest.raises(RenderError, match="no iframe stage"):
        render_iframe_stage(
            plan(entry("n", "https://p.example.com/", binding="redirect")),
            report_url="/r",
            next_url="/n",
        )


def test_post_form_page() -> None:
    page = render_post_form(
        "https://portal.example.com/sls",
        {"SAMLResponse": "PHI+", "RelayState": '"><b>'},
        message="Returning to <portal>",
    )
    assert 'name="RelayState" value="&quot;&gt;&lt;b&gt;"' in page.html
    assert "Returning to &lt;portal&gt;" in page.html
    assert directives(page.csp)["form-action"] == ["https://portal.example.com"]
    with pytest.raises(UnsafeUrlError):
        render_post_form("javascript:alert(1)", {}, message="x")


def test_a_caller_nonce_must_be_a_nonce() -> None:
    the_plan = plan(entry("a", "https://wiki.example.com/fc"))
    page = render_iframe_stage(the_plan, report_url="/r", next_url="/n", nonce="A" * 22)
    assert page.nonce == "A" * 22
    with pytest.raises(RenderError):
        render_iframe_stage(the_plan, report_url="/r", next_url="/n", nonce="x' 'unsafe-inline")


def test_check_url_keeps_a_good_url_as_is() -> None:
    url = "https://rp.example.com:8443/fc?iss=https%3A%2F%2Fidp&sid=1"
    assert check_url(url) == url


def test_the_package_exports_a_sorted_public_api() -> None:
    """Rendering is importable without the web extra; the app module is separate."""
    import orchestrator.frontchannel as package

    exported = list(package.__all__)
    assert exported == sorted(exported, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    assert {"Page", "UnsafeUrlError", "render_iframe_stage", "render_native_step"} <= set(exported)
    assert all(hasattr(package, name) for name in exported)
    probe = "import sys, orchestrator.frontchannel; print('starlette' in sys.modules)"
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"  # rendering never needs the web extra
