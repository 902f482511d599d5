"""Continuation: each simulator answers a partial answer with the rest of its reply.

Driven over real HTTP: the openai SDK for SimulatedProvider, httpx for the native fakes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
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
from badgr_middleware.simulator.continuation import continuation, remainder

REPLY = "The quick brown fox jumps over the lazy dog."
PARTIAL = "The quick brown "  # as a broken stream left it, trailing space and all
REST = " fox jumps over the lazy dog."  # REPLY[len(PARTIAL.rstrip()):]
QUESTION = "Tell me about the fox"
GO_ON = "Continue exactly where you stopped."
KEY = "k-cont"
ANTHROPIC_HEADERS = {"x-api-key": KEY, "anthropic-version": "2023-06-01"}


def test_remainder_rule() -> None:
    assert remainder(REPLY, PARTIAL) == REST
    assert remainder(REPLY, "The quick brown") == REST
    assert remainder(REPLY, "T") == REPLY[1:]
    assert remainder(REPLY, REPLY) is None  # not a proper prefix
    assert remainder(REPLY, REPLY + "  ") is None
    assert remainder(REPLY, "   ") is None  # empty once stripped
    assert remainder(REPLY, "") is None
    assert remainder(REPLY, "The slow") is None
    assert remainder(REPLY, " The quick") is None  # leading whitespace is kept


def test_continuation_turn_shapes() -> None:
    def rest(*turns: tuple[str, str]) -> str | None:
        return continuation(REPLY, turns, assistant="assistant")

    assert rest(("user", QUESTION), ("assistant", PARTIAL)) == REST
    assert rest(("user", QUESTION), ("assistant", PARTIAL), ("user", GO_ON)) == REST
    assert rest(("assistant", PARTIAL), ("user", GO_ON), ("user", GO_ON)) is None
    assert rest(("assistant", PARTIAL), ("tool", "42")) is None
    assert rest(("user", PARTIAL)) is None
    assert rest() is None
    assert continuation(REPLY, [("model", PARTIAL)], assistant="model") == REST


# -- SimulatedProvider (OpenAI chat completions) -------------------------------------------


@pytest.fixture(scope="module")
def openai_server() -> Iterator[tuple[SimulatedProvider, SimulatedServer]]:
    provider = SimulatedProvider("cont", reply=REPLY, stream_chunks=3)
    with SimulatedServer(provider) as server:
        yield provider, server


@pytest.fixture
def sdk(openai_server: tuple[SimulatedProvider, SimulatedServer]) -> Iterator[openai.OpenAI]:
    openai_server[0].clear()
    base_url = openai_server[1].base_url
    with openai.OpenAI(base_url=base_url, api_key="sk-x", max_retries=0, timeout=5) as client:
        yield client


def prefilled(*tail: dict[str, Any], partial: Any = PARTIAL) -> list[Any]:
    return [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": partial},
            *tail]


def test_openai_continues_a_final_assistant_message(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="sim-small", messages=prefilled())
    assert completion.choices[0].message.content == REST
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 6  # the words of REST only
    assert completion.usage.prompt_tokens == 5 + 3  # QUESTION and PARTIAL


def test_openai_continues_after_a_continuation_instruction(sdk: openai.OpenAI) -> None:
    messages = prefilled({"role": "user", "content": GO_ON})
    completion = sdk.chat.completions.create(model="sim-small", messages=messages)
    assert completion.choices[0].message.content == REST


def test_openai_streams_the_remainder_in_stream_chunks_pieces(sdk: openai.OpenAI) -> None:
    for messages in (prefilled(), prefilled({"role": "user", "content": GO_ON})):
        stream = sdk.chat.completions.create(
            model="sim-small", messages=messages, stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        pieces = [c.choices[0].delta.content for c in chunks
                  if c.choices and c.choices[0].delta.content]
        assert "".join(pieces) == REST
        assert len(pieces) == 3
        assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 6


def test_openai_joins_text_parts_of_the_assistant_message(sdk: openai.OpenAI) -> None:
    parts = [{"type": "text", "text": "The quick "}, {"type": "text", "text": "brown fox\n"}]
    completion = sdk.chat.completions.create(model="sim-small",
                                             messages=prefilled(partial=parts))
    assert completion.choices[0].message.content == " jumps over the lazy dog."


def test_openai_continuation_is_text_even_when_tools_are_offered(sdk: openai.OpenAI) -> None:
    tools: Any = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    completion = sdk.chat.completions.create(model="sim-small", messages=prefilled(), tools=tools)
    assert completion.choices[0].message.content == REST
    assert completion.choices[0].message.tool_calls is None


@pytest.mark.parametrize("messages", [
    pytest.param(prefilled(partial=REPLY), id="whole-reply"),
    pytest.param(prefilled(partial="Something else"), id="not-a-prefix"),
    pytest.param(prefilled(partial="  \n"), id="blank"),
    pytest.param(prefilled({"role": "user", "content": GO_ON}, {"role": "user", "content": "?"}),
                 id="two-user-messages-after"),
    pytest.param([{"role": "user", "content": PARTIAL}], id="prefix-as-user"),
])
def test_openai_answers_in_full_otherwise(sdk: openai.OpenAI, messages: list[Any]) -> None:
    completion = sdk.chat.completions.create(model="sim-small", messages=messages)
    assert completion.choices[0].message.content == REPLY
    stream = sdk.chat.completions.create(model="sim-small", messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == REPLY


# -- SimulatedAnthropic ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def anthropic_url() -> Iterator[str]:
    fake = SimulatedAnthropic(api_key=KEY, reply=REPLY, stream_pieces=3)
    with SimulatedServer(fake) as server:
        yield f"{server.base_url}/messages"


def messages_body(messages: list[Any], **extra: Any) -> dict[str, Any]:
    return {"model": "claude-x", "max_tokens": 50, "messages": messages, **extra}


def anthropic_stream_text(response: httpx.Response) -> str:
    text = ""
    for event in response.text.split("\n\n"):
        lines = event.split("\n")
        if lines[0] == "event: content_block_delta":
            text += json.loads(lines[1].removeprefix("data: "))["delta"]["text"]
    return text


@pytest.mark.parametrize("messages", [
    pytest.param([{"role": "user", "content": QUESTION},
                  {"role": "assistant", "content": "The quick brown"}], id="prefill"),
    pytest.param([{"role": "user", "content": QUESTION},
                  {"role": "assistant", "content": [{"type": "text", "text": "The quick "},
                                                    {"type": "text", "text": "brown"}]}],
                 id="prefill-blocks"),
    pytest.param([{"role": "user", "content": QUESTION},
                  {"role": "assistant", "content": PARTIAL},
                  {"role": "user", "content": GO_ON}], id="then-user"),
])
def test_anthropic_answers_the_remainder(anthropic_url: str, messages: list[Any]) -> None:
    response = httpx.post(anthropic_url, json=messages_body(messages),
                          headers=ANTHROPIC_HEADERS, timeout=5)
    assert response.status_code == 200, response.text
    message = response.json()
    assert message["content"] == [{"type": "text", "text": REST}]
    assert message["stop_reason"] == "end_turn"
    assert message["usage"]["output_tokens"] == 6

    streamed = httpx.post(anthropic_url, json=messages_body(messages, stream=True),
                          headers=ANTHROPIC_HEADERS, timeout=5)
    assert streamed.status_code == 200
    assert anthropic_stream_text(streamed) == REST
    assert streamed.text.count("event: content_block_delta") == 3


def test_anthropic_refuses_a_prefill_ending_with_whitespace(anthropic_url: str) -> None:
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": PARTIAL}]
    response = httpx.post(anthropic_url, json=messages_body(messages),
                          headers=ANTHROPIC_HEADERS, timeout=5)
    assert response.status_code == 400
    assert response.json()["type"] == "error"
    assert response.json()["error"] == {
        "type": "invalid_request_error",
        "message": "messages: final assistant content cannot end with trailing whitespace",
    }


@pytest.mark.parametrize("partial", [REPLY, "A different start"])
def test_anthropic_answers_in_full_otherwise(anthropic_url: str, partial: str) -> None:
    messages = [{"role": "user", "content": QUESTION}, {"role": "assistant", "content": partial}]
    response = httpx.post(anthropic_url, json=messages_body(messages),
                          headers=ANTHROPIC_HEADERS, timeout=5)
    assert response.json()["content"] == [{"type": "text", "text": REPLY}]


# -- SimulatedGemini ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gemini_url() -> Iterator[str]:
    fake = SimulatedGemini(api_key=KEY, reply=REPLY, stream_pieces=3)
    with SimulatedServer(fake) as server:
        yield f"{server.url}/v1beta/models/gemini-x"


def turn(role: str, *texts: str) -> dict[str, Any]:
    return {"role": role, "parts": [{"text": text} for text in texts]}


def gemini_stream_text(response: httpx.Response) -> tuple[str, int]:
    events = [json.loads(e.removeprefix("data: ")) for e in response.text.split("\r\n\r\n") if e]
    pieces = [p["text"] for e in events for p in e["candidates"][0]["content"]["parts"]
              if p.get("text")]
    return "".join(pieces), len(pieces)


@pytest.mark.parametrize("contents", [
    pytest.param([turn("user", QUESTION), turn("model", PARTIAL)], id="model-last"),
    pytest.param([turn("user", QUESTION), turn("model", "The quick ", "brown")], id="parts"),
    pytest.param([turn("user", QUESTION), turn("model", PARTIAL), turn("user", GO_ON)],
                 id="then-user"),
])
def test_gemini_answers_the_remainder(gemini_url: str, contents: list[Any]) -> None:
    response = httpx.post(f"{gemini_url}:generateContent", json={"contents": contents},
                          headers={"x-goog-api-key": KEY}, timeout=5)
    assert response.status_code == 200, response.text
    candidate = response.json()["candidates"][0]
    assert candidate["content"]["parts"] == [{"text": REST}]
    assert response.json()["usageMetadata"]["candidatesTokenCount"] == 6

    streamed = httpx.post(f"{gemini_url}:streamGenerateContent?alt=sse",
                          json={"contents": contents}, headers={"x-goog-api-key": KEY}, timeout=5)
    assert gemini_stream_text(streamed) == (REST, 3)


@pytest.mark.parametrize("contents", [
    pytest.param([turn("user", QUESTION), turn("model", REPLY)], id="whole-reply"),
    pytest.param([turn("user", QUESTION), turn("model", "Other")], id="not-a-prefix"),
    pytest.param([turn("model", PARTIAL), turn("user", GO_ON), turn("user", "?")],
                 id="two-user-turns-after"),
])
def test_gemini_answers_in_full_otherwise(gemini_url: str, contents: list[Any]) -> None:
    response = httpx.post(f"{gemini_url}:generateContent", json={"contents": contents},
                          headers={"x-goog-api-key": KEY}, timeout=5)
    assert response.json()["candidates"][0]["content"]["parts"] == [{"text": REPLY}]
