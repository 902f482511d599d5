"""GET {prefix}/status: the JSON snapshot, the HTML page, and who may read them."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest
from status_support import CLIENT_KEY, STATUS_KEY, UPSTREAM_KEY, Upstreams

from badgr_middleware import Engine
from badgr_middleware.config import ConfigError, load_config
from badgr_middleware.messages import HttpRequest, HttpResponse
from badgr_middleware.status import build_status, wants_html
from badgr_middleware.status.snapshot import RECENT_MINUTES

BROWSER = "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,*/*;q=0.8"


def get(engine: Engine, key: str | None = None, accept: str = "application/json",
        query: str = "") -> HttpResponse:
    headers = {"accept": accept}
    if key:
        headers["authorization"] = f"Bearer {key}"
    return engine.handle(HttpRequest("GET", "/status", headers, query=query))


def chat(engine: Engine) -> HttpResponse:
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    return engine.handle(HttpRequest(
        "POST", "/chat/completions",
        {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}, body))


@pytest.fixture
def engine(upstreams: Upstreams) -> Any:
    engine = Engine(upstreams.config(status_keys=[STATUS_KEY]))
    yield engine
    engine.close()


def test_snapshot_after_traffic(engine: Engine, upstreams: Upstreams) -> None:
    assert chat(engine).header("x-badgr-provider") == "a"
    upstreams.a.set_fault("503")
    assert chat(engine).header("x-badgr-provider") == "b"
    response = get(engine, CLIENT_KEY)
    assert response.status == 200
    assert response.header("cache-control") == "no-store"
    data = json.loads(response.body)
    assert data["object"] == "badgr.status" and data["official_polling"] is False
    a, b = data["providers"]["a"], data["providers"]["b"]
    assert a["kind"] == "openai" and a["official"] is None
    target = a["targets"]["x"]
    assert target["served"] == 1 and target["failed"] == 1
    assert target["success_rate"] == 0.5 and target["status"] == "degraded"
    assert target["recent"] == {"minutes": RECENT_MINUTES, "ok": 1, "failed": 1}
    error = target["last_error"]
    assert (error["kind"], error["status"]) == ("server_error", 503)
    assert abs(error["at"] - data["generated_at"]) < 10
    assert len(target["history"]) == 60 and target["history"][-1] == [1, 1]
    assert target["breaker"] == "closed" and target["cooldown_until"] is None
    latency = target["latency"]
    assert latency["estimate"] is True and latency["samples"] == 1
    assert latency["ttfb_p50"] == latency["ttfb"] and latency["ttfb_p95"] >= latency["ttfb"]
    assert a["last_error"]["kind"] == "server_error"  # the provider counts it too
    assert b["targets"]["x"]["served"] == 1 and b["status"] == "up"
    assert b["targets"]["x"]["last_error"] is None
    assert UPSTREAM_KEY not in response.body.decode()


def test_down_after_a_cooldown(engine: Engine, upstreams: Upstreams) -> None:
    upstreams.a.set_fault("402")
    assert chat(engine).header("x-badgr-provider") == "b"
    data = json.loads(get(engine, CLIENT_KEY).body)
    a = data["providers"]["a"]
    assert (a["status"], a["state"], a["reason"]) == ("down", "cooling_down", "quota_exhausted")
    assert a["cooldown_until"] > data["generated_at"]


def test_async_snapshot_is_the_same(engine: Engine, upstreams: Upstreams) -> None:
    chat(engine)

    async def read() -> HttpResponse:
        try:
            return await engine.handle_async(HttpRequest(
                "GET", "/status", {"authorization": f"Bearer {STATUS_KEY}"}))
        finally:
            await engine.aclose()

    response = anyio.run(read)
    assert response.status == 200
    data = json.loads(response.body)
    assert data["providers"]["a"]["targets"]["x"]["served"] == 1


def test_status_keys_read_the_status_but_not_the_api(engine: Engine) -> None:
    assert get(engine, STATUS_KEY).status == 200
    assert get(engine, CLIENT_KEY).status == 200  # clients: the API's own rules apply too
    assert get(engine).status == 401
    assert get(engine, "wrong").status == 401
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]}).encode()
    api = engine.handle(HttpRequest("POST", "/chat/completions", {
        "authorization": f"Bearer {STATUS_KEY}", "content-type": "application/json"}, body))
    assert api.status == 401


def test_operators_only(upstreams: Upstreams) -> None:
    engine = Engine(upstreams.config(status_keys=[STATUS_KEY], status_auth="operators"))
    try:
        assert get(engine, STATUS_KEY).status == 200
        assert get(engine, CLIENT_KEY).status == 401
    finally:
        engine.close()


def test_staff_mode_outside_django_needs_a_principal_or_a_status_key(
    upstreams: Upstreams,
) -> None:
    engine = Engine(upstreams.config(status_auth="staff"))
    try:
        assert get(engine, CLIENT_KEY).status == 401
        staff = HttpRequest("GET", "/status", {}, principal="staff-user")
        assert engine.handle(staff).status == 200
    finally:
        engine.close()


def test_html_page_for_browsers(engine: Engine) -> None:
    page = get(engine, accept=BROWSER)  # no key: the page holds no data
    assert page.status == 200
    assert page.header("content-type") == "text/html; charset=utf-8"
    csp = page.header("content-security-policy") or ""
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    html = page.body.decode()
    assert "<script>" in html and "fetch(" in html
    for external in ("http://", "https://", "src=", "href="):
        assert external not in html  # nothing loaded from anywhere
    assert UPSTREAM_KEY not in html and CLIENT_KEY not in html and STATUS_KEY not in html
    assert get(engine, accept=BROWSER, query="format=json").status == 401
    assert get(engine, STATUS_KEY, accept="*/*", query="format=html").status == 200


@pytest.mark.parametrize(("accept", "query", "html"), [
    (BROWSER, "", True),
    ("text/html", "", True),
    ("*/*", "", False),
    ("", "", False),
    ("application/json", "", False),
    ("application/json, text/html;q=0.5", "", False),
    ("text/html;q=0.4, application/json;q=0.9", "", False),
    ("text/html;q=0", "", False),
    ("application/json", "format=html", True),
    (BROWSER, "format=json", False),
])
def test_wants_html(accept: str, query: str, html: bool) -> None:
    assert wants_html(accept, query) is html


def test_build_status_lists_configured_targets_without_data() -> None:
    config = load_config({"providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9",
                                              "api_key": "k"}},
                          "models": {"m": ["p/one", "p/two"]}, "allow_anonymous": True})
    data = build_status(config, {}, 100.0, {"p": {"indicator": "none"}})
    p = data["providers"]["p"]
    assert list(p["targets"]) == ["one", "two"]
    assert p["status"] == "up" and p["success_rate"] is None and p["history"] == []
    assert p["official"] == {"indicator": "none"}


def test_config_problems() -> None:
    base = {"providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9",
                                "api_key": "k"}}, "allow_anonymous": True}
    with pytest.raises(ConfigError) as caught:
        load_config({**base, "status_auth": "operators", "status_keys": "nope",
                     "status_pages": {"enabled": "yes", "interval": 0, "colour": 1,
                                      "sources": {"p": "ftp://x", "q": "http://127.0.0.1"}}})
    problems = {(p.path, p.code) for p in caught.value.problems}
    assert problems == {
        ("status_keys", "bad_type"),
        ("status_pages.enabled", "bad_type"),
        ("status_pages.interval", "bad_value"),
        ("status_pages.colour", "unknown_key"),
        ("status_pages.sources.p", "bad_status_page"),
        ("status_pages.sources.q", "unknown_provider"),
    }
    with pytest.raises(ConfigError) as caught:
        load_config({**base, "status_auth": "operators"})
    assert [(p.path, p.code) for p in caught.value.problems] == [("status_keys", "bad_value")]
    with pytest.raises(ConfigError) as caught:
        load_config({**base, "status_auth": "everyone"})
    assert [p.code for p in caught.value.problems] == ["bad_value"]
    config = load_config({**base, "status_pages": {"enabled": True, "interval": 30,
                                                   "sources": {"p": False}}})
    assert config.status_pages.enabled and config.status_pages.interval == 30.0
    assert config.status_pages.sources == {"p": False}
    assert load_config(base).status_pages.enabled is False


def test_statistics_are_shared_through_redis(upstreams: Upstreams, redis_url: str) -> None:
    import uuid

    state = {"url": redis_url, "key_prefix": f"badgr-test:{uuid.uuid4().hex}:"}
    first = Engine(upstreams.config(state=state))
    second = Engine(upstreams.config(state=state))
    try:
        upstreams.a.set_fault("503")
        assert chat(first).header("x-badgr-provider") == "b"
        data = json.loads(get(second, CLIENT_KEY).body)  # another worker's view
        target = data["providers"]["a"]["targets"]["x"]
        assert (target["failed"], target["last_error"]["status"]) == (1, 503)
        assert data["providers"]["b"]["targets"]["x"]["served"] == 1
    finally:
        first.store.clear()  # type: ignore[attr-defined]
        first.close()
        second.close()


def test_cli_table(upstreams: Upstreams) -> None:
    import io

    from badgr_middleware.cli import print_status

    snapshot = {"generated_at": 1000.0, "providers": {"a": {
        "status": "degraded", "state": "half_open", "reason": "circuit", "retry_in": None,
        "success_rate": 0.5, "served": 7, "latency": None,
        "last_error": {"kind": "timeout", "status": None, "at": 400.0},
        "official": {"indicator": "major", "description": "Major Service Outage"},
        "targets": {"x": {"status": "up", "state": "available", "reason": None,
                          "retry_in": None, "success_rate": 1.0, "served": 7,
                          "latency": {"ttfb": 0.25, "ttfb_p95": 0.5},
                          "last_error": {"kind": "server_error", "status": 503, "at": 990.0}}},
    }}}
    out = io.StringIO()
    print_status(snapshot, out)
    header, provider, target = out.getvalue().splitlines()
    assert header.split()[:6] == ["provider", "/", "model", "status", "state", "reason"]
    assert provider.split() == ["a", "degraded", "half_open", "circuit", "-", "50.0%", "-", "7",
                                "timeout", "10m", "ago", "major:", "Major", "Service", "Outage"]
    assert target.split() == ["x", "up", "available", "-", "-", "100.0%", "250/500", "ms", "7",
                              "server_error", "503", "10s", "ago"]
