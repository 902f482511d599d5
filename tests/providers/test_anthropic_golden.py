"""Golden tables for the Anthropic wire: OpenAI request -> exact upstream JSON, Anthropic answer
-> exact OpenAI body, Anthropic error -> exact failure."""

from __future__ import annotations

import json
from typing import Any

import pytest

from badgr_middleware.config import Config
from badgr_middleware.providers import wire_for
from badgr_middleware.providers.anthropic import AnthropicWire
from badgr_middleware.providers.common import UnsupportedRequest
from badgr_middleware.routing.outcomes import Failure, FailureKind
from badgr_middleware.routing.plan import Plan, RoutedRequest, Target

KEY = "sk-ant-test-0123456789"
NOW = 1_700_000_000.0
CONFIG = Config.from_dict({
    "providers": {
        "anthropic": {"api_key": KEY, "base_url": "http://127.0.0.1:9/v1"},
        "beta": {"kind": "anthropic", "base_url": "http://127.0.0.1:9/v1", "api_key": KEY,
                 "headers": {"anthropic-beta": "tools-2024-05-16"}},
    },
    "allow_anonymous": True,
})
WIRE = AnthropicWire(CONFIG.providers["anthropic"], clock=lambda: NOW)
TARGET = Target("anthropic", "claude-sonnet-4-5")
PNG = "iVBORw0KGgo="


def routed(body: dict[str, Any], *, stream: bool = False,
           route: str = "chat/completions") -> RoutedRequest:
    body = {"model": "m", **body}
    return RoutedRequest(route, body, Plan((TARGET,)), "req_1", stream, "m")


def upstream_json(body: dict[str, Any], *, stream: bool = False) -> dict[str, Any]:
    request = WIRE.build_request(routed(body, stream=stream), TARGET)
    return json.loads(request.content)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def ublock(*texts: str) -> list[dict[str, Any]]:
    return [{"type": "text", "text": t} for t in texts]


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"]},
    },
}
WEATHER_SPEC = {
    "name": "get_weather",
    "description": "Weather for a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}},
                     "required": ["city"]},
}
BASE = {"model": "claude-sonnet-4-5", "max_tokens": 4096}

