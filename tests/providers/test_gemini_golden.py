"""Golden tables for the Gemini wire: requests, responses, embeddings, errors."""

from __future__ import annotations

import base64
import json
import struct
from typing import Any

import pytest

from badgr_middleware.config import Config
from badgr_middleware.providers import wire_for
from badgr_middleware.providers.common import UnsupportedRequest, synthetic_id
from badgr_middleware.providers.gemini import GeminiWire
from badgr_middleware.routing.outcomes import Failure, FailureKind
from badgr_middleware.routing.plan import Plan, RoutedRequest, Target

KEY = "AIza-test-0123456789"
NOW = 1_700_000_000.0
BASE_URL = "http://127.0.0.1:9/v1beta"
CONFIG = Config.from_dict({
    "providers": {"gemini": {"api_key": KEY, "base_url": BASE_URL}},
    "allow_anonymous": True,
})
WIRE = GeminiWire(CONFIG.providers["gemini"], clock=lambda: NOW)
TARGET = Target("gemini", "gemini-2.5-flash")
PNG = "iVBORw0KGgo="


def routed(body: dict[str, Any], *, stream: bool = False,
           route: str = "chat/completions") -> RoutedRequest:
    return RoutedRequest(route, {"model": "m", **body}, Plan((TARGET,)), "req_1", stream, "m")


def upstream_json(body: dict[str, Any]) -> dict[str, Any]:
    return json.loads(WIRE.build_request(routed(body), TARGET).content)


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


def uc(*texts: str) -> dict[str, Any]:
    return {"role": "user", "parts": [{"text": t} for t in texts]}


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "Weather",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "additionalProperties": False}}}
WEATHER_DECL = {"name": "get_weather", "description": "Weather",
                "parametersJsonSchema": {"type": "object",
                                         "properties": {"city": {"type": "string"}},
                                         "additionalProperties": False}}

REQUESTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("plain", {"messages": [user("Hi")]}, {"contents": [uc("Hi")]}),
    ("system and developer -> systemInstruction; merging",
     {"messages": [{"role": "system", "content": "Be terse."}, user("a"), user("b"),
                   {"role": "assistant", "content": "c"}, {"role": "developer",
                                                           "content": "No emojis."}]},
     {"contents": [uc("a", "b"), {"role": "model", "parts": [{"text": "c"}]}],
      "systemInstruction": {"parts": [{"text": "Be terse.\n\nNo emojis."}]}}),
    ("generation config",
     {"messages": [user("Hi")], "temperature": 1.5, "top_p": 0.9, "max_tokens": 64,
      "stop": "END", "n": 2, "seed": 7, "presence_penalty": 0.1, "frequency_penalty": 0.2,
      "top_k": 40},
     {"contents": [uc("Hi")], "generationConfig": {
         "temperature": 1.5, "topP": 0.9, "topK": 40, "seed": 7, "presencePenalty": 0.1,
         "frequencyPenalty": 0.2, "maxOutputTokens": 64, "stopSequences": ["END"],
         "candidateCount": 2}}),
    ("dropped: logprobs, logit_bias, user, parallel_tool_calls, stream_options, OpenRouter",
     {"messages": [user("Hi")], "logprobs": True, "top_logprobs": 3, "logit_bias": {"1": 1},
      "user": "u", "parallel_tool_calls": False, "service_tier": "auto",
      "transforms": ["middle-out"], "n": 1},
     {"contents": [uc("Hi")]}),
    ("json_object", {"messages": [user("Hi")], "response_format": {"type": "json_object"}},
     {"contents": [uc("Hi")], "generationConfig": {"responseMimeType": "application/json"}}),
    ("json_schema", {"messages": [user("Hi")], "response_format": {
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}}},
     {"contents": [uc("Hi")], "generationConfig": {"responseMimeType": "application/json",
                                                   "responseJsonSchema": {"type": "array"}}}),
    ("images and audio",
     {"messages": [{"role": "user", "content": [
         {"type": "text", "text": "What?"}, {"type": "text", "text": ""},
         {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
         {"type": "image_url", "image_url": {"url": "https://example.com/a/cat.JPG?x=1"}},
         {"type": "input_audio", "input_audio": {"data": "AAA=", "format": "mp3"}}]}]},
     {"contents": [{"role": "user", "parts": [
         {"text": "What?"}, {"inlineData": {"mimeType": "image/png", "data": PNG}},
         {"fileData": {"mimeType": "image/jpeg", "fileUri": "https://example.com/a/cat.JPG?x=1"}},
         {"inlineData": {"mimeType": "audio/mp3", "data": "AAA="}}]}]}),
    ("tools and tool_choice auto", {"messages": [user("W?")], "tools": [WEATHER_TOOL],
                                    "tool_choice": "auto"},
     {"contents": [uc("W?")], "tools": [{"functionDeclarations": [WEATHER_DECL]}],
      "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}}}),
    ("tool_choice required", {"messages": [user("W?")], "tools": [WEATHER_TOOL],
                              "tool_choice": "required"},
     {"contents": [uc("W?")], "tools": [{"functionDeclarations": [WEATHER_DECL]}],
      "toolConfig": {"functionCallingConfig": {"mode": "ANY"}}}),
    ("tool_choice none", {"messages": [user("W?")], "tools": [WEATHER_TOOL],
                          "tool_choice": "none"},
     {"contents": [uc("W?")], "tools": [{"functionDeclarations": [WEATHER_DECL]}],
      "toolConfig": {"functionCallingConfig": {"mode": "NONE"}}}),
    ("tool_choice named, tool without parameters",
     {"messages": [user("W?")], "tools": [{"type": "function", "function": {"name": "ping"}}],
      "tool_choice": {"type": "function", "function": {"name": "ping"}}},
     {"contents": [uc("W?")], "tools": [{"functionDeclarations": [{"name": "ping"}]}],
      "toolConfig": {"functionCallingConfig": {"mode": "ANY",
                                               "allowedFunctionNames": ["ping"]}}}),
    ("tool calls and results; names recovered by tool_call_id; signature sent back",
     {"messages": [
         user("Paris and Rome?"),
         {"role": "assistant", "content": None, "tool_calls": [
             {"id": "call_a", "type": "function", "extra_content": {
                 "google": {"thought_signature": "sig=="}},
              "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
             {"id": "call_b", "type": "function",
              "function": {"name": "get_time", "arguments": "{}"}}]},
         {"role": "tool", "tool_call_id": "call_a", "content": "18C"},
         {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text",
                                                                 "text": "noon"}]},
         user("Thanks")]},
     {"contents": [
         uc("Paris and Rome?"),
         {"role": "model", "parts": [
             {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
              "thoughtSignature": "sig=="},
             {"functionCall": {"name": "get_time", "args": {}}}]},
         {"role": "user", "parts": [
             {"functionResponse": {"name": "get_weather", "response": {"content": "18C"}}},
             {"functionResponse": {"name": "get_time", "response": {"content": "noon"}}},
             {"text": "Thanks"}]}]}),
    ("only a system message", {"messages": [{"role": "system", "content": "Say hi."}]},
     {"contents": [uc(".")], "systemInstruction": {"parts": [{"text": "Say hi."}]}}),
]


@pytest.mark.parametrize(("name", "fields", "expected"), REQUESTS, ids=[r[0] for r in REQUESTS])
def test_request_translation(name: str, fields: dict[str, Any], expected: dict[str, Any]) -> None:
    assert upstream_json(fields) == expected


def test_urls_and_headers() -> None:
    plain = WIRE.build_request(routed({"messages": [user("Hi")]}), TARGET)
    assert plain.url == f"{BASE_URL}/models/gemini-2.5-flash:generateContent"
    assert plain.headers == {"content-type": "application/json", "accept-encoding": "identity",
                             "x-goog-api-key": KEY, "accept": "application/json"}
    stream = WIRE.build_request(routed({"messages": [user("Hi")], "stream": True}, stream=True),
                                Target("gemini", "models/gemini-2.5-pro"))
    assert stream.url == f"{BASE_URL}/models/gemini-2.5-pro:streamGenerateContent?alt=sse"
    assert stream.headers["accept"] == "text/event-stream"
    assert KEY not in stream.url
    assert isinstance(wire_for(CONFIG.providers["gemini"]), GeminiWire)


@pytest.mark.parametrize(("fields", "code", "param"), [
    ({"n": 1, "modalities": ["audio"]}, "unsupported_parameter", "modalities"),
    ({"messages": [{"role": "tool", "tool_call_id": "nope", "content": "x"}]},
     "invalid_tool_result", "messages[0].tool_call_id"),
    ({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": "https://x.example/image"}}]}]},
     "unsupported_content", "messages[0].content[0]"),
    ({"messages": [{"role": "user", "content": [{"type": "file", "file": {}}]}]},
     "unsupported_content", "messages[0].content[0]"),
])
def test_refused(fields: dict[str, Any], code: str, param: str) -> None:
    with pytest.raises(UnsupportedRequest) as info:
        WIRE.build_request(routed({"messages": [user("Hi")], **fields}), TARGET)
    assert (info.value.code, info.value.param) == (code, param)


def test_completions_route_is_refused() -> None:
    with pytest.raises(UnsupportedRequest) as info:
        WIRE.build_request(routed({"prompt": "x"}, route="completions"), TARGET)
    assert info.value.code == "unsupported_route"


# -- responses ----------------------------------------------------------------------------------

USAGE = {"promptTokenCount": 12, "candidatesTokenCount": 6, "totalTokenCount": 18}
OUT_USAGE = {"prompt_tokens": 12, "completion_tokens": 6, "total_tokens": 18}


def candidate(parts: list[dict[str, Any]], finish: str | None = "STOP",
              index: int = 0) -> dict[str, Any]:
    out: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
    if finish:
        out["finishReason"] = finish
    return out


def gresponse(*candidates: dict[str, Any], usage: dict[str, Any] | None = None,
              **extra: Any) -> dict[str, Any]:
    return {"candidates": list(candidates), "usageMetadata": usage or USAGE,
            "modelVersion": "gemini-2.5-flash-001", "responseId": "resp1", **extra}


def completion(*choices: dict[str, Any], usage: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"id": "chatcmpl-resp1", "object": "chat.completion", "created": int(NOW),
            "model": "gemini-2.5-flash-001", "choices": list(choices),
            "usage": usage or OUT_USAGE}


def choice(content: str | None, finish: str, index: int = 0, **message: Any) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": content,
                                        "refusal": None, **message},
            "logprobs": None, "finish_reason": finish}


