"""The official openai SDK, through badgr, against the fake Anthropic API."""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from native_support import ANTHROPIC_KEY, Gateway, Upstreams

from badgr_middleware.simulator.anthropic import DEFAULT_TOOL_INPUT

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}
ARGUMENTS = json.dumps(DEFAULT_TOOL_INPUT)  # exactly what the fake streams, piece by piece


def test_plain_chat(gateway: Gateway, fakes: Upstreams) -> None:
    with gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="claude", max_tokens=100,
            messages=[{"role": "system", "content": "Be brief."},
                      {"role": "user", "content": "Hi"}, {"role": "user", "content": "there"}])
    reply = raw.parse()
    assert reply.choices[0].message.content == "Hello from anthropic."
    assert reply.choices[0].finish_reason == "stop"
    assert reply.model == "claude-sonnet-4-5"
    assert reply.usage is not None and reply.usage.completion_tokens == 3
    assert raw.headers["x-badgr-provider"] == "anthropic"
    (seen,) = fakes.anthropic.requests
    assert seen.headers["x-api-key"] == ANTHROPIC_KEY
    assert "authorization" not in seen.headers
    assert seen.json == {
        "model": "claude-sonnet-4-5", "system": "Be brief.", "max_tokens": 100,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"},
                                                  {"type": "text", "text": "there"}]}],
    }


def test_max_tokens_defaulted_and_unsupported_fields_dropped(gateway: Gateway,
                                                             fakes: Upstreams) -> None:
    with gateway.client() as client:
        reply = client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "Hi"}],
            logprobs=True, seed=3, presence_penalty=0.5, user="u1")
    assert reply.choices[0].message.content == "Hello from anthropic."
    (seen,) = fakes.anthropic.requests
    assert seen.json["max_tokens"] == 4096 and seen.json["metadata"] == {"user_id": "u1"}


def test_streaming_with_usage(gateway: Gateway, fakes: Upstreams) -> None:
    with gateway.client() as client:
        stream = client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "Hi"}], stream=True,
            stream_options={"include_usage": True})
        chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "Hello from anthropic."
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.total_tokens == 4
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-msg_sim_")


def test_two_turn_tool_call(gateway: Gateway, fakes: Upstreams) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    with gateway.client() as client:
        first = client.chat.completions.create(model="claude", messages=messages,
                                               tools=[WEATHER])
        choice = first.choices[0]
        assert choice.finish_reason == "tool_calls"
        assert choice.message.content == "Let me check."
        (call,) = choice.message.tool_calls or []
        assert call.function.name == "get_weather"
        assert json.loads(call.function.arguments) == DEFAULT_TOOL_INPUT
        messages.append(choice.message.model_dump(exclude_none=True))
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "18C and sunny"})
        second = client.chat.completions.create(model="claude", messages=messages,
                                                tools=[WEATHER])
    assert second.choices[0].message.content == "Tool results: 18C and sunny"
    assert second.choices[0].finish_reason == "stop"
    # the fake validated the pairing: tool_use in the assistant turn, tool_result right after
    sent = fakes.anthropic.requests[1].json["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "user"]
    assert sent[2]["content"][0] == {"type": "tool_result", "tool_use_id": call.id,
                                     "content": "18C and sunny"}


def test_streamed_tool_call_is_reconstructed_by_the_sdk_accumulator(
    gateway: Gateway, fakes: Upstreams
) -> None:
    messages: list[Any] = [{"role": "user", "content": "Weather in Paris?"}]
    with gateway.client() as client:
        with client.chat.completions.stream(model="claude", messages=messages,
                                            tools=[WEATHER], tool_choice="required") as stream:
            final = stream.get_final_completion()
        choice = final.choices[0]
        (call,) = choice.message.tool_calls or []
        assert call.id.startswith("toolu_sim_")
        assert call.function.name == "get_weather"
        assert call.function.arguments == ARGUMENTS  # byte for byte, from 5 fragments
        assert choice.finish_reason == "tool_calls"
        messages.append({"role": "assistant", "content": None, "tool_calls": [
            {"id": call.id, "type": "function",
             "function": {"name": call.function.name, "arguments": call.function.arguments}}]})
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "18C"})
        with client.chat.completions.stream(model="claude", messages=messages,
                                            tools=[WEATHER]) as stream:
            second = stream.get_final_completion()
    assert second.choices[0].message.content == "Tool results: 18C"


async def test_async_streaming(gateway: Gateway, fakes: Upstreams) -> None:
    async with gateway.async_client() as client:
        stream = await client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "Hi"}], stream=True)
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == "Hello from anthropic."


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


pytestmark = pytest.mark.anyio


# -- failures ---------------------------------------------------------------------------------


def test_overloaded_529_fails_over(gateway: Gateway, fakes: Upstreams) -> None:
    fakes.anthropic.set_fault("529")
    with gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="claude-then-openai", messages=[{"role": "user", "content": "Hi"}])
    assert raw.parse().choices[0].message.content == "Hello from OpenAI."
    assert raw.headers["x-badgr-provider"] == "openai"


