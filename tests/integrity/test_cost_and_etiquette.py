"""Cost-safe fallback, retry etiquette, client deadlines, quota-aware routing and the attempts
record, end to end (issue 10, parts 3 to 6)."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import openai
import pytest

from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

from .conftest import CHEAP, CLIENT_KEY, KEYS, MESSAGES, asgi_gateway, config


def post(gateway: Any, model: str, headers: dict[str, str] | None = None,
         **params: Any) -> httpx.Response:
    body = {"model": model, "messages": MESSAGES, **params}
    with httpx.Client(timeout=10) as http:
        return http.post(f"{gateway.base_url}/chat/completions", json=body, headers={
            "authorization": f"Bearer {CLIENT_KEY}", **(headers or {})})


def words(text: str) -> int:
    return len(text.split())


# -- cost-safe fallback ------------------------------------------------------------------------


def test_a_fallback_to_a_pricier_target_is_refused_with_a_clear_error(sims, serve, recorder):
    """b/pricey costs 33x a/cheap (input; 25x output); max_price_ratio 2 forbids it."""
    sims.a.set_fault("503")
    with serve(config(sims)) as gateway:
        response = post(gateway, "priced")
    assert response.status_code == 502
    error = response.json()["error"]
    assert error["code"] == "price_limit"
    assert "b/pricey: not tried, it costs 33.3x the primary a/cheap, over max_price_ratio 2" in (
        error["message"])
    assert response.headers["x-should-retry"] == "false"
    assert sims.b.requests == []  # never contacted
    (failed,) = recorder.of("request_failed")
    assert [a.target for a in failed.attempts_detail] == ["a/cheap", "a/cheap"]  # a retried


def test_without_a_price_limit_the_same_fallback_serves(sims, serve):
    sims.a.set_fault("503")
    with serve(config(sims)) as gateway:
        response = post(gateway, "priced-open")
    assert response.status_code == 200
    assert response.headers["x-badgr-provider"] == "b"


def test_a_client_can_ask_for_a_price_limit_per_request(sims, serve):
    sims.a.set_fault("503")
    with serve(config(sims)) as gateway:
        allowed = post(gateway, "priced-open", {"x-badgr-max-price-ratio": "40"})
        sims.a.clear()
        sims.a.set_fault("503")
        limited = post(gateway, "priced-open", {"x-badgr-max-price-ratio": "10"})
    assert allowed.status_code == 200  # 33.3x is within 40x
    assert limited.status_code == 502 and limited.json()["error"]["code"] == "price_limit"


def test_a_client_cannot_loosen_the_alias_price_limit(sims, serve):
    sims.a.set_fault("503")
    with serve(config(sims)) as gateway:
        response = post(gateway, "priced", {"x-badgr-max-price-ratio": "100"})
    assert response.status_code == 502 and sims.b.requests == []


def test_a_spend_cap_stops_further_attempts(sims, serve):
    """After a/cheap fails, b/pricey's prompt alone (with max_tokens 1000 out) would cost more
    than the cap: it is not tried."""
    sims.a.set_fault("503")
    with serve(config(sims)) as gateway:
        capped = post(gateway, "priced-open", {"x-badgr-max-cost": "0.001"}, max_tokens=1000)
        sims.a.clear()
        sims.a.set_fault("503")
        enough = post(gateway, "priced-open", {"x-badgr-max-cost": "1"}, max_tokens=1000)
    assert capped.status_code == 502
    assert "would exceed max_cost $0.001" in capped.json()["error"]["message"]
    assert enough.status_code == 200 and len(sims.b.requests) == 1


def test_every_response_reports_its_cost(sims, serve, recorder):
    with serve(config(sims)) as gateway:
        response = post(gateway, "priced")
    assert response.status_code == 200
    usage = response.json()["usage"]
    expected = (usage["prompt_tokens"] * CHEAP["input"]
                + usage["completion_tokens"] * CHEAP["output"]) / 1e6
    assert float(response.headers["x-badgr-cost"]) == pytest.approx(expected, rel=1e-6)
    (finished,) = recorder.of("request_finished")
    assert finished.cost == pytest.approx(expected)
    assert finished.attempts_detail[0].cost == pytest.approx(expected)


def test_the_attempts_detail_header_shows_every_attempt(sims, serve):
    sims.a.fail_next("503")
    with serve(config(sims)) as gateway:
        plain = post(gateway, "priced-open")
        sims.a.fail_next("503")
        detailed = post(gateway, "priced-open", {"x-badgr-attempts-detail": "1"})
    assert "x-badgr-attempts-detail" not in plain.headers  # opt-in
    detail = json.loads(detailed.headers["x-badgr-attempts-detail"])
    assert [(d["target"], d["outcome"], d["status"]) for d in detail] == [
        ("a/cheap", "server_error", 503), ("b/pricey", "ok", 200)]
    assert detail[0]["cost"] == 0 and detail[1]["cost"] > 0
    assert all(d["ms"] >= 0 for d in detail)
    assert float(detailed.headers["x-badgr-cost"]) == pytest.approx(detail[1]["cost"], rel=1e-4)


def test_attempts_detail_can_be_always_on(sims):
    with asgi_gateway(config(sims, attempts_detail=True)) as gateway:
        response = post(gateway, "plain", stream=True)
    detail = json.loads(response.headers["x-badgr-attempts-detail"])
    assert detail == [{"target": "a/m1", "outcome": "streaming", "status": 200,
                       "ms": detail[0]["ms"], "cost": None}]


# -- retry etiquette ---------------------------------------------------------------------------


def counting(app: Any, seen: list[str]) -> Any:
    """An ASGI wrapper that counts the requests reaching ``app``."""
    async def wrapper(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            seen.append(scope["path"])
        await app(scope, receive, send)
    return wrapper


def test_the_sdk_does_not_multiply_badgr_retries(sims):
    """Every target fails: badgr answers once with x-should-retry: false, and the OpenAI SDK
    with max_retries=2 sends exactly one request."""
    from badgr_middleware import BadgrApp

    sims.a.set_fault("503")
    sims.b.set_fault("503")
    seen: list[str] = []
    with (
        SimulatedServer(counting(BadgrApp(config(sims)), seen)) as server,
        openai.OpenAI(base_url=server.base_url, api_key=CLIENT_KEY, max_retries=2,
                      timeout=10) as client,
        pytest.raises(openai.APIStatusError) as caught,
    ):
        client.chat.completions.create(model="plain", messages=MESSAGES)
    assert caught.value.status_code == 502
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert len(seen) == 1
    assert len(sims.a.requests) == 2 and len(sims.b.requests) == 2  # badgr's own retries


def test_the_sdk_would_retry_without_the_header(sims):
    """The control: the same SDK against a bare 503 retries twice, so the test above can fail."""
    sims.a.set_fault("503")
    with (
        openai.OpenAI(base_url=sims.servers["a"].base_url, api_key=KEYS["a"], max_retries=2,
                      timeout=10) as client,
        pytest.raises(openai.APIStatusError),
    ):
        client.chat.completions.create(model="m1", messages=MESSAGES)
    assert len(sims.a.requests) == 3


def test_a_rate_limited_answer_says_when_to_come_back(sims):
    sims.a.set_fault("429:retry-after=1")
    sims.b.set_fault("429:retry-after=1")
    with asgi_gateway(config(sims, retry={"max_retry_after": 0.1})) as gateway:
        response = post(gateway, "plain")
    assert response.status_code == 429
    assert response.headers["retry-after"] == "1"
    assert 0 < int(response.headers["retry-after-ms"]) <= 1000


# -- client deadline ---------------------------------------------------------------------------


def test_a_client_deadline_ends_the_request_in_time(sims, serve):
    sims.a.set_fault("hang")
    sims.b.set_fault("hang")
    with serve(config(sims)) as gateway:
        began = time.monotonic()
        response = post(gateway, "plain", {"x-badgr-deadline-ms": "600"})
        took = time.monotonic() - began
    assert response.status_code == 504
    assert response.json()["error"]["code"] in ("deadline_exceeded", "upstream_timeout")
    assert response.headers["x-should-retry"] == "false"
    assert took < 5  # the configured deadline is 10 s, first byte 2 s


PATIENT = {"connect": 1, "read": 5, "first_byte": 5, "deadline": 10}


def test_a_client_deadline_is_split_so_a_failover_still_fits(sims, serve, recorder):
    """a answers only after 2 s, within the configured timeouts; with a 1.5 s client
    deadline, a gets at most half of it for its first byte, leaving time for b."""
    sims.a.set_fault("ttfb=2")
    with serve(config(sims, timeouts=PATIENT)) as gateway:
        response = post(gateway, "plain", {"x-badgr-deadline-ms": "1500"})
    assert response.status_code == 200
    assert response.headers["x-badgr-provider"] == "b"
    (failed,) = recorder.of("attempt_failed")
    assert failed.error_kind == "timeout" and 0.7 <= failed.latency < 1.2


def test_without_a_client_deadline_the_slow_target_is_waited_for(sims, serve):
    sims.a.set_fault("ttfb=2")
    with serve(config(sims, timeouts=PATIENT)) as gateway:
        response = post(gateway, "plain")
    assert response.status_code == 200 and response.headers["x-badgr-provider"] == "a"


# -- quota-aware routing -----------------------------------------------------------------------


def quota_provider_requests(sim: SimulatedProvider) -> int:
    return len([r for r in sim.requests if r.path.endswith("/chat/completions")])


def test_a_target_low_on_quota_stops_getting_traffic_before_its_429(sims, serve, recorder):
    """q allows 4 requests a minute and says so in x-ratelimit-* headers. With a reserve of
    30%, badgr moves traffic to q2 once q reports 1 of 4 left: q never answers 429."""
    sims.q.reset_rate_limit()
    with serve(config(sims, quota_reserve=0.3)) as gateway, httpx.Client(timeout=10) as http:
        statuses = [post(gateway, "quota") for _ in range(8)]
        status = http.get(f"{gateway.base_url}/status",
                          headers={"authorization": f"Bearer {CLIENT_KEY}"}).json()
    assert [r.status_code for r in statuses] == [200] * 8
    assert [r.headers["x-badgr-provider"] for r in statuses] == ["q"] * 3 + ["q2"] * 5
    assert all(r.headers["x-badgr-attempts"] == "1" for r in statuses)
    assert quota_provider_requests(sims.q) == 3
    assert recorder.of("attempt_failed") == []
    low = status["providers"]["q"]["targets"]["m"]
    assert (low["state"], low["status"], low["reason"]) == ("quota_low", "degraded", "quota_low")
    assert 0 < low["retry_in"] <= 60


def test_without_quota_awareness_the_target_runs_into_its_429(sims, serve, recorder):
    """The control: with the reserve off, the fifth request meets q's 429 first."""
    sims.q.reset_rate_limit()
    with serve(config(sims, quota_reserve=0)) as gateway:
        statuses = [post(gateway, "quota") for _ in range(5)]
    assert [r.status_code for r in statuses] == [200] * 5
    assert statuses[4].headers["x-badgr-attempts"] == "2"
    assert [e.error_kind for e in recorder.of("attempt_failed")] == ["rate_limited"]


def test_a_low_quota_target_is_still_used_when_it_is_the_only_one(sims):
    sims.q.reset_rate_limit()
    cfg = config(sims, quota_reserve=0.3)
    cfg["models"]["only-q"] = ["q/m"]
    with asgi_gateway(cfg) as gateway:
        statuses = [post(gateway, "only-q").status_code for _ in range(4)]
    assert statuses == [200] * 4