# (name, OpenAI request fields, exact Anthropic body)
REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (
        "plain, max_tokens defaulted",
        {"messages": [user("Hi")]},
        {**BASE, "messages": [{"role": "user", "content": ublock("Hi")}]},
    ),
    (
        "system and developer anywhere, joined into system",
        {"messages": [
            {"role": "system", "content": "Be terse."},
            user("Hi"),
            {"role": "developer", "content": [{"type": "text", "text": "No emojis."}]},
        ]},
        {"model": "claude-sonnet-4-5", "system": "Be terse.\n\nNo emojis.",
         "messages": [{"role": "user", "content": ublock("Hi")}], "max_tokens": 4096},
    ),
    (
        "consecutive same-role messages merged",
        {"messages": [user("a"), user("b"), {"role": "assistant", "content": "c"},
                      {"role": "assistant", "content": "d"}, user("e")]},
        {**BASE, "messages": [
            {"role": "user", "content": ublock("a", "b")},
            {"role": "assistant", "content": ublock("c", "d")},
            {"role": "user", "content": ublock("e")},
        ]},
    ),
    (
        "max_completion_tokens wins over max_tokens; stop, temperature clamp, top_p, user",
        {"messages": [user("Hi")], "max_completion_tokens": 50, "max_tokens": 99,
         "stop": "END", "temperature": 1.7, "top_p": 0.5, "user": "u-42"},
        {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": ublock("Hi")}],
         "max_tokens": 50, "stop_sequences": ["END"], "temperature": 1.0, "top_p": 0.5,
         "metadata": {"user_id": "u-42"}},
    ),
    (
        "stop list; temperature kept below 1",
        {"messages": [user("Hi")], "stop": ["a", "b"], "temperature": 0.2, "max_tokens": 10},
        {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": ublock("Hi")}],
         "max_tokens": 10, "stop_sequences": ["a", "b"], "temperature": 0.2},
    ),
    (
        "dropped: logprobs, logit_bias, penalties, seed, n=1, stream_options, OpenRouter fields",
        {"messages": [user("Hi")], "logprobs": True, "top_logprobs": 2, "logit_bias": {"1": 2},
         "presence_penalty": 1, "frequency_penalty": 1, "seed": 7, "n": 1,
         "service_tier": "auto", "store": True, "metadata": {"a": "b"},
         "reasoning_effort": "low", "transforms": ["middle-out"], "provider": {"sort": "price"},
         "models": ["x"]},
        {**BASE, "messages": [{"role": "user", "content": ublock("Hi")}]},
    ),
    (
        "images: data URL and http URL; detail dropped; empty text dropped",
        {"messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "text", "text": ""},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}",
                                                "detail": "high"}},
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}},
        ]}]},
        {**BASE, "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": PNG}},
            {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}},
        ]}]},
    ),
    (
        "tools with tool_choice auto",
        {"messages": [user("Weather?")], "tools": [WEATHER_TOOL], "tool_choice": "auto"},
        {**BASE, "messages": [{"role": "user", "content": ublock("Weather?")}],
         "tools": [WEATHER_SPEC], "tool_choice": {"type": "auto"}},
    ),
    (
        "tool_choice required -> any",
        {"messages": [user("Weather?")], "tools": [WEATHER_TOOL], "tool_choice": "required"},
        {**BASE, "messages": [{"role": "user", "content": ublock("Weather?")}],
         "tools": [WEATHER_SPEC], "tool_choice": {"type": "any"}},
    ),
    (
        "tool_choice none",
        {"messages": [user("Weather?")], "tools": [WEATHER_TOOL], "tool_choice": "none"},
        {**BASE, "messages": [{"role": "user", "content": ublock("Weather?")}],
         "tools": [WEATHER_SPEC], "tool_choice": {"type": "none"}},
    ),
    (
        "tool_choice named function -> tool",
        {"messages": [user("Weather?")], "tools": [WEATHER_TOOL],
         "tool_choice": {"type": "function", "function": {"name": "get_weather"}}},
        {**BASE, "messages": [{"role": "user", "content": ublock("Weather?")}],
         "tools": [WEATHER_SPEC], "tool_choice": {"type": "tool", "name": "get_weather"}},
    ),
    (
        "allowed_tools narrows the tools",
        {"messages": [user("Weather?")],
         "tools": [WEATHER_TOOL, {"type": "function", "function": {"name": "other"}}],
         "tool_choice": {"type": "allowed_tools", "allowed_tools": {
             "mode": "required",
             "tools": [{"type": "function", "function": {"name": "get_weather"}}]}}},
        {**BASE, "messages": [{"role": "user", "content": ublock("Weather?")}],
         "tools": [WEATHER_SPEC], "tool_choice": {"type": "any"}},
    ),
    (
        "parallel_tool_calls false without tool_choice; tool without parameters",
        {"messages": [user("Go")], "parallel_tool_calls": False,
         "tools": [{"type": "function", "function": {"name": "ping"}}]},
        {**BASE, "messages": [{"role": "user", "content": ublock("Go")}],
         "tools": [{"name": "ping", "input_schema": {"type": "object", "properties": {}}}],
         "tool_choice": {"type": "auto", "disable_parallel_tool_use": True}},
    ),
    (
        "parallel_tool_calls false with required",
        {"messages": [user("Go")], "parallel_tool_calls": False, "tool_choice": "required",
         "tools": [WEATHER_TOOL]},
        {**BASE, "messages": [{"role": "user", "content": ublock("Go")}],
         "tools": [WEATHER_SPEC],
         "tool_choice": {"type": "any", "disable_parallel_tool_use": True}},
    ),
    (
        "tool_choice without tools is dropped",
        {"messages": [user("Hi")], "tool_choice": "auto", "parallel_tool_calls": True},
        {**BASE, "messages": [{"role": "user", "content": ublock("Hi")}]},
    ),
    (
        "tool calls and results: results first in the user turn, merged with the next user text",
        {"messages": [
            user("Weather in Paris and Rome?"),
            {"role": "assistant", "content": "Checking.", "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_weather", "arguments": "not json"}},
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "18C"},
            {"role": "tool", "tool_call_id": "call_2",
             "content": [{"type": "text", "text": "21C"}]},
            user("Thanks"),
        ], "tools": [WEATHER_TOOL]},
        {**BASE, "messages": [
            {"role": "user", "content": ublock("Weather in Paris and Rome?")},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather",
                 "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "21C"},
                {"type": "text", "text": "Thanks"},
            ]},
        ], "tools": [WEATHER_SPEC]},
    ),
    (
        "assistant with null content and tool calls; empty tool result has no content",
        {"messages": [
            user("Go"),
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "ping", "arguments": ""}}]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": ""},
        ]},
        {**BASE, "messages": [
            {"role": "user", "content": ublock("Go")},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "ping", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1"}]},
        ]},
    ),
    (
        "conversation starting with assistant gets a user turn first",
        {"messages": [{"role": "assistant", "content": "Hello, how can I help?"}, user("Hi")]},
        {**BASE, "messages": [
            {"role": "user", "content": ublock(".")},
            {"role": "assistant", "content": ublock("Hello, how can I help?")},
            {"role": "user", "content": ublock("Hi")},
        ]},
    ),
    (
        "only a system message",
        {"messages": [{"role": "system", "content": "Say hi."}]},
        {"model": "claude-sonnet-4-5", "system": "Say hi.",
         "messages": [{"role": "user", "content": ublock(".")}], "max_tokens": 4096},
    ),
    (
        "final assistant prefill loses trailing whitespace",
        {"messages": [user("Count"), {"role": "assistant", "content": "1, 2, "}]},
        {**BASE, "messages": [
            {"role": "user", "content": ublock("Count")},
            {"role": "assistant", "content": ublock("1, 2,")},
        ]},
    ),
    (
        "whitespace-only final assistant turn is dropped",
        {"messages": [user("Count"), {"role": "assistant", "content": "  "}]},
        {**BASE, "messages": [{"role": "user", "content": ublock("Count")}]},
    ),
    (
        "response_format json_object -> a system instruction",
        {"messages": [user("List")], "response_format": {"type": "json_object"}},
        {"model": "claude-sonnet-4-5",
         "system": "Respond with a single valid JSON object and nothing else.",
         "messages": [{"role": "user", "content": ublock("List")}], "max_tokens": 4096},
    ),
    (
        "response_format json_schema (object) -> a forced json_response tool",
        {"messages": [user("List")], "response_format": {"type": "json_schema", "json_schema": {
            "name": "list", "schema": {"type": "object", "properties": {"a": {"type": "string"}}},
        }}},
        {**BASE, "messages": [{"role": "user", "content": ublock("List")}],
         "tools": [{"name": "json_response",
                    "description": "Give the answer as this tool's input.",
                    "input_schema": {"type": "object",
                                     "properties": {"a": {"type": "string"}}}}],
         "tool_choice": {"type": "tool", "name": "json_response"}},
    ),
    (
        "response_format json_schema with client tools -> a system instruction",
        {"messages": [user("List")], "tools": [WEATHER_TOOL],
         "response_format": {"type": "json_schema", "json_schema": {
             "name": "x", "schema": {"type": "object"}}}},
        {"model": "claude-sonnet-4-5",
         "system": "Respond with a single valid JSON object and nothing else. It must match "
                   "this JSON schema: {\"type\": \"object\"}",
         "messages": [{"role": "user", "content": ublock("List")}], "max_tokens": 4096,
         "tools": [WEATHER_SPEC]},
    ),
    (
        "response_format text changes nothing; top_k passes",
        {"messages": [user("Hi")], "response_format": {"type": "text"}, "top_k": 5},
        {**BASE, "messages": [{"role": "user", "content": ublock("Hi")}], "top_k": 5},
    ),
]