CALL_ID = synthetic_id("resp1", 0, 0, "get_weather")
RESPONSES: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("text", gresponse(candidate([{"text": "It is "}, {"text": "18C."}])),
     completion(choice("It is 18C.", "stop"))),
    ("thoughts are left out; usage with thoughts and cache",
     gresponse(candidate([{"text": "plan", "thought": True}, {"text": "42"}]), usage={
         "promptTokenCount": 10, "candidatesTokenCount": 2, "thoughtsTokenCount": 5,
         "cachedContentTokenCount": 4, "totalTokenCount": 17}),
     completion(choice("42", "stop"), usage={
         "prompt_tokens": 10, "completion_tokens": 7, "total_tokens": 17,
         "prompt_tokens_details": {"cached_tokens": 4},
         "completion_tokens_details": {"reasoning_tokens": 5}})),
    ("MAX_TOKENS -> length", gresponse(candidate([{"text": "a"}], "MAX_TOKENS")),
     completion(choice("a", "length"))),
    ("SAFETY -> content_filter", gresponse(candidate([], "SAFETY")),
     completion(choice(None, "content_filter"))),
    ("MALFORMED_FUNCTION_CALL -> stop", gresponse(candidate([], "MALFORMED_FUNCTION_CALL")),
     completion(choice(None, "stop"))),
    ("function call: STOP becomes tool_calls, id synthesised, signature kept",
     gresponse(candidate([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}},
                           "thoughtSignature": "sig=="}])),
     completion(choice(None, "tool_calls", tool_calls=[{
         "id": CALL_ID, "type": "function",
         "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"},
         "extra_content": {"google": {"thought_signature": "sig=="}}}]))),
    ("function call with Gemini's own id",
     gresponse(candidate([{"text": "Checking."},
                          {"functionCall": {"id": "fc-1", "name": "f", "args": {}}}])),
     completion(choice("Checking.", "tool_calls", tool_calls=[{
         "id": "fc-1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]))),
    ("two candidates", gresponse(candidate([{"text": "a"}]), candidate([{"text": "b"}],
                                                                       index=1)),
     completion(choice("a", "stop"), choice("b", "stop", 1))),
    ("prompt blocked", {"promptFeedback": {"blockReason": "SAFETY"}, "usageMetadata": USAGE,
                        "modelVersion": "gemini-2.5-flash-001", "responseId": "resp1"},
     completion(choice(None, "content_filter"))),
]


@pytest.mark.parametrize(("name", "upstream", "expected"), RESPONSES,
                         ids=[r[0] for r in RESPONSES])
def test_response_translation(name: str, upstream: dict[str, Any],
                              expected: dict[str, Any]) -> None:
    raw = json.dumps(upstream).encode()
    failure, usage = WIRE.check_body("chat/completions", raw)
    assert failure is None and usage == expected["usage"]
    assert json.loads(WIRE.response_body(routed({}), TARGET, raw)) == expected


@pytest.mark.parametrize(("body", "code"), [
    (b"nope", "bad_response"),
    (b"{}", "bad_response"),
    (json.dumps([{"error": {"code": 500, "message": "x", "status": "INTERNAL"}}]).encode(),
     "INTERNAL"),
])
def test_bad_bodies(body: bytes, code: str) -> None:
    failure, _ = WIRE.check_body("chat/completions", body)
    assert failure is not None
    assert (failure.kind, failure.code) == (FailureKind.BAD_RESPONSE, code)


# -- embeddings ---------------------------------------------------------------------------------


def test_embeddings_single_and_batch() -> None:
    single = WIRE.build_request(routed({"input": "hello", "dimensions": 3}, route="embeddings"),
                                Target("gemini", "text-embedding-004"))
    assert single.url == f"{BASE_URL}/models/text-embedding-004:embedContent"
    assert json.loads(single.content) == {"model": "models/text-embedding-004",
                                          "content": {"parts": [{"text": "hello"}]},
                                          "outputDimensionality": 3}
    batch = WIRE.build_request(routed({"input": ["a", "b"]}, route="embeddings"),
                               Target("gemini", "text-embedding-004"))
    assert batch.url == f"{BASE_URL}/models/text-embedding-004:batchEmbedContents"
    assert json.loads(batch.content) == {"requests": [
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "a"}]}},
        {"model": "models/text-embedding-004", "content": {"parts": [{"text": "b"}]}}]}
    with pytest.raises(UnsupportedRequest):
        WIRE.build_request(routed({"input": [1, 2]}, route="embeddings"), TARGET)


