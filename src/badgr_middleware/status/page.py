"""The HTML status page: one self-contained document (inline CSS and JavaScript, no external
asset, works offline) that fetches the JSON snapshot from its own URL every few seconds.

The page holds no data and no key: it is served to any browser that asks for HTML, and its
script reads the snapshot with the operator's key (typed into its prompt, or passed once as
``?key=``, then kept in ``sessionStorage`` and removed from the address bar) or with the
browser's own session (Django staff users, an ``authenticate`` callable reading cookies).
"""

from __future__ import annotations

__all__ = ["PAGE_HEADERS", "render_page", "wants_html"]

# The page may only talk to its own origin and load nothing from anywhere.
PAGE_HEADERS = [
    ("content-type", "text/html; charset=utf-8"),
    ("cache-control", "no-store"),
    ("vary", "Accept"),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
    ("content-security-policy",
     "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; "
     "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; "
     "frame-ancestors 'none'"),
]


def wants_html(accept: str, query: str = "") -> bool:
    """True when ``Accept`` prefers ``text/html`` to JSON (``?format=html|json`` overrides)."""
    for part in query.split("&"):
        if part in ("format=html", "format=json"):
            return part == "format=html"
    best_html = best_json = 0.0
    for item in accept.split(","):
        media, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        media = media.lower()
        if media in ("text/html", "application/xhtml+xml"):
            best_html = max(best_html, q)
        elif media in ("application/json", "*/*", "application/*"):
            # */* alone (curl, SDKs) means JSON: only an explicit HTML preference wins
            best_json = max(best_json, q - (0.001 if media != "application/json" else 0))
    return best_html > 0 and best_html > best_json


def render_page(refresh: float = 5.0) -> bytes:
    """The page; ``refresh``: seconds between two reads of the snapshot."""
    return _PAGE.replace("__REFRESH_MS__", str(max(1000, int(refresh * 1000)))).encode()


