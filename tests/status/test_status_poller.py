"""Official status pages: parsing, and the poller's effect on routing, against a fake status
server on 127.0.0.1 (Statuspage JSON, RSS and Atom feeds, broken and slow pages)."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from status_support import CLIENT_KEY, StatusServer, Upstreams, rss, statuspage, wait_for

from badgr_middleware import Engine
from badgr_middleware.health import MemoryHealthStore
from badgr_middleware.messages import HttpRequest
from badgr_middleware.status import StatusPoller, parse_feed, parse_statuspage, sources_for
from badgr_middleware.status.official import DEFAULT_SOURCES, StatusPageError, parse_status

NOW = 1_800_000_000.0


def chat(engine: Engine) -> str:
    """Send one chat request through ``engine``; the provider that served it."""
    body = json.dumps({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    response = engine.handle(HttpRequest(
        "POST", "/chat/completions",
        {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"},
        body.encode(),
    ))
    assert response.status == 200, response.body
    return response.header("x-badgr-provider") or ""


def engine_for(upstreams: Upstreams, sources: dict[str, Any], **pages: Any) -> Engine:
    config = upstreams.config(status_pages={"enabled": True, "sources": sources, **pages})
    return Engine(config)


# -- parsing ------------------------------------------------------------------------------------


@pytest.mark.parametrize("indicator", ["none", "minor", "major", "critical"])
def test_statuspage_indicator(indicator: str) -> None:
    reading = parse_statuspage(json.loads(statuspage(indicator, "Words", ("Elevated errors",))))
    assert reading["indicator"] == indicator
    assert reading["description"] == "Words"
    assert reading["incidents"] == ["Elevated errors"]


def test_statuspage_without_indicator_uses_components() -> None:
    data = {"components": [{"status": "operational"}, {"status": "major_outage"}]}
    assert parse_statuspage(data)["indicator"] == "major"
    data = {"components": [{"status": "degraded_performance"}]}
    assert parse_statuspage(data)["indicator"] == "minor"
    with pytest.raises(StatusPageError):
        parse_statuspage({"page": {}})
    with pytest.raises(StatusPageError):
        parse_statuspage(["not", "a", "page"])


def test_rss_feed_recent_outage_is_major_and_resolved_is_none() -> None:
    body = rss(("Major outage of the API", NOW - 600), ("Old trouble", NOW - 86400)).encode()
    assert parse_feed(body, NOW)["indicator"] == "major"
    body = rss(("Elevated latency on some models", NOW - 600)).encode()
    reading = parse_feed(body, NOW)
    assert reading["indicator"] == "minor"
    assert reading["incidents"] == ["Elevated latency on some models"]
    assert parse_feed(rss(("Resolved: outage of the API", NOW - 60)).encode(),
                      NOW)["indicator"] == "none"
    assert parse_feed(rss(("API outage", NOW - 5 * 3600)).encode(), NOW)["indicator"] == "none"
    assert parse_feed(rss().encode(), NOW)["indicator"] == "none"


def test_atom_feed() -> None:
    body = (
        b'<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom"><title>x</title>'
        b"<entry><title>API unavailable</title><updated>2027-01-15T08:00:00Z</updated>"
        b"<summary>We are investigating</summary></entry></feed>"
    )
    at = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    assert parse_feed(body, at + 60)["indicator"] == "major"


def test_hostile_or_broken_feeds_are_refused() -> None:
    bomb = (b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaaaa">'
            b'<!ENTITY b "&a;&a;&a;&a;&a;&a;">]><rss><channel><item><title>&b;</title>'
            b"</item></channel></rss>")
    for body in (bomb, b"<html><body>status</body></html>", b"not xml at all <"):
        with pytest.raises(StatusPageError):
            parse_feed(body, NOW)
    with pytest.raises(StatusPageError):
        parse_status(b"{broken json", "application/json", NOW)


def test_sources_default_for_well_known_providers_only() -> None:
    providers = {"openai": object(), "anthropic": object(), "local": object()}
    assert sources_for(providers, {}) == {
        "openai": DEFAULT_SOURCES["openai"], "anthropic": DEFAULT_SOURCES["anthropic"],
    }
    assert sources_for(providers, {"openai": False, "local": "http://127.0.0.1:9/s.json"}) == {
        "anthropic": DEFAULT_SOURCES["anthropic"], "local": "http://127.0.0.1:9/s.json",
    }


def test_polling_is_off_by_default(upstreams: Upstreams) -> None:
    engine = Engine(upstreams.config(providers={"openai": {"api_key": "k"}},
                                     models={"m": ["openai/x"]}))
    try:
        assert engine.status_poller is None  # a well-known provider, yet nothing is polled
        assert engine.status()["official_polling"] is False
    finally:
        engine.close()


# -- effect on routing --------------------------------------------------------------------------


def test_major_outage_moves_the_provider_last(upstreams: Upstreams,
                                              status_server: StatusServer) -> None:
    sources = {"a": status_server.page("/a.json", statuspage("major", "Major Service Outage")),
               "b": status_server.page("/b.json", statuspage("none"))}
    engine = engine_for(upstreams, sources)
    try:
        assert engine.status_poller is not None
        assert chat(engine) == "a"  # not polled yet: a is first, as configured
        engine.status_poller.poll_once()
        assert engine.status_poller.deprioritised == {"a"}
        assert [chat(engine) for _ in range(3)] == ["b", "b", "b"]
        official = engine.status()["providers"]["a"]["official"]
        assert official["indicator"] == "major"
        assert official["description"] == "Major Service Outage"
        assert official["source"] == sources["a"]
        # deprioritised, not excluded: own traffic still decides
        upstreams.b.set_fault("503")
        assert chat(engine) == "a"
        upstreams.b.set_fault(None)
        # the page recovers: a is first again
        status_server.page("/a.json", statuspage("none"))
        engine.status_poller.poll_once()
        assert chat(engine) == "a"
    finally:
        engine.close()


def test_minor_incident_changes_nothing(upstreams: Upstreams,
                                        status_server: StatusServer) -> None:
    sources = {"a": status_server.page("/a.json", statuspage("minor", "Partial outage"))}
    engine = engine_for(upstreams, sources)
    try:
        assert engine.status_poller is not None
        engine.status_poller.poll_once()
        assert engine.status()["providers"]["a"]["official"]["indicator"] == "minor"
        assert chat(engine) == "a"
    finally:
        engine.close()


def test_rss_feed_outage_deprioritises(upstreams: Upstreams,
                                       status_server: StatusServer) -> None:
    feed = rss(("Service down: all requests failing", time.time() - 120))
    sources = {"a": status_server.page("/incidents.rss", feed, content_type="application/rss+xml")}
    engine = engine_for(upstreams, sources)
    try:
        assert engine.status_poller is not None
        engine.status_poller.poll_once()
        assert engine.status_poller.deprioritised == {"a"}
        assert chat(engine) == "b"
    finally:
        engine.close()


@pytest.mark.parametrize("page", [
    {"body": "{not json", "content_type": "application/json"},
    {"body": statuspage("major"), "status": 500},
    {"body": "<html>maintenance</html>", "content_type": "text/html"},
    {"body": statuspage("major"), "delay": 3.0},  # headers later than the timeout
    {"body": statuspage("major"), "drip": 0.05},  # a body that never finishes in time
    {"body": b"{" + b" " * (2 * 1024 * 1024) + b"}"},  # too large
], ids=["garbage", "http-500", "html", "slow-headers", "slow-body", "too-large"])
def test_a_broken_or_slow_page_changes_nothing(upstreams: Upstreams, status_server: StatusServer,
                                               page: dict[str, Any]) -> None:
    sources = {"a": status_server.page("/a.json", **page)}
    engine = engine_for(upstreams, sources, timeout=0.5)
    try:
        poller = engine.status_poller
        assert poller is not None
        started = time.monotonic()
        poller.poll_once()
        assert time.monotonic() - started < 2.0  # the timeout bounds the whole page
        assert poller.deprioritised == frozenset()
        reading = engine.status()["providers"]["a"]["official"]
        assert reading["indicator"] == "unknown" and reading["error"]
        assert chat(engine) == "a"
    finally:
        engine.close()


def test_a_page_that_breaks_keeps_its_last_reading_for_a_while(
    upstreams: Upstreams, status_server: StatusServer
) -> None:
    clock = [NOW]
    url = status_server.page("/a.json", statuspage("major"))
    poller = StatusPoller({"a": url}, interval=60, timeout=0.5, clock=lambda: clock[0])
    poller.poll_once()
    assert poller.deprioritised == {"a"}
    status_server.page("/a.json", "{broken")
    clock[0] += 60
    poller.poll_once()
    assert poller.deprioritised == {"a"}  # a blip of the status page is not news
    assert poller.statuses["a"]["stale"] is True and poller.statuses["a"]["error"]
    clock[0] += 60
    poller.poll_once()
    assert poller.deprioritised == {"a"}
    clock[0] += 61  # more than 3 intervals since the last good reading
    poller.poll_once()
    assert poller.deprioritised == frozenset()
    assert poller.statuses["a"]["indicator"] == "unknown"


def test_polling_never_blocks_a_request(upstreams: Upstreams,
                                        status_server: StatusServer) -> None:
    sources = {"a": status_server.page("/a.json", statuspage("major"), delay=2.0)}
    engine = engine_for(upstreams, sources, timeout=1.5, interval=60)
    try:
        started = time.monotonic()
        assert chat(engine) == "a"  # starts the poller thread, which now waits on the page
        assert engine.status()["providers"]["a"]["official"] is None
        assert time.monotonic() - started < 1.0
        wait_for(lambda: status_server.hits["/a.json"] == 1)
        wait_for(lambda: "a" in engine.status()["providers"]["a"]["official"]["source"]
                 if engine.status()["providers"]["a"]["official"] else False, timeout=5)
        assert engine.status()["providers"]["a"]["official"]["indicator"] == "unknown"
    finally:
        started = time.monotonic()
        engine.close()
        assert time.monotonic() - started < 3.0


def test_the_background_thread_polls_every_interval(upstreams: Upstreams,
                                                    status_server: StatusServer) -> None:
    sources = {"a": status_server.page("/a.json", statuspage("major"))}
    engine = engine_for(upstreams, sources, interval=0.2)
    try:
        chat(engine)
        wait_for(lambda: status_server.hits["/a.json"] >= 3)
        assert chat(engine) == "b"
    finally:
        engine.close()
    hits = status_server.hits["/a.json"]
    time.sleep(0.5)
    assert status_server.hits["/a.json"] == hits  # stopped with the engine


# -- one worker polls for all (Redis) -----------------------------------------------------------


def test_one_worker_polls_for_all_through_redis(redis_url: str,
                                                status_server: StatusServer) -> None:
    import uuid

    from badgr_middleware.config import BreakerPolicy
    from badgr_middleware.health.redis import RedisHealthStore

    prefix = f"badgr-test:{uuid.uuid4().hex}:"
    stores = [RedisHealthStore(redis_url, policy=BreakerPolicy(), key_prefix=prefix, timeout=1.0)
              for _ in range(3)]
    url = status_server.page("/a.json", statuspage("critical"))
    pollers = [StatusPoller({"a": url}, interval=30, timeout=1.0, store=s) for s in stores]
    try:
        for poller in pollers:
            poller.poll_once()
        assert status_server.hits["/a.json"] == 1  # one lease, one poll
        assert all(p.deprioritised == {"a"} for p in pollers)
        assert {p.statuses["a"]["indicator"] for p in pollers} == {"critical"}
    finally:
        stores[0].clear()
        for store in stores:
            store.close()


def test_memory_store_polls_in_every_process() -> None:
    store = MemoryHealthStore()
    assert store.official_lease("x", 1.0) and store.official_lease("y", 1.0)
    assert store.get_official() is None
    store.set_official('{"a": {}}', 1.0)
    assert store.get_official() == '{"a": {}}'
