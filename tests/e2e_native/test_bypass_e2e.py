"""OpenRouter bypass end to end: OpenRouter ids served by OpenRouter while it is healthy and by
the native provider, with the team's own key, when it is not."""

from __future__ import annotations

from typing import Any

import pytest
from native_support import Gateway, Upstreams

MESSAGES = [{"role": "user", "content": "Hi"}]


def ask(gateway: Gateway, model: str, **params: Any) -> tuple[str, str, Any]:
    with gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(model=model, messages=MESSAGES,
                                                                **params)
        if params.get("stream"):
            text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
            return text, raw.headers["x-badgr-provider"], None
        reply = raw.parse()
    return reply.choices[0].message.content or "", raw.headers["x-badgr-provider"], reply


def test_healthy_openrouter_serves_openrouter_ids(gateway: Gateway, fakes: Upstreams) -> None:
    text, provider, reply = ask(gateway, "anthropic/claude-sonnet-4.5")
    assert (text, provider) == ("Hello from OpenRouter.", "openrouter")
    assert reply.model == "anthropic/claude-sonnet-4.5"
    assert fakes.openrouter.requests[0].json["model"] == "anthropic/claude-sonnet-4.5"
    assert fakes.anthropic.requests == []


@pytest.mark.parametrize("fault", ["502", "503"])
@pytest.mark.parametrize("stream", [False, True])
def test_openrouter_down_goes_to_anthropic(gateway: Gateway, fakes: Upstreams, fault: str,
                                           stream: bool) -> None:
    fakes.openrouter.set_fault(fault)
    text, provider, reply = ask(gateway, "anthropic/claude-sonnet-4.5", stream=stream)
    assert (text, provider) == ("Hello from anthropic.", "anthropic")
    if reply is not None:
        assert reply.model == "claude-sonnet-4-5"  # the native id the catalog maps to
    assert fakes.anthropic.requests[0].json["model"] == "claude-sonnet-4-5"


def test_openrouter_refusing_connections(make_gateway: Any, fakes: Upstreams) -> None:
    gateway = make_gateway(openrouter_down="refused")
    text, provider, _ = ask(gateway, "anthropic/claude-sonnet-4.5")
    assert (text, provider) == ("Hello from anthropic.", "anthropic")
    text, provider, _ = ask(gateway, "openai/gpt-4o")
    assert (text, provider) == ("Hello from OpenAI.", "openai")
    assert [r.json["model"] for r in fakes.openai.requests] == ["gpt-4o"]


def test_openrouter_out_of_credits_stays_bypassed(gateway: Gateway, fakes: Upstreams) -> None:
    fakes.openrouter.set_fault("402")
    for _ in range(2):
        _, provider, _ = ask(gateway, "anthropic/claude-sonnet-4.5")
        assert provider == "anthropic"
    assert len(fakes.openrouter.requests) == 1  # then the provider cooldown skips it


def test_bypassed_tool_call_then_result(gateway: Gateway, fakes: Upstreams) -> None:
    fakes.openrouter.set_fault("503")
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"q": {"type": "string"}}}}}]
    with gateway.client() as client:
        first = client.chat.completions.create(model="anthropic/claude-sonnet-4.5",
                                               messages=MESSAGES, tools=tools)
        (call,) = first.choices[0].message.tool_calls or []
        second = client.chat.completions.create(
            model="anthropic/claude-sonnet-4.5", tools=tools,
            messages=[*MESSAGES, first.choices[0].message.model_dump(exclude_none=True),
                      {"role": "tool", "tool_call_id": call.id, "content": "found it"}])
    assert second.choices[0].message.content == "Tool results: found it"