_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>badgr status</title>
<script>
window.badgrErrors = [];
window.addEventListener("error", function (e) { window.badgrErrors.push(String(e.message)); });
window.addEventListener("unhandledrejection", function (e) {
  window.badgrErrors.push("unhandled rejection: " + String(e.reason));
});
</script>
<style>
:root { --up: #1a7f37; --degraded: #b58100; --down: #cf222e; --unknown: #8c959f;
        --bg: #ffffff; --fg: #1f2328; --muted: #59636e; --line: #d1d9e0; }
@media (prefers-color-scheme: dark) {
  :root { --bg: #0d1117; --fg: #e6edf3; --muted: #9198a1; --line: #30363d; }
}
* { box-sizing: border-box; }
body { margin: 0; padding: 1.5rem; background: var(--bg); color: var(--fg);
       font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; }
header { display: flex; gap: 1rem; align-items: baseline; flex-wrap: wrap; }
h1 { font-size: 1.3rem; margin: 0; }
#meta { color: var(--muted); }
#notice { margin: 1rem 0; padding: .6rem .8rem; border: 1px solid var(--line);
          border-radius: 6px; }
#notice[hidden], #login[hidden] { display: none; }
#login { margin: 1rem 0; display: flex; gap: .5rem; }
#login input { padding: .35rem .5rem; min-width: 18rem; }
table { border-collapse: collapse; width: 100%; margin-top: 1rem; }
th, td { text-align: left; padding: .4rem .6rem; border-bottom: 1px solid var(--line);
         vertical-align: middle; white-space: nowrap; }
th { color: var(--muted); font-weight: 600; font-size: .85rem; }
tr.provider td { font-weight: 600; border-top: 2px solid var(--line); }
tr.target td:first-child { padding-left: 1.8rem; font-weight: 400; }
.badge { display: inline-block; min-width: 5.5rem; padding: .1rem .5rem; border-radius: 1rem;
         color: #fff; font-size: .8rem; font-weight: 600; text-align: center; }
.up { background: var(--up); } .degraded { background: var(--degraded); }
.down { background: var(--down); } .unknown { background: var(--unknown); }
.official { font-size: .8rem; color: var(--muted); }
.official.major, .official.critical { color: var(--down); font-weight: 600; }
.official.minor { color: var(--degraded); }
.strip { display: inline-flex; gap: 1px; height: 18px; align-items: flex-end; }
.strip span { display: inline-block; width: 4px; height: 100%; background: var(--line); }
.strip span.ok { background: var(--up); } .strip span.mixed { background: var(--degraded); }
.strip span.bad { background: var(--down); }
.muted { color: var(--muted); }
</style>
</head>
<body data-updates="0">
<header>
  <h1>badgr status</h1>
  <span id="meta">loading&hellip;</span>
</header>
<div id="notice" role="status" hidden></div>
<form id="login" hidden>
  <input id="key" type="password" autocomplete="off" placeholder="operator or client key"
         aria-label="key">
  <button type="submit">Show status</button>
</form>
<table>
  <thead><tr>
    <th>provider / model</th><th>status</th><th>last hour</th><th>success</th>
    <th>ttfb p50 / p95 (est.)</th><th>served</th><th>last error</th><th>official</th>
  </tr></thead>
  <tbody id="rows"></tbody>
</table>
<script>
(function () {
  "use strict";
  var STORE = "badgr-status-key";
  var params = new URLSearchParams(window.location.search);
  var REFRESH_MS = __REFRESH_MS__;
  if (Number(params.get("refresh")) >= 1) { REFRESH_MS = Number(params.get("refresh")) * 1000; }
  if (params.has("key")) {
    try { sessionStorage.setItem(STORE, params.get("key")); } catch (e) { /* private mode */ }
    params.delete("key");
    var rest = params.toString();
    history.replaceState(null, "", window.location.pathname + (rest ? "?" + rest : ""));
  }
  function key() {
    try { return sessionStorage.getItem(STORE); } catch (e) { return null; }
  }
  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) { node.className = cls; }
    if (text !== undefined && text !== null) { node.textContent = String(text); }
    return node;
  }
  function ms(seconds) {
    return seconds === null || seconds === undefined ? "-" : Math.round(seconds * 1000) + " ms";
  }
  function ago(at, now) {
    var s = Math.max(0, Math.round(now - at));
    return s < 90 ? s + " s ago" : s < 5400 ? Math.round(s / 60) + " min ago"
      : Math.round(s / 3600) + " h ago";
  }
  function strip(history) {
    var box = el("span", "strip");
    (history || []).forEach(function (minute) {
      var ok = minute[0], bad = minute[1];
      var bar = el("span", bad === 0 && ok > 0 ? "ok" : bad > 0 && ok === 0 ? "bad"
        : bad > 0 ? "mixed" : "");
      bar.title = ok + " ok, " + bad + " failed";
      box.appendChild(bar);
    });
    return box;
  }
  function row(cls, name, info, official, now) {
    var tr = el("tr", cls);
    tr.dataset.key = name;
    tr.dataset.status = info.status;
    tr.appendChild(el("td", "", name));
    var badge = el("td");
    var label = info.status + (info.reason ? " (" + info.reason + ")" : "");
    badge.appendChild(el("span", "badge " + info.status, label));
    tr.appendChild(badge);
    var cell = el("td");
    cell.appendChild(strip(info.history));
    tr.appendChild(cell);
    tr.appendChild(el("td", "", info.success_rate === null ? "-"
      : (info.success_rate * 100).toFixed(1) + " %"));
    var lat = info.latency;
    tr.appendChild(el("td", "", lat ? ms(lat.ttfb_p50) + " / " + ms(lat.ttfb_p95) : "-"));
    tr.appendChild(el("td", "", info.served));
    var err = info.last_error;
    tr.appendChild(el("td", err ? "" : "muted", err ? err.kind + (err.status ? " " + err.status
      : "") + ", " + ago(err.at, now) : "-"));
    var off = el("td", "official");
    if (official) {
      off.className = "official " + official.indicator;
      off.textContent = official.description + (official.error ? " (unreadable)" : "");
    }
    tr.appendChild(off);
    return tr;
  }
  function render(data) {
    var body = document.getElementById("rows");
    var fresh = document.createDocumentFragment();
    var counts = {up: 0, degraded: 0, down: 0};
    Object.keys(data.providers).forEach(function (name) {
      var p = data.providers[name];
      counts[p.status] = (counts[p.status] || 0) + 1;
      var tr = row("provider", name, p, p.official, data.generated_at);
      tr.dataset.provider = name;
      fresh.appendChild(tr);
      Object.keys(p.targets).forEach(function (model) {
        fresh.appendChild(row("target", model, p.targets[model], null, data.generated_at));
      });
    });
    body.replaceChildren(fresh);
    document.getElementById("meta").textContent = counts.up + " up, " + counts.degraded +
      " degraded, " + counts.down + " down \\u00b7 updated " +
      new Date(data.generated_at * 1000).toLocaleTimeString() +
      (data.official_polling ? " \\u00b7 official status pages polled" : "");
    document.body.dataset.updates = String(Number(document.body.dataset.updates) + 1);
  }
  function notice(text) {
    var box = document.getElementById("notice");
    box.textContent = text || "";
    box.hidden = !text;
  }
  var timer = null;
  function schedule() { timer = window.setTimeout(refresh, REFRESH_MS); }
  function refresh() {
    var headers = {"Accept": "application/json"};
    var k = key();
    if (k) { headers["Authorization"] = "Bearer " + k; }
    fetch(window.location.pathname, {headers: headers, credentials: "same-origin",
                                     cache: "no-store"})
      .then(function (response) {
        if (response.status === 401 || response.status === 403) {
          document.getElementById("login").hidden = false;
          notice(k ? "This key may not read the status." : "A key is needed to read the status.");
          return null;
        }
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        return response.json();
      })
      .then(function (data) {
        if (data) {
          document.getElementById("login").hidden = true;
          notice("");
          render(data);
        }
        schedule();
      })
      .catch(function (e) {
        notice("Could not refresh (" + e.message + "); retrying.");
        schedule();
      });
  }
  document.getElementById("login").addEventListener("submit", function (event) {
    event.preventDefault();
    try { sessionStorage.setItem(STORE, document.getElementById("key").value); }
    catch (e) { /* private mode */ }
    window.clearTimeout(timer);
    refresh();
  });
  refresh();
})();
</script>
</body>
</html>
"""