@pytest.mark.parametrize(("name", "request_fields", "expected"), REQUESTS,
                         ids=[r[0] for r in REQUESTS])
def test_request_translation(name: str, request_fields: dict[str, Any],
                             expected: dict[str, Any]) -> None:
    assert upstream_json(request_fields) == expected


def test_stream_request_and_headers() -> None:
    request = WIRE.build_request(routed({"messages": [user("Hi")], "stream": True,
                                         "stream_options": {"include_usage": True}},
                                        stream=True), TARGET)
    assert request.method == "POST"
    assert request.url == "http://127.0.0.1:9/v1/messages"
    assert json.loads(request.content) == {
        **BASE, "messages": [{"role": "user", "content": ublock("Hi")}], "stream": True}
    assert request.headers == {
        "content-type": "application/json", "accept-encoding": "identity",
        "anthropic-version": "2023-06-01", "x-api-key": KEY, "accept": "text/event-stream",
    }
    assert "authorization" not in request.headers


def test_configured_headers_are_sent() -> None:
    wire = wire_for(CONFIG.providers["beta"])
    assert isinstance(wire, AnthropicWire)
    request = wire.build_request(routed({"messages": [user("Hi")]}), TARGET)
    assert request.headers["anthropic-beta"] == "tools-2024-05-16"
    assert request.headers["accept"] == "application/json"