def test_embedding_answers() -> None:
    embed = Target("gemini", "text-embedding-004")
    raw = json.dumps({"embeddings": [{"values": [0.5, -1.0]}, {"values": [0.25, 0.0]}]}).encode()
    assert WIRE.check_body("embeddings", raw) == (None, {"prompt_tokens": 0,
                                                         "completion_tokens": 0,
                                                         "total_tokens": 0})
    assert json.loads(WIRE.response_body(routed({"input": ["a", "b"]}, route="embeddings"),
                                         embed, raw)) == {
        "object": "list", "model": "text-embedding-004",
        "data": [{"object": "embedding", "index": 0, "embedding": [0.5, -1.0]},
                 {"object": "embedding", "index": 1, "embedding": [0.25, 0.0]}],
        "usage": {"prompt_tokens": 0, "total_tokens": 0}}
    one = json.dumps({"embedding": {"values": [0.5, -1.0]}}).encode()
    body = json.loads(WIRE.response_body(
        routed({"input": "a", "encoding_format": "base64"}, route="embeddings"), embed, one))
    packed = base64.b64decode(body["data"][0]["embedding"])
    assert struct.unpack("<2f", packed) == (0.5, -1.0)
    assert WIRE.check_body("embeddings", b'{"candidates": []}')[0] is not None


