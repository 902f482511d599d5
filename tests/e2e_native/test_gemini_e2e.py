"""The official openai SDK, through badgr, against the fake Gemini API."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from native_support import GEMINI_KEY, Gateway, Upstreams

from badgr_middleware.simulator import payloads
from badgr_middleware.simulator.anthropic import DEFAULT_TOOL_INPUT

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"], "additionalProperties": False}}}
MESSAGES = [{"role": "user", "content": "Hi"}]


def test_plain_chat(gateway: Gateway, fakes: Upstreams) -> None:
    with gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="flash", max_tokens=50, temperature=0.3,
            messages=[{"role": "developer", "content": "Be brief."}, *MESSAGES])
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hello from gemini."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "gemini-2.5-flash-sim"
    assert reply.usage is not None and reply.usage.total_tokens == 4
    assert raw.headers["x-badgr-provider"] == "gemini"
    (seen,) = fakes.gemini.requests
    assert seen.path == "/v1beta/models/gemini-2.5-flash:generateContent"
    assert seen.headers["x-goog-api-key"] == GEMINI_KEY
    assert seen.json == {"contents": [{"role": "user", "parts": [{"text": "Hi"}]}],
                         "systemInstruction": {"parts": [{"text": "Be brief."}]},
                         "generationConfig": {"temperature": 0.3, "maxOutputTokens": 50}}


def test_streaming(gateway: Gateway, fakes: Upstreams) -> None:
    with gateway.client() as client:
        chunks = list(client.chat.completions.create(
            model="flash", messages=MESSAGES, stream=True,
            stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == (
        "Hello from gemini.")
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert fakes.gemini.requests[0].path.endswith(":streamGenerateContent?alt=sse")


def test_two_candidates(gateway: Gateway, fakes: Upstreams) -> None:
    with gateway.client() as client:
        reply = client.chat.completions.create(model="flash", messages=MESSAGES, n=2)
    assert [c.message.content for c in reply.choices] == ["Hello from gemini."] * 2


@pytest.mark.parametrize("stream", [False, True])
def test_two_turn_tool_call(gateway: Gateway, fakes: Upstreams, stream: bool) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    with gateway.client() as client:
        if stream:
            with client.chat.completions.stream(model="flash", messages=messages,
                                                tools=[WEATHER]) as events:
                first = events.get_final_completion()
        else:
            first = client.chat.completions.create(model="flash", messages=messages,
                                                   tools=[WEATHER])
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Let me check."
        (call,) = choice.message.tool_calls or []
        assert call.function.name == "get_weather"
        assert call.function.arguments == json.dumps(DEFAULT_TOOL_INPUT, separators=(",", ":"))
        messages.append(choice.message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "18C"})
        second = client.chat.completions.create(model="flash", messages=messages,
                                                tools=[WEATHER])
    assert second.choices[0].message.content == "Tool results: 18C"
    sent = fakes.gemini.requests[1].json["contents"]
    assert [c["role"] for c in sent] == ["user", "model", "user"]
    assert sent[2]["parts"] == [{"functionResponse": {"name": "get_weather",
                                                      "response": {"content": "18C"}}}]


def test_embeddings_through_the_sdk(gateway: Gateway, fakes: Upstreams) -> None:
    with gateway.client() as client:
        one = client.embeddings.create(model="embed", input="hello")  # SDK asks for base64
        many = client.embeddings.create(model="embed", input=["a", "b"],
                                        encoding_format="float")
    assert one.data[0].embedding == pytest.approx(payloads.embedding_vector("hello"), abs=1e-6)
    assert [d.embedding for d in many.data] == [payloads.embedding_vector("a"),
                                                payloads.embedding_vector("b")]
    assert [r.path.rsplit(":", 1)[1] for r in fakes.gemini.requests] == [
        "embedContent", "batchEmbedContents"]


def test_429_retry_delay_in_the_body_feeds_the_cooldown(gateway: Gateway,
                                                        fakes: Upstreams) -> None:
    fakes.gemini.fail_next("429:retry-after=1.5")
    with gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(model="flash-then-openai",
                                                               messages=MESSAGES)
    assert raw.headers["x-badgr-provider"] == "openai"
    target = gateway.app.engine.status()["providers"]["gemini"]["targets"]["gemini-2.5-flash"]
    assert target["reason"] == "rate_limited" and 0 < target["retry_in"] <= 1.5


def test_error_event_before_content_fails_over(gateway: Gateway, fakes: Upstreams) -> None:
    fakes.gemini.fail_next("midstream-error=0")
    with gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="flash-then-openai", messages=MESSAGES, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert (text, raw.headers["x-badgr-provider"]) == ("Hello from OpenAI.", "openai")


def test_error_event_after_content_reaches_the_sdk(gateway: Gateway, fakes: Upstreams) -> None:
    fakes.gemini.fail_next("midstream-error=2")
    with gateway.client() as client:
        stream = client.chat.completions.create(model="flash", messages=MESSAGES, stream=True)
        with pytest.raises(openai.APIError) as info:
            list(stream)
    assert "overloaded" in info.value.message


def test_bad_key_is_an_auth_failure(make_gateway: Any, fakes: Upstreams) -> None:
    gateway = make_gateway()
    gateway.app.engine.wires["gemini"]._json_headers["x-goog-api-key"] = "wrong"
    with gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(model="flash-then-openai",
                                                               messages=MESSAGES)
    assert raw.headers["x-badgr-provider"] == "openai"
    status = gateway.app.engine.status()["providers"]["gemini"]
    assert (status["state"], status["reason"]) == ("cooling_down", "unauthorized")


def test_bypass_to_gemini_when_openrouter_is_down(gateway: Gateway, fakes: Upstreams) -> None:
    fakes.openrouter.set_fault("503")
    with gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(model="google/gemini-2.5-pro",
                                                               messages=MESSAGES)
    assert raw.parse().choices[0].message.content == "Hello from gemini."
    assert raw.headers["x-badgr-provider"] == "gemini"
    assert fakes.gemini.requests[0].path == "/v1beta/models/gemini-2.5-pro:generateContent"