REFUSED: list[tuple[str, dict[str, Any], str, str | None]] = [
    ("n > 1", {"n": 2}, "unsupported_parameter", "n"),
    ("audio output", {"modalities": ["text", "audio"]}, "unsupported_parameter", "modalities"),
    ("functions", {"functions": [{"name": "f"}]}, "unsupported_parameter", "functions"),
    ("custom tool", {"tools": [{"type": "custom", "custom": {"name": "x"}}]},
     "unsupported_parameter", "tools[0]"),
    ("audio input", {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "AA==", "format": "wav"}}]}]},
     "unsupported_content", "messages[0].content[0]"),
    ("bmp image", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "data:image/bmp;base64,AA=="}}]}]},
     "unsupported_content", "messages[0].content[0]"),
    ("ftp image", {"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]}]},
     "unsupported_content", "messages[0].content[0]"),
]


@pytest.mark.parametrize(("name", "fields", "code", "param"), REFUSED,
                         ids=[r[0] for r in REFUSED])
def test_refused_parameters(name: str, fields: dict[str, Any], code: str,
                            param: str | None) -> None:
    body = {"messages": [user("Hi")], **fields}
    with pytest.raises(UnsupportedRequest) as info:
        WIRE.build_request(routed(body), TARGET)
    error = info.value
    assert (error.status, error.code, error.param) == (400, code, param)
    assert ("x-should-retry", "false") in error.headers
    assert error.failure == Failure(FailureKind.UNSUPPORTED, 400, error.message, code, None, param)


@pytest.mark.parametrize("route", ["embeddings", "completions"])
def test_other_routes_are_refused(route: str) -> None:
    with pytest.raises(UnsupportedRequest) as info:
        WIRE.build_request(routed({"input": "x"}, route=route), TARGET)
    assert info.value.code == "unsupported_route"
    assert "anthropic/claude-sonnet-4-5" in info.value.message


# -- responses ----------------------------------------------------------------------------------

ANSWER_USAGE = {"input_tokens": 12, "output_tokens": 5}


def answer(content: list[dict[str, Any]], stop: str = "end_turn",
           usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "msg_01", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5-20250929", "content": content, "stop_reason": stop,
            "stop_sequence": None, "usage": usage or ANSWER_USAGE}


def completion(message: dict[str, Any], finish: str,
               usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-msg_01", "object": "chat.completion", "created": int(NOW),
        "model": "claude-sonnet-4-5-20250929",
        "choices": [{"index": 0, "message": {"role": "assistant", "refusal": None, **message},
                     "logprobs": None, "finish_reason": finish}],
        "usage": usage or {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17},
    }


CALL = {"type": "tool_use", "id": "toolu_01", "name": "get_weather",
        "input": {"city": "Paris"}}