# -- errors -------------------------------------------------------------------------------------


def gerror(code: int, status: str, message: str, *details: dict[str, Any]) -> bytes:
    return json.dumps({"error": {"code": code, "message": message, "status": status,
                                 "details": list(details)}}).encode()


RETRY = {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "2.500s"}
ERRORS: list[tuple[str, int, dict[str, str], bytes, Failure]] = [
    ("429 with RetryInfo in the body", 429, {},
     gerror(429, "RESOURCE_EXHAUSTED", "Please retry in 2.5s.", RETRY),
     Failure(FailureKind.RATE_LIMITED, 429, "Please retry in 2.5s.", "RESOURCE_EXHAUSTED", 2.5)),
    ("a Retry-After header wins", 429, {"retry-after": "4"},
     gerror(429, "RESOURCE_EXHAUSTED", "slow", RETRY),
     Failure(FailureKind.RATE_LIMITED, 429, "slow", "RESOURCE_EXHAUSTED", 4.0)),
    ("429 per-day quota is a quota stop", 429, {},
     gerror(429, "RESOURCE_EXHAUSTED", "quota", RETRY, {
         "@type": "type.googleapis.com/google.rpc.QuotaFailure",
         "violations": [{"quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier"}]}),
     Failure(FailureKind.QUOTA, 429, "quota", "insufficient_quota")),
    ("400 bad key is an auth failure", 400, {},
     gerror(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", {
         "@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}),
     Failure(FailureKind.AUTH, 400, "API key not valid. Please pass a valid API key.",
             "API_KEY_INVALID")),
    ("400 invalid argument is the client's", 400, {},
     gerror(400, "INVALID_ARGUMENT", "Invalid JSON payload"),
     Failure(FailureKind.CLIENT, 400, "Invalid JSON payload", "INVALID_ARGUMENT")),
    ("400 too many tokens", 400, {},
     gerror(400, "INVALID_ARGUMENT", "The input token count (1200000) exceeds the maximum "
                                     "number of tokens allowed (1048576)."),
     Failure(FailureKind.CONTEXT_LENGTH, 400, "The input token count (1200000) exceeds the "
             "maximum number of tokens allowed (1048576).", "context_length_exceeded")),
    ("403", 403, {}, gerror(403, "PERMISSION_DENIED", "denied"),
     Failure(FailureKind.AUTH, 403, "denied", "PERMISSION_DENIED")),
    ("404", 404, {}, gerror(404, "NOT_FOUND", "models/x is not found"),
     Failure(FailureKind.NOT_FOUND, 404, "models/x is not found", "NOT_FOUND")),
    ("503 in a JSON array", 503, {},
     b"[" + gerror(503, "UNAVAILABLE", "The model is overloaded.") + b"]",
     Failure(FailureKind.SERVER, 503, "The model is overloaded.", "UNAVAILABLE")),
    ("key scrubbed", 400, {}, gerror(400, "INVALID_ARGUMENT", f"bad {KEY}"),
     Failure(FailureKind.CLIENT, 400, "bad ***", "INVALID_ARGUMENT")),
]


@pytest.mark.parametrize(("name", "status", "headers", "body", "expected"), ERRORS,
                         ids=[e[0] for e in ERRORS])
def test_error_classification(name: str, status: int, headers: dict[str, str], body: bytes,
                              expected: Failure) -> None:
    assert WIRE.classify_error(status, headers, body, NOW) == expected
