"""The pages' scripts: constant text, never formatted with data.

Every value a script uses comes from the page's ``<script type="application/json">``
element, parsed with ``JSON.parse``; so no provider value is ever JavaScript source.
Each script is served with the page's nonce.
"""

from __future__ import annotations

from typing import Final

__all__ = ["AUTO_SUBMIT_JS", "IFRAME_STAGE_JS", "NATIVE_STEP_JS"]

#: Every frame at once; each settles once, as ``loaded`` (its load event) or ``timed_out``
#: (its own timeout, or the page's); each outcome is POSTed to the report URL as soon as
#: it is known; once all are settled (or the page times out) and the reports are sent
#: (waiting at most ``report_grace_ms`` for them), the page goes on to ``next_url``.
IFRAME_STAGE_JS: Final = """\
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("plan-data").textContent);
  var box = document.getElementById("frames");
  var started = performance.now();
  var pending = data.entries.length;
  var reports = [];
  var finished = false;
  var pageTimer = 0;

  function report(entry, outcome) {
    var body = JSON.stringify({
      entry_id: entry.entry_id,
      outcome: outcome,
      elapsed_ms: Math.round(performance.now() - started)
    });
    reports.push(fetch(data.report_url, {
      method: "POST",
      headers: {"Content-Type": "application/json"},
      body: body,
      credentials: "same-origin",
      cache: "no-store",
      keepalive: true
    }).catch(function () { return null; }));
  }

  function finish() {
    if (finished) { return; }
    finished = true;
    clearTimeout(pageTimer);
    var gone = false;
    function go() {
      if (!gone) { gone = true; window.location.replace(data.next_url); }
    }
    setTimeout(go, data.report_grace_ms);
    Promise.all(reports).then(go, go);
  }

  function settle(state, outcome) {
    if (state.done) { return; }
    state.done = true;
    clearTimeout(state.timer);
    if (outcome === "timed_out") { state.frame.remove(); }
    report(state.entry, outcome);
    pending -= 1;
    if (pending === 0) { finish(); }
  }

  var states = data.entries.map(function (entry) {
    var frame = document.createElement("iframe");
    var state = {entry: entry, frame: frame, done: false, timer: 0};
    frame.setAttribute("sandbox", "allow-scripts allow-same-origin allow-forms");
    frame.setAttribute("referrerpolicy", "strict-origin-when-cross-origin");
    frame.setAttribute("tabindex", "-1");
    frame.title = entry.provider;
    frame.src = entry.url;
    box.appendChild(frame);
    frame.addEventListener("load", function () { settle(state, "loaded"); });
    state.timer = setTimeout(function () { settle(state, "timed_out"); }, entry.timeout_ms);
    return state;
  });
  pageTimer = setTimeout(function () {
    states.forEach(function (state) { settle(state, "timed_out"); });
    finish();
  }, data.timeout_ms);
  if (pending === 0) { finish(); }
})();
"""

#: One native step, from a page on the IdP's origin that stays alive until the SP answers:
#: a navigation that has not received its response leaves the current document running,
#: so its timer can still cancel the navigation (by submitting the skip form). Before
#: navigating, a credential-less ``HEAD`` of the SP's endpoint (no query: the signed
#: request is never sent twice) tells an SP that cannot be reached (connection refused,
#: TLS or DNS failure), which would otherwise replace this page with the browser's error
#: page. ``sessionStorage`` remembers that the step was started: a tab that comes back to
#: it (the Back button, a reload, the back/forward cache) skips it instead of repeating it.
NATIVE_STEP_JS: Final = """\
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("step-data").textContent);
  var key = "logout-orchestrator.step:" + data.step_key;
  var leaving = false;
  var timer = 0;

  function skip(reason) {
    if (leaving) { return; }
    leaving = true;
    clearTimeout(timer);
    document.getElementById("skip-reason").value = reason;
    document.getElementById("skip").submit();
  }

  function go() {
    if (leaving) { return; }
    if (data.binding === "post") {
      document.getElementById("step").submit();
    } else {
      window.location.assign(data.url);
    }
  }

  window.addEventListener("pageshow", function (event) {
    if (event.persisted) { leaving = false; skip("returned"); }
  });

  var seen = null;
  try {
    seen = window.sessionStorage.getItem(key);
    window.sessionStorage.setItem(key, String(Date.now()));
  } catch (err) {
    seen = null;
  }
  if (seen !== null) { skip("returned"); return; }

  timer = setTimeout(function () { skip("timeout"); }, data.timeout_ms);
  if (data.probe_url) {
    fetch(data.probe_url, {
      method: "HEAD",
      mode: "no-cors",
      credentials: "omit",
      cache: "no-store",
      referrerPolicy: "no-referrer"
    }).then(go, function () { skip("unreachable"); });
  } else {
    go();
  }
})();
"""

#: Submits the page's one form at once (the IdP's LogoutResponse to the SP that started).
AUTO_SUBMIT_JS: Final = """\
(function () {
  "use strict";
  document.getElementById("auto").submit();
})();
"""