@pytest.mark.parametrize("stream", [False, True])
def test_overloaded_alone_is_a_server_error(gateway: Gateway, fakes: Upstreams,
                                            stream: bool) -> None:
    fakes.anthropic.set_fault("529")
    with gateway.client() as client, pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(model="claude", stream=stream,
                                       messages=[{"role": "user", "content": "Hi"}])
    assert info.value.status_code == 502
    assert "server_error (529)" in str(info.value.message)
    assert len(fakes.anthropic.requests) == 2  # retried once, as any 5xx


def test_overloaded_event_right_after_message_start_fails_over_invisibly(
    gateway: Gateway, fakes: Upstreams
) -> None:
    fakes.anthropic.fail_next("midstream-error=0")
    with gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="claude-then-openai", messages=[{"role": "user", "content": "Hi"}],
            stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices)
    assert text == "Hello from OpenAI."
    assert raw.headers["x-badgr-provider"] == "openai"


def test_error_event_after_content_reaches_the_sdk(gateway: Gateway, fakes: Upstreams) -> None:
    fakes.anthropic.fail_next("midstream-error=3")
    seen = ""
    with gateway.client() as client:
        stream = client.chat.completions.create(
            model="claude-then-openai", messages=[{"role": "user", "content": "Hi"}],
            stream=True)
        with pytest.raises(openai.APIError) as info:
            for c in stream:
                seen += (c.choices[0].delta.content or "") if c.choices else ""
    assert info.value.message == "Overloaded"
    assert seen and "Hello from anthropic.".startswith(seen)
    assert fakes.openai.requests == []


def test_cut_stream_ends_with_an_error(gateway: Gateway, fakes: Upstreams) -> None:
    fakes.anthropic.fail_next("cut=4")
    with gateway.client() as client:
        stream = client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "Hi"}], stream=True)
        with pytest.raises(openai.APIError) as info:
            list(stream)
    assert "interrupted" in info.value.message


def test_rate_limit_headers_feed_the_cooldown(gateway: Gateway, fakes: Upstreams) -> None:
    fakes.anthropic.fail_next("429")  # no retry-after: only anthropic-ratelimit-* (1 s)
    with gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="claude-then-openai", messages=[{"role": "user", "content": "Hi"}])
        assert raw.headers["x-badgr-provider"] == "openai"
        status = gateway.app.engine.status()
        target = status["providers"]["anthropic"]["targets"]["claude-sonnet-4-5"]
        assert target["state"] == "cooling_down" and target["reason"] == "rate_limited"
        assert 0 < target["retry_in"] <= 2.0  # from the reset header, not the 10 s default
        again = client.chat.completions.with_raw_response.create(
            model="claude-then-openai", messages=[{"role": "user", "content": "Hi"}])
    assert again.headers["x-badgr-provider"] == "openai"
    assert len(fakes.anthropic.requests) == 1  # skipped while cooling down


def test_spend_limit_is_a_quota_stop(gateway: Gateway, fakes: Upstreams) -> None:
    fakes.anthropic.fail_next("429:quota")
    with gateway.client() as client:
        client.chat.completions.create(model="claude-then-openai",
                                       messages=[{"role": "user", "content": "Hi"}])
    status = gateway.app.engine.status()["providers"]["anthropic"]
    assert (status["state"], status["reason"]) == ("cooling_down", "quota_exhausted")


def test_upstream_validation_error_reaches_the_client(gateway: Gateway,
                                                      fakes: Upstreams) -> None:
    # an empty tool name passes badgr but not Anthropic's schema: the client's own 400
    with gateway.client() as client, pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(
            model="claude", messages=[{"role": "user", "content": "Hi"}],
            tools=[{"type": "function", "function": {"name": "bad name!"}}])
    assert "tools.0.name" in info.value.message
    assert info.value.response.headers["x-should-retry"] == "false"


def test_n_greater_than_one_is_refused(gateway: Gateway, fakes: Upstreams) -> None:
    with gateway.client() as client, pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", n=2,
                                       messages=[{"role": "user", "content": "Hi"}])
    assert info.value.code == "unsupported_parameter"
    assert info.value.param == "n"
    assert fakes.anthropic.requests == []


def test_embeddings_on_an_anthropic_target_are_refused(gateway: Gateway,
                                                       fakes: Upstreams) -> None:
    with gateway.client() as client, pytest.raises(openai.BadRequestError) as info:
        client.embeddings.create(model="claude", input="hello")
    assert info.value.code == "unsupported_route"
    assert fakes.anthropic.requests == []


def test_a_request_anthropic_cannot_serve_moves_on_to_the_next_target(
    gateway: Gateway, fakes: Upstreams
) -> None:
    with gateway.client() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="claude-then-openai", n=2, messages=[{"role": "user", "content": "Hi"}])
    assert raw.headers["x-badgr-provider"] == "openai"
    assert fakes.anthropic.requests == []  # never sent upstream


def test_a_request_no_target_can_serve_is_a_clear_400(gateway: Gateway, fakes: Upstreams) -> None:
    with gateway.client() as client, pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="claude", n=2,
                                       messages=[{"role": "user", "content": "Hi"}])
    assert info.value.code == "unsupported_parameter"
    assert info.value.param == "n"
    assert fakes.anthropic.requests == []