# (name, request fields, Anthropic answer, exact OpenAI body)
RESPONSES: list[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    ("text", {}, answer([{"type": "text", "text": "Hello!"}]),
     completion({"content": "Hello!"}, "stop")),
    ("several text blocks joined", {},
     answer([{"type": "text", "text": "Hel"}, {"type": "text", "text": "lo"}]),
     completion({"content": "Hello"}, "stop")),
    ("stop_sequence -> stop", {}, answer([{"type": "text", "text": "a"}], "stop_sequence"),
     completion({"content": "a"}, "stop")),
    ("max_tokens -> length", {}, answer([{"type": "text", "text": "a"}], "max_tokens"),
     completion({"content": "a"}, "length")),
    ("refusal -> content_filter", {}, answer([], "refusal"),
     completion({"content": None}, "content_filter")),
    ("pause_turn -> stop", {}, answer([{"type": "text", "text": "a"}], "pause_turn"),
     completion({"content": "a"}, "stop")),
    ("context window exceeded -> length", {},
     answer([{"type": "text", "text": "a"}], "model_context_window_exceeded"),
     completion({"content": "a"}, "length")),
    ("unknown stop reason -> stop", {}, answer([{"type": "text", "text": "a"}], "brand_new"),
     completion({"content": "a"}, "stop")),
    ("tool call after text", {},
     answer([{"type": "text", "text": "Checking."}, CALL], "tool_use"),
     completion({"content": "Checking.", "tool_calls": [
         {"id": "toolu_01", "type": "function",
          "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}]},
         "tool_calls")),
    ("parallel tool calls, no text", {},
     answer([CALL, {**CALL, "id": "toolu_02", "input": {}}], "tool_use"),
     completion({"content": None, "tool_calls": [
         {"id": "toolu_01", "type": "function",
          "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
         {"id": "toolu_02", "type": "function",
          "function": {"name": "get_weather", "arguments": "{}"}}]}, "tool_calls")),
    ("thinking blocks are left out", {},
     answer([{"type": "thinking", "thinking": "hmm", "signature": "s"},
             {"type": "text", "text": "42"}]),
     completion({"content": "42"}, "stop")),
    ("json_schema through the forced tool becomes content", {
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object"}}}},
     answer([{"type": "tool_use", "id": "toolu_9", "name": "json_response",
              "input": {"a": "é"}}], "tool_use"),
     completion({"content": "{\"a\":\"é\"}"}, "stop")),
    ("usage with cache tokens", {},
     answer([{"type": "text", "text": "a"}], usage={
         "input_tokens": 10, "output_tokens": 3, "cache_creation_input_tokens": 100,
         "cache_read_input_tokens": 50}),
     completion({"content": "a"}, "stop", {
         "prompt_tokens": 160, "completion_tokens": 3, "total_tokens": 163,
         "prompt_tokens_details": {"cached_tokens": 50}})),
]


@pytest.mark.parametrize(("name", "fields", "upstream", "expected"), RESPONSES,
                         ids=[r[0] for r in RESPONSES])
def test_response_translation(name: str, fields: dict[str, Any], upstream: dict[str, Any],
                              expected: dict[str, Any]) -> None:
    raw = json.dumps(upstream).encode()
    failure, usage = WIRE.check_body("chat/completions", raw)
    assert failure is None
    assert usage == expected["usage"]
    request = routed({"messages": [user("Hi")], **fields})
    assert json.loads(WIRE.response_body(request, TARGET, raw)) == expected


BAD_BODIES: list[tuple[str, bytes, str]] = [
    ("not json", b"{\"id\": \"msg", "bad_response"),
    ("not an object", b"[1]", "bad_response"),
    ("error inside a 200", json.dumps({"type": "error", "error": {
        "type": "overloaded_error", "message": "Overloaded"}}).encode(), "overloaded_error"),
    ("no content", json.dumps({"id": "msg_1", "type": "message"}).encode(), "bad_response"),
]


@pytest.mark.parametrize(("name", "body", "code"), BAD_BODIES, ids=[b[0] for b in BAD_BODIES])
def test_bad_bodies(name: str, body: bytes, code: str) -> None:
    failure, usage = WIRE.check_body("chat/completions", body)
    assert failure is not None and usage is None
    assert (failure.kind, failure.status, failure.code) == (FailureKind.BAD_RESPONSE, 200, code)


# -- errors -------------------------------------------------------------------------------------


def anthropic_error(kind: str, message: str, **extra: Any) -> bytes:
    return json.dumps({"type": "error", "error": {"type": kind, "message": message, **extra},
                       "request_id": "req_01"}).encode()


RESET = "2023-11-14T22:13:40Z"  # NOW + 20 s

# (name, status, headers, body, exact failure)
ERRORS: list[tuple[str, int, dict[str, str], bytes, Failure]] = [
    ("400 invalid request goes back to the client", 400, {},
     anthropic_error("invalid_request_error", "messages: roles must alternate"),
     Failure(FailureKind.CLIENT, 400, "messages: roles must alternate",
             "invalid_request_error")),
    ("400 prompt too long is a context-length failure", 400, {},
     anthropic_error("invalid_request_error", "prompt is too long: 210000 tokens > 200000"),
     Failure(FailureKind.CONTEXT_LENGTH, 400, "prompt is too long: 210000 tokens > 200000",
             "invalid_request_error")),
    ("401 authentication", 401, {},
     anthropic_error("authentication_error", "invalid x-api-key"),
     Failure(FailureKind.AUTH, 401, "invalid x-api-key", "authentication_error")),
    ("402 billing", 402, {}, anthropic_error("billing_error", "credit balance too low"),
     Failure(FailureKind.QUOTA, 402, "credit balance too low", "billing_error")),
    ("403 permission", 403, {}, anthropic_error("permission_error", "no access"),
     Failure(FailureKind.AUTH, 403, "no access", "permission_error")),
    ("404 model", 404, {}, anthropic_error("not_found_error", "model: claude-x"),
     Failure(FailureKind.NOT_FOUND, 404, "model: claude-x", "not_found_error")),
    ("413 too large", 413, {}, anthropic_error("request_too_large", "too large"),
     Failure(FailureKind.CLIENT, 413, "too large", "request_too_large")),
    ("429 with retry-after", 429, {"retry-after": "7"},
     anthropic_error("rate_limit_error", "slow down"),
     Failure(FailureKind.RATE_LIMITED, 429, "slow down", "rate_limit_error", 7.0)),
    ("429 with only the ratelimit reset headers", 429, {
        "anthropic-ratelimit-requests-remaining": "12",
        "anthropic-ratelimit-requests-reset": "2023-11-14T22:13:21Z",
        "anthropic-ratelimit-tokens-remaining": "0",
        "anthropic-ratelimit-tokens-reset": RESET,
        "anthropic-ratelimit-output-tokens-remaining": "0",
        "anthropic-ratelimit-output-tokens-reset": "2023-11-14T22:13:30+00:00",
    }, anthropic_error("rate_limit_error", "tokens"),
     Failure(FailureKind.RATE_LIMITED, 429, "tokens", "rate_limit_error", 20.0)),
    ("429 spend limit is a quota stop", 429, {},
     anthropic_error("rate_limit_error", "spend limit",
                     details={"error_code": "enforced_spend_limit_reached"}),
     Failure(FailureKind.QUOTA, 429, "spend limit", "enforced_spend_limit_reached")),
    ("500 api_error", 500, {}, anthropic_error("api_error", "Internal"),
     Failure(FailureKind.SERVER, 500, "Internal", "api_error")),
    ("504 timeout_error", 504, {}, anthropic_error("timeout_error", "timeout"),
     Failure(FailureKind.SERVER, 504, "timeout", "timeout_error")),
    ("529 overloaded with retry-after", 529, {"retry-after": "3"},
     anthropic_error("overloaded_error", "Overloaded"),
     Failure(FailureKind.SERVER, 529, "Overloaded", "overloaded_error", 3.0)),
    ("an HTML gateway page", 502, {}, b"<html>Bad gateway</html>",
     Failure(FailureKind.SERVER, 502, "Upstream answered HTTP 502.", None)),
    ("the key echoed back is scrubbed", 401, {},
     anthropic_error("authentication_error", f"bad key {KEY}"),
     Failure(FailureKind.AUTH, 401, "bad key ***", "authentication_error")),
]


@pytest.mark.parametrize(("name", "status", "headers", "body", "expected"), ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_error_classification(name: str, status: int, headers: dict[str, str], body: bytes,
                              expected: Failure) -> None:
    assert WIRE.classify_error(status, headers, body, NOW) == expected
