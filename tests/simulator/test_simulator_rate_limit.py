"""Rate limits: quota headers on every answer, 429 once the window's requests are used up.

The window logic and header formats are pure and tested with a fake clock; the simulators are
driven over real HTTP (httpx, and the openai SDK for the OpenAI-compatible one).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import openai
import pytest

from badgr_middleware.simulator import (
    SimulatedAnthropic,
    SimulatedGemini,
    SimulatedProvider,
    SimulatedServer,
)
from badgr_middleware.simulator.ratelimit import (
    RateWindow,
    anthropic_headers,
    go_duration,
    openai_headers,
    rfc3339,
)

PROMPT = "Say hello please"  # 3 words -> 3 counted tokens
CHAT: dict[str, Any] = {"model": "sim-small", "messages": [{"role": "user", "content": PROMPT}]}
KEY = "k-rate"
ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
MESSAGES: dict[str, Any] = {"model": "claude-x", "max_tokens": 10,
                            "messages": [{"role": "user", "content": PROMPT}]}
GO_DURATION = re.compile(r"^(\d+h)?(\d+m)?(\d+(\.\d+)?s|\d+ms)$")
LONG_WINDOW = 30.0  # never runs out during a test


def seconds(duration: str) -> float:
    """Parse a Go duration as the simulator writes it."""
    assert GO_DURATION.match(duration), duration
    if duration.endswith("ms"):
        return int(duration[:-2]) / 1000
    total = 0.0
    for number, unit in re.findall(r"([\d.]+)([hms])", duration):
        total += float(number) * {"h": 3600, "m": 60, "s": 1}[unit]
    return total


# -- the pure window and header formats -------------------------------------------------------


@pytest.mark.parametrize(("value", "text"), [
    (0, "0s"), (0.0004, "1ms"), (0.25, "250ms"), (0.9991, "1s"), (1, "1s"), (8.64, "8.64s"),
    (12, "12s"), (12.000000001, "12s"), (59.9999, "1m0s"), (90, "1m30s"), (360, "6m0s"),
    (3600, "1h0m0s"), (3661.5, "1h1m1.5s"),
])
def test_go_duration(value: float, text: str) -> None:
    assert go_duration(value) == text


def test_rfc3339_rounds_up_to_the_second() -> None:
    assert rfc3339(0) == "1970-01-01T00:00:00Z"
    assert rfc3339(0.2) == "1970-01-01T00:00:01Z"
    assert rfc3339(1_800_000_000) == "2027-01-15T08:00:00Z"


def test_window_counts_requests_and_resets_after_the_window() -> None:
    window = RateWindow(3, 10.0)
    states = [window.take(100.0 + i, input_tokens=5) for i in range(3)]
    assert [(s.allowed, s.remaining, s.reset_in, s.input_tokens) for s in states] == [
        (True, 2, 10.0, 5), (True, 1, 9.0, 10), (True, 0, 8.0, 15)]
    refused = window.take(105.5, input_tokens=5)
    assert (refused.allowed, refused.remaining, refused.reset_in, refused.input_tokens) == (
        False, 0, 4.5, 15)  # a refused request counts for nothing
    assert refused.retry_after == 5
    assert window.take(109.999).allowed is False
    fresh = window.take(110.0, output_tokens=2)  # the window opened at 100.0
    assert (fresh.allowed, fresh.remaining, fresh.reset_in, fresh.input_tokens,
            fresh.output_tokens) == (True, 2, 10.0, 0, 2)
    window.reset()
    assert window.take(111.0).remaining == 2
    assert window.take(111.0).reset_in == 10.0  # the reset opened a window at 111.0


def test_retry_after_is_at_least_one_second() -> None:
    window = RateWindow(1, 0.2)
    window.take(0.0)
    assert window.take(0.15).retry_after == 1


def test_header_builders() -> None:
    state = RateWindow(4, 60.0).take(0.0, input_tokens=7, output_tokens=3)
    assert dict(openai_headers(state)) == {
        b"x-ratelimit-limit-requests": b"4",
        b"x-ratelimit-limit-tokens": b"4000",
        b"x-ratelimit-remaining-requests": b"3",
        b"x-ratelimit-remaining-tokens": b"3993",
        b"x-ratelimit-reset-requests": b"1m0s",
        b"x-ratelimit-reset-tokens": b"1m0s",
    }
    anthropic = dict(anthropic_headers(state, 1_800_000_000.5))
    reset = b"2027-01-15T08:01:01Z"
    assert anthropic == {
        b"anthropic-ratelimit-requests-limit": b"4",
        b"anthropic-ratelimit-requests-remaining": b"3",
        b"anthropic-ratelimit-requests-reset": reset,
        b"anthropic-ratelimit-tokens-limit": b"4800",
        b"anthropic-ratelimit-tokens-remaining": b"4790",
        b"anthropic-ratelimit-tokens-reset": reset,
        b"anthropic-ratelimit-input-tokens-limit": b"4000",
        b"anthropic-ratelimit-input-tokens-remaining": b"3993",
        b"anthropic-ratelimit-input-tokens-reset": reset,
        b"anthropic-ratelimit-output-tokens-limit": b"800",
        b"anthropic-ratelimit-output-tokens-remaining": b"797",
        b"anthropic-ratelimit-output-tokens-reset": reset,
    }


@pytest.mark.parametrize(("limit", "window"), [(0, 60.0), (-1, 60.0), (True, 60.0), (2, 0.0),
                                               (2, -1.0), (2, float("inf"))])
def test_bad_limits_are_rejected_early(limit: Any, window: float) -> None:
    for make in (SimulatedProvider, SimulatedAnthropic, SimulatedGemini):
        with pytest.raises(ValueError, match="rate_limit"):
            make(rate_limit=limit, rate_limit_window=window)
        with pytest.raises(ValueError, match="rate_limit"):
            make().set_rate_limit(limit, window)


# -- SimulatedProvider ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def openai_shared() -> Iterator[tuple[SimulatedProvider, SimulatedServer]]:
    provider = SimulatedProvider("limited", rate_limit=4, rate_limit_window=LONG_WINDOW)
    with SimulatedServer(provider) as server:
        yield provider, server


@pytest.fixture
def limited(openai_shared: tuple[SimulatedProvider, SimulatedServer]) -> SimulatedProvider:
    openai_shared[0].clear()  # a fresh window, no faults
    openai_shared[0].set_rate_limit(4, LONG_WINDOW)
    return openai_shared[0]


@pytest.fixture
def client(openai_shared: tuple[SimulatedProvider, SimulatedServer],
           limited: SimulatedProvider) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=openai_shared[1].base_url, timeout=5) as http:
        yield http


def test_openai_headers_count_down_then_429(client: httpx.Client) -> None:
    responses = [client.post("/chat/completions", json=CHAT) for _ in range(4)]
    assert [r.status_code for r in responses] == [200] * 4
    assert [r.headers["x-ratelimit-remaining-requests"] for r in responses] == ["3", "2", "1", "0"]
    assert [r.headers["x-ratelimit-remaining-tokens"] for r in responses] == [
        "3997", "3994", "3991", "3988"]
    for r in responses:
        assert r.headers["x-ratelimit-limit-requests"] == "4"
        assert r.headers["x-ratelimit-limit-tokens"] == "4000"
        assert 0 < seconds(r.headers["x-ratelimit-reset-requests"]) <= LONG_WINDOW
        assert r.headers["x-ratelimit-reset-tokens"] == r.headers["x-ratelimit-reset-requests"]
    resets = [seconds(r.headers["x-ratelimit-reset-requests"]) for r in responses]
    assert resets == sorted(resets, reverse=True)  # one window, counting down

    refused = client.post("/chat/completions", json=CHAT)
    assert refused.status_code == 429
    error = refused.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "requests", "rate_limit_exceeded", None)
    assert "Limit 4, Used 4, Requested 1" in error["message"]
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.headers["x-ratelimit-remaining-tokens"] == "3988"  # the 429 counts nothing
    wait = seconds(refused.headers["x-ratelimit-reset-requests"])
    assert refused.headers["retry-after"] == str(max(1, int(-(-wait // 1))))
    assert 1 <= int(refused.headers["retry-after"]) <= LONG_WINDOW
    assert refused.headers["x-sim-provider"] == "limited"


def test_openai_sdk_sees_a_rate_limit_error(
    openai_shared: tuple[SimulatedProvider, SimulatedServer], limited: SimulatedProvider
) -> None:
    with openai.OpenAI(base_url=openai_shared[1].base_url, api_key="sk-x", max_retries=0,
                       timeout=5) as sdk:
        raw = sdk.chat.completions.with_raw_response.create(**CHAT)
        assert raw.headers["x-ratelimit-remaining-requests"] == "3"
        assert raw.parse().choices[0].message.content == "Hello from limited."
        for _ in range(3):
            stream = sdk.chat.completions.create(**CHAT, stream=True)
            assert "".join(c.choices[0].delta.content or "" for c in stream) == (
                "Hello from limited.")
        with pytest.raises(openai.RateLimitError) as caught:
            sdk.chat.completions.create(**CHAT)
    assert caught.value.code == "rate_limit_exceeded"
    assert caught.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert int(caught.value.response.headers["retry-after"]) >= 1


def test_openai_window_resets_after_rate_limit_window(client: httpx.Client,
                                                      limited: SimulatedProvider) -> None:
    limited.set_rate_limit(1, 0.3)
    first = client.post("/chat/completions", json=CHAT)
    assert first.headers["x-ratelimit-remaining-requests"] == "0"
    refused = client.post("/chat/completions", json=CHAT)
    assert (refused.status_code, refused.headers["retry-after"]) == (429, "1")
    time.sleep(seconds(refused.headers["x-ratelimit-reset-requests"]) + 0.02)
    again = client.post("/chat/completions", json=CHAT)
    assert again.status_code == 200
    assert again.headers["x-ratelimit-remaining-requests"] == "0"
    assert len(limited.requests) == 3


def test_openai_reset_rate_limit_and_clear_start_a_fresh_window(
    client: httpx.Client, limited: SimulatedProvider
) -> None:
    for _ in range(4):
        client.post("/chat/completions", json=CHAT)
    assert client.post("/chat/completions", json=CHAT).status_code == 429
    limited.reset_rate_limit()
    assert client.post("/chat/completions", json=CHAT).headers[
        "x-ratelimit-remaining-requests"] == "3"
    limited.clear()
    assert client.post("/chat/completions", json=CHAT).headers[
        "x-ratelimit-remaining-requests"] == "3"
    limited.set_rate_limit(None)
    assert "x-ratelimit-remaining-requests" not in client.post("/chat/completions",
                                                               json=CHAT).headers


def test_openai_counts_completions_and_embeddings_but_not_models(client: httpx.Client) -> None:
    models = client.get("/models")
    assert models.status_code == 200 and "x-ratelimit-limit-requests" not in models.headers
    completion = client.post("/completions", json={"model": "m", "prompt": PROMPT})
    embedding = client.post("/embeddings", json={"model": "m", "input": ["a b", "c"]})
    assert completion.headers["x-ratelimit-remaining-requests"] == "3"
    assert embedding.headers["x-ratelimit-remaining-requests"] == "2"
    assert embedding.headers["x-ratelimit-remaining-tokens"] == str(4000 - 3 - 3)


def test_openai_invalid_requests_are_not_counted(client: httpx.Client) -> None:
    bad = client.post("/chat/completions", json={"messages": []})
    assert bad.status_code == 400 and "x-ratelimit-remaining-requests" not in bad.headers
    bad_fault = client.post("/chat/completions", json=CHAT, headers={"x-sim-fault": "nope"})
    assert bad_fault.status_code == 400
    ok = client.post("/chat/completions", json=CHAT)
    assert ok.headers["x-ratelimit-remaining-requests"] == "3"


def test_openai_rate_limit_comes_before_faults(client: httpx.Client,
                                               limited: SimulatedProvider) -> None:
    limited.set_rate_limit(2, LONG_WINDOW)
    limited.fail_next("503")
    failed = client.post("/chat/completions", json=CHAT)  # counted, then the fault applies
    assert failed.status_code == 503
    assert failed.headers["x-ratelimit-remaining-requests"] == "1"
    streamed = client.post("/chat/completions", json={**CHAT, "stream": True},
                           headers={"x-sim-fault": "midstream-error=1"})
    assert streamed.status_code == 200
    assert streamed.headers["x-ratelimit-remaining-requests"] == "0"
    limited.fail_next("500")
    refused = client.post("/chat/completions", json=CHAT)
    assert refused.status_code == 429  # the queued 500 is still waiting
    assert [r.fault for r in limited.requests] == ["503", "midstream-error=1", None]
    limited.reset_rate_limit()
    assert client.post("/chat/completions", json=CHAT).status_code == 500


# -- SimulatedAnthropic ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def anthropic_shared() -> Iterator[tuple[SimulatedAnthropic, str]]:
    fake = SimulatedAnthropic(api_key=KEY, rate_limit=3, rate_limit_window=LONG_WINDOW)
    with SimulatedServer(fake) as server:
        yield fake, f"{server.base_url}/messages"


@pytest.fixture
def anthropic(anthropic_shared: tuple[SimulatedAnthropic, str]) -> SimulatedAnthropic:
    anthropic_shared[0].clear()
    anthropic_shared[0].set_rate_limit(3, LONG_WINDOW)
    return anthropic_shared[0]


def reset_time(value: str) -> float:
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", value), value
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def test_anthropic_headers_count_down_then_429(
    anthropic_shared: tuple[SimulatedAnthropic, str], anthropic: SimulatedAnthropic
) -> None:
    url = anthropic_shared[1]
    before = time.time()
    responses = [httpx.post(url, json=MESSAGES, headers=ANTHROPIC_HEADERS, timeout=5)
                 for _ in range(3)]
    assert [r.status_code for r in responses] == [200] * 3
    assert [r.headers["anthropic-ratelimit-requests-remaining"] for r in responses] == [
        "2", "1", "0"]
    # each request: 3 input tokens, 3 output tokens ("Hello from anthropic.")
    assert [r.headers["anthropic-ratelimit-input-tokens-remaining"] for r in responses] == [
        "2997", "2994", "2991"]
    assert [r.headers["anthropic-ratelimit-output-tokens-remaining"] for r in responses] == [
        "597", "594", "591"]
    assert [r.headers["anthropic-ratelimit-tokens-remaining"] for r in responses] == [
        "3594", "3588", "3582"]
    for r in responses:
        assert r.headers["anthropic-ratelimit-requests-limit"] == "3"
        assert r.headers["anthropic-ratelimit-tokens-limit"] == "3600"
        assert r.headers["anthropic-ratelimit-input-tokens-limit"] == "3000"
        assert r.headers["anthropic-ratelimit-output-tokens-limit"] == "600"
        for family in ("requests", "tokens", "input-tokens", "output-tokens"):
            reset = reset_time(r.headers[f"anthropic-ratelimit-{family}-reset"])
            assert before < reset <= time.time() + LONG_WINDOW + 1

    refused = httpx.post(url, json=MESSAGES, headers=ANTHROPIC_HEADERS, timeout=5)
    assert refused.status_code == 429
    body = refused.json()
    assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    assert refused.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert refused.headers["anthropic-ratelimit-input-tokens-remaining"] == "2991"
    assert 1 <= int(refused.headers["retry-after"]) <= LONG_WINDOW
    assert refused.headers["request-id"].startswith("req_sim_")


def test_anthropic_stream_and_faults_report_the_real_quota(
    anthropic_shared: tuple[SimulatedAnthropic, str], anthropic: SimulatedAnthropic
) -> None:
    url = anthropic_shared[1]
    streamed = httpx.post(url, json={**MESSAGES, "stream": True}, headers=ANTHROPIC_HEADERS,
                          timeout=5)
    assert streamed.headers["anthropic-ratelimit-requests-remaining"] == "2"
    assert "event: message_stop" in streamed.text
    anthropic.fail_next("429:retry-after=7")
    fault = httpx.post(url, json=MESSAGES, headers=ANTHROPIC_HEADERS, timeout=5)
    assert fault.status_code == 429 and fault.headers["retry-after"] == "7"
    # the fault's made-up quota headers give way to the simulator's real ones
    assert fault.headers.get_list("anthropic-ratelimit-requests-limit") == ["3"]
    assert fault.headers.get_list("anthropic-ratelimit-requests-remaining") == ["1"]


def test_anthropic_refusal_consumes_no_fault_and_the_window_resets(
    anthropic_shared: tuple[SimulatedAnthropic, str], anthropic: SimulatedAnthropic
) -> None:
    url = anthropic_shared[1]
    anthropic.set_rate_limit(1, 0.3)
    assert httpx.post(url, json=MESSAGES, headers=ANTHROPIC_HEADERS).status_code == 200
    anthropic.fail_next("529")
    refused = httpx.post(url, json=MESSAGES, headers=ANTHROPIC_HEADERS)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert reset_time(refused.headers["anthropic-ratelimit-requests-reset"]) <= time.time() + 2
    time.sleep(0.35)
    overloaded = httpx.post(url, json=MESSAGES, headers=ANTHROPIC_HEADERS)
    assert overloaded.status_code == 529
    assert overloaded.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert [r.fault for r in anthropic.requests] == [None, None, "529"]


# -- SimulatedGemini ------------------------------------------------------------------------


def test_gemini_has_no_quota_headers_and_answers_resource_exhausted() -> None:
    fake = SimulatedGemini(api_key=KEY, rate_limit=2, rate_limit_window=LONG_WINDOW)
    with SimulatedServer(fake) as server:
        base = f"{server.url}/v1beta/models/gemini-x"
        headers = {"x-goog-api-key": KEY}
        generate = {"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]}
        ok = httpx.post(f"{base}:generateContent", json=generate, headers=headers)
        embed = httpx.post(f"{base}:embedContent", json={"content": {"parts": [{"text": "a"}]}},
                           headers=headers)
        assert (ok.status_code, embed.status_code) == (200, 200)
        assert not [h for h in ok.headers if "ratelimit" in h]
        fake.fail_next("503")
        refused = httpx.post(f"{base}:streamGenerateContent?alt=sse", json=generate,
                             headers=headers)
        assert refused.status_code == 429 and "retry-after" not in refused.headers
        error = refused.json()["error"]
        assert (error["code"], error["status"]) == (429, "RESOURCE_EXHAUSTED")
        retry = [d for d in error["details"] if d["@type"].endswith("RetryInfo")]
        assert re.fullmatch(r"\d+s", retry[0]["retryDelay"])
        assert 1 <= int(retry[0]["retryDelay"][:-1]) <= LONG_WINDOW
        fake.reset_rate_limit()
        assert httpx.post(f"{base}:generateContent", json=generate,
                          headers=headers).status_code == 503
