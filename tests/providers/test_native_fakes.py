"""The fake Anthropic and Gemini APIs refuse what the real ones refuse."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from badgr_middleware.simulator import SimulatedAnthropic, SimulatedGemini, SimulatedServer

KEY = "k-0123"
HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}
OK: dict[str, Any] = {"model": "claude", "max_tokens": 10,
                      "messages": [{"role": "user", "content": "Hi"}]}


@pytest.fixture(scope="module")
def servers() -> Iterator[tuple[SimulatedAnthropic, SimulatedGemini, str, str]]:
    anthropic, gemini = SimulatedAnthropic(api_key=KEY), SimulatedGemini(api_key=KEY)
    with SimulatedServer(anthropic) as a, SimulatedServer(gemini) as g:
        yield anthropic, gemini, a.base_url, f"{g.url}/v1beta"


def post(url: str, body: Any, headers: dict[str, str]) -> httpx.Response:
    return httpx.post(url, json=body, headers=headers, timeout=5)


@pytest.mark.parametrize(("headers", "body", "status", "fragment"), [
    ({}, OK, 401, "x-api-key"),
    ({"x-api-key": "wrong", "anthropic-version": "1"}, OK, 401, "invalid x-api-key"),
    ({"x-api-key": KEY}, OK, 400, "anthropic-version"),
    (HEADERS, {**OK, "max_tokens": None}, 400, "max_tokens"),
    (HEADERS, {k: v for k, v in OK.items() if k != "max_tokens"}, 400, "max_tokens"),
    (HEADERS, {**OK, "logprobs": True}, 400, "Extra inputs"),
    (HEADERS, {**OK, "messages": [{"role": "assistant", "content": "x"}]}, 400, "alternate"),
    (HEADERS, {**OK, "messages": [{"role": "user", "content": "a"},
                                  {"role": "user", "content": "b"}]}, 400, "alternate"),
    (HEADERS, {**OK, "messages": [{"role": "user", "content": [{"type": "text", "text": ""}]}]},
     400, "non-empty"),
    (HEADERS, {**OK, "messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f",
                                           "input": {}}]},
        {"role": "user", "content": "no result"}]}, 400, "without `tool_result`"),
    (HEADERS, {**OK, "messages": [
        {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "t9"}]}]},
     400, "unexpected `tool_use_id`"),
    (HEADERS, {**OK, "messages": [
        {"role": "user", "content": "a"},
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "f",
                                           "input": {}}]},
        {"role": "user", "content": [{"type": "text", "text": "x"},
                                     {"type": "tool_result", "tool_use_id": "t1"}]}]},
     400, "at the beginning"),
    (HEADERS, {**OK, "temperature": 1.5}, 400, "temperature"),
])
def test_anthropic_refusals(servers: Any, headers: dict[str, str], body: dict[str, Any],
                            status: int, fragment: str) -> None:
    response = post(f"{servers[2]}/messages", {k: v for k, v in body.items() if v is not None},
                    headers)
    assert response.status_code == status
    assert response.json()["type"] == "error"
    assert fragment in response.json()["error"]["message"]


def test_anthropic_stream_has_pings_and_ends_with_message_stop(servers: Any) -> None:
    response = post(f"{servers[2]}/messages", {**OK, "stream": True}, HEADERS)
    text = response.text
    assert "event: ping" in text and text.rstrip().endswith('"type": "message_stop"}')


def test_anthropic_429_carries_ratelimit_headers(servers: Any) -> None:
    servers[0].fail_next("429:retry-after=2")
    response = post(f"{servers[2]}/messages", OK, HEADERS)
    assert response.status_code == 429 and response.headers["retry-after"] == "2"
    assert response.headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert response.headers["anthropic-ratelimit-requests-reset"].endswith("Z")
    assert response.json()["error"]["type"] == "rate_limit_error"
    with pytest.raises(ValueError):
        servers[0].fail_next("dribble=1")


GOK: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}]}


@pytest.mark.parametrize(("path", "headers", "body", "status", "fragment"), [
    (":generateContent", {}, GOK, 403, "unregistered callers"),
    (":generateContent", {"x-goog-api-key": "bad"}, GOK, 400, "API key not valid"),
    (":generateContent?key=bad", {}, GOK, 400, "API key not valid"),
    (":generateContent", {"x-goog-api-key": KEY}, {**GOK, "model": "x"}, 400, "Unknown name"),
    (":generateContent", {"x-goog-api-key": KEY},
     {"contents": [{"role": "assistant", "parts": [{"text": "x"}]}]}, 400, "valid role"),
    (":generateContent", {"x-goog-api-key": KEY}, {"contents": [{"role": "user", "parts": []}]},
     400, "must not be empty"),
    (":generateContent", {"x-goog-api-key": KEY}, {"contents": [
        {"role": "user", "parts": [{"text": "a"}]},
        {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "g", "response": {}}}]}]},
     400, "number of function response parts"),
    (":streamGenerateContent", {"x-goog-api-key": KEY}, GOK, 400, "alt=sse"),
])
def test_gemini_refusals(servers: Any, path: str, headers: dict[str, str], body: Any,
                         status: int, fragment: str) -> None:
    response = post(f"{servers[3]}/models/gemini-2.5-flash{path}", body, headers)
    assert response.status_code == status
    assert fragment in response.json()["error"]["message"]


def test_gemini_query_key_and_retry_delay(servers: Any) -> None:
    url = f"{servers[3]}/models/gemini-2.5-flash:generateContent?key={KEY}"
    assert post(url, GOK, {}).status_code == 200
    servers[1].fail_next("429:retry-after=7")
    response = post(url, GOK, {})
    assert response.status_code == 429 and "retry-after" not in response.headers
    (detail,) = response.json()["error"]["details"]
    assert detail["retryDelay"] == "7s"
