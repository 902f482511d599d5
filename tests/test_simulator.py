"""The simulated provider, driven over real HTTP with httpx and the openai SDK."""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import re
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletionToolParam

import badgr_middleware.simulator as simulator
from badgr_middleware.simulator import (
    Fault,
    SimulatedProvider,
    SimulatedServer,
    closed_port,
    parse_fault,
)

CHAT = "/chat/completions"
PROMPT = "Say hello please"  # 3 words -> prompt_tokens == 3
REPLY = "Hello from primary."  # 3 words -> completion_tokens == 3
TOOLS: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}},
    {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}},
]
ERROR_KEYS = {"message", "type", "param", "code"}


def chat_body(model: str = "sim-small", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": PROMPT}], **extra}


def sse_data(raw: str) -> list[str]:
    """The data payloads of an SSE body, asserting the exact ``data: X\\n\\n`` framing."""
    assert raw.endswith("\n\n")
    events = raw[:-2].split("\n\n")
    assert all(event.startswith("data: ") and "\n" not in event for event in events)
    return [event[len("data: ") :] for event in events]


def read_events(response: httpx.Response, into: list[str]) -> None:
    """Collect complete SSE data payloads as they arrive (so a broken stream keeps them)."""
    buffer = ""
    for text in response.iter_text():
        buffer += text
        while "\n\n" in buffer:
            event, buffer = buffer.split("\n\n", 1)
            into.append(event.removeprefix("data: "))


@pytest.fixture(scope="module")
def shared() -> Iterator[tuple[SimulatedProvider, SimulatedServer]]:
    provider = SimulatedProvider("primary")
    with SimulatedServer(provider) as server:
        yield provider, server


@pytest.fixture
def provider(shared: tuple[SimulatedProvider, SimulatedServer]) -> SimulatedProvider:
    shared[0].clear()
    return shared[0]


@pytest.fixture
def server(
    shared: tuple[SimulatedProvider, SimulatedServer], provider: SimulatedProvider
) -> SimulatedServer:
    return shared[1]


@pytest.fixture
def client(server: SimulatedServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.base_url, timeout=2) as http:
        yield http


@pytest.fixture
def sdk(server: SimulatedServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=server.base_url, api_key="sk-test", max_retries=0, timeout=2) as c:
        yield c


def run_asgi(
    app: SimulatedProvider,
    method: str,
    path: str,
    body: bytes = b"",
    root_path: str = "",
    broken_after: int | None = None,
) -> list[dict[str, Any]]:
    """Drive the ASGI app directly and return every message it sent.

    With ``broken_after``, ``send`` raises OSError (a closed socket) after that many messages.
    """

    async def main() -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []
        delivered = False
        never = asyncio.Event()

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await never.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if broken_after is not None and len(sent) >= broken_after:
                raise OSError("connection closed")
            sent.append(message)

        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "path": path,
            "root_path": root_path,
            "query_string": b"",
            "headers": [(b"content-type", b"application/json")],
        }
        await asyncio.wait_for(app(scope, receive, send), 5)
        return sent

    return asyncio.run(main())


# --- healthy responses -------------------------------------------------------------------


def test_chat_completion_is_a_valid_openai_response(client: httpx.Client) -> None:
    response = client.post(CHAT, json=chat_body())
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-sim-provider"] == "primary"
    body = response.json()
    assert re.fullmatch(r"chatcmpl-sim-\d+", body["id"])
    assert body["object"] == "chat.completion"
    assert abs(body["created"] - time.time()) < 5
    assert body["model"] == "sim-small"
    assert body["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": REPLY, "refusal": None},
            "logprobs": None,
            "finish_reason": "stop",
        }
    ]
    assert body["usage"] == {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}


def test_sdk_reads_a_chat_completion(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(**chat_body(model="other-model"))
    assert completion.choices[0].message.content == REPLY
    assert completion.model == "other-model"
    assert completion.usage is not None and completion.usage.total_tokens == 6


def test_custom_reply_and_name() -> None:
    app = SimulatedProvider("backup", reply="Custom words here, four")
    [start, body] = run_asgi(app, "POST", "/v1/chat/completions", json.dumps(chat_body()).encode())
    assert (b"x-sim-provider", b"backup") in start["headers"]
    payload = json.loads(body["body"])
    assert payload["choices"][0]["message"]["content"] == "Custom words here, four"
    assert payload["usage"]["completion_tokens"] == 4
    assert SimulatedProvider("x").reply == "Hello from x."


def test_sdk_stream_reconstructs_the_reply_without_usage(sdk: openai.OpenAI) -> None:
    chunks = list(sdk.chat.completions.create(**chat_body(), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    assert len(chunks) == 1 + 5 + 1  # role, stream_chunks pieces, finish
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None and len(c.choices) == 1 for c in chunks)
    assert len({c.id for c in chunks}) == 1


def test_sdk_stream_ends_with_a_usage_chunk_when_asked(sdk: openai.OpenAI) -> None:
    stream = sdk.chat.completions.create(
        **chat_body(), stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert (chunks[-1].usage.prompt_tokens, chunks[-1].usage.completion_tokens) == (3, 3)
    assert all(c.usage is None for c in chunks[:-1])
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == REPLY


def test_stream_wire_format(client: httpx.Client) -> None:
    response = client.post(CHAT, json=chat_body(stream=True))
    assert response.headers["content-type"].startswith("text/event-stream")
    data = sse_data(response.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all("usage" not in c for c in chunks)
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])


def test_each_event_is_its_own_asgi_message_split_into_stream_chunks() -> None:
    app = SimulatedProvider(reply="abcdefghij", stream_chunks=3)
    body = json.dumps(chat_body(stream=True)).encode()
    start, *bodies = run_asgi(app, "POST", "/v1/chat/completions", body)
    assert start["type"] == "http.response.start" and start["status"] == 200
    assert bodies[-1] == {"type": "http.response.body", "body": b"", "more_body": False}
    events = bodies[:-1]
    assert all(m["more_body"] is True and m["body"].count(b"\n\n") == 1 for m in events)
    pieces = [json.loads(m["body"][6:])["choices"][0]["delta"].get("content") for m in events[1:4]]
    assert pieces == ["abc", "def", "ghij"]
    assert events[-1]["body"] == b"data: [DONE]\n\n"


def test_chunk_delay_spaces_events() -> None:
    app = SimulatedProvider(chunk_delay=0.05, stream_chunks=2)
    started = time.monotonic()
    run_asgi(app, "POST", "/v1/chat/completions", json.dumps(chat_body(stream=True)).encode())
    # role + 2 pieces + finish + [DONE] = 5 events, 4 gaps
    assert time.monotonic() - started >= 0.2


def test_root_path_is_honoured() -> None:
    [start, body] = run_asgi(SimulatedProvider(), "GET", "/llm/v1/models", root_path="/llm")
    assert start["status"] == 200
    assert json.loads(body["body"])["object"] == "list"


def test_sdk_tool_call(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(**chat_body(), tools=TOOLS)
    choice = completion.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    [call] = choice.message.tool_calls or []
    assert call.id == "call_sim_1" and call.type == "function"
    assert call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == {"ok": True}


def test_tool_choice_none_and_named(sdk: openai.OpenAI) -> None:
    plain = sdk.chat.completions.create(**chat_body(), tools=TOOLS, tool_choice="none")
    assert plain.choices[0].message.content == REPLY
    assert plain.choices[0].message.tool_calls is None
    named = sdk.chat.completions.create(
        **chat_body(),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert (named.choices[0].message.tool_calls or [])[0].function.name == "get_time"


def test_sdk_accumulates_a_streamed_tool_call(sdk: openai.OpenAI) -> None:
    with sdk.chat.completions.stream(**chat_body(), tools=TOOLS) as stream:
        for _ in stream:
            pass
        final = stream.get_final_completion()
    [call] = final.choices[0].message.tool_calls or []
    assert (call.id, call.function.name) == ("call_sim_1", "get_weather")
    assert call.function.arguments == '{"ok": true}'
    assert final.choices[0].finish_reason == "tool_calls"


def test_streamed_tool_call_fragments_carry_only_index_and_arguments(client: httpx.Client) -> None:
    data = sse_data(client.post(CHAT, json=chat_body(stream=True, tools=TOOLS)).text)
    deltas = [json.loads(d)["choices"][0]["delta"] for d in data[:-1]]
    first = deltas[0]["tool_calls"][0]
    assert first == {
        "index": 0,
        "id": "call_sim_1",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    fragments = [d["tool_calls"][0] for d in deltas[1:-1]]
    assert len(fragments) == 5
    assert all(
        set(f) == {"index", "function"} and set(f["function"]) == {"arguments"} for f in fragments
    )
    assert "".join(f["function"]["arguments"] for f in fragments) == '{"ok": true}'


def test_legacy_completions(sdk: openai.OpenAI) -> None:
    completion = sdk.completions.create(model="sim-small", prompt="one two")
    assert completion.object == "text_completion"
    assert completion.choices[0].text == REPLY
    assert completion.usage is not None and completion.usage.prompt_tokens == 2
    stream = sdk.completions.create(model="sim-small", prompt="one two", stream=True)
    assert "".join(c.choices[0].text for c in stream) == REPLY


def test_embeddings_are_deterministic_vectors(sdk: openai.OpenAI) -> None:
    many = sdk.embeddings.create(model="sim-embed", input=["alpha", "beta"])
    assert [d.index for d in many.data] == [0, 1]
    assert all(len(d.embedding) == 8 and all(-1 <= x <= 1 for x in d.embedding) for d in many.data)
    assert many.data[0].embedding != many.data[1].embedding
    one = sdk.embeddings.create(model="sim-embed", input="alpha", encoding_format="float")
    assert one.data[0].embedding == many.data[0].embedding
    assert one.usage.prompt_tokens == 1


def test_models_list(sdk: openai.OpenAI) -> None:
    assert [m.id for m in sdk.models.list()] == ["sim-small", "sim-large", "sim-embed"]


@pytest.mark.parametrize(
    ("content", "param"),
    [(b"{not json", None), (b'{"messages": []}', "model"), (b'{"model": ""}', "model")],
)
def test_bad_request_body_is_400(client: httpx.Client, content: bytes, param: str | None) -> None:
    response = client.post(CHAT, content=content)
    assert response.status_code == 400
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["type"] == "invalid_request_error" and error["param"] == param


def test_embeddings_need_an_input(client: httpx.Client) -> None:
    response = client.post("/embeddings", json={"model": "sim-embed", "input": 3})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "input"


@pytest.mark.parametrize(
    ("method", "path"), [("POST", "/nope"), ("GET", CHAT), ("POST", "/models")]
)
def test_unknown_route_is_404(client: httpx.Client, method: str, path: str) -> None:
    response = client.request(method, path, json=chat_body())
    assert response.status_code == 404
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert error["message"] == f"Invalid URL ({method} /v1{path})"


def test_api_key_is_checked_and_never_echoed() -> None:
    provider = SimulatedProvider(api_key="sk-secret")
    with SimulatedServer(provider) as server, httpx.Client(base_url=server.base_url) as http:
        missing = http.post(CHAT, json=chat_body())
        wrong = http.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer sk-wrong"})
        right = http.post(CHAT, json=chat_body(), headers={"Authorization": "Bearer sk-secret"})
        with (
            openai.OpenAI(base_url=server.base_url, api_key="sk-nope", max_retries=0) as bad,
            pytest.raises(openai.AuthenticationError),
        ):
            bad.models.list()
    expected = {
        "error": {
            "message": "Incorrect API key provided",
            "type": "invalid_request_error",
            "param": None,
            "code": "invalid_api_key",
        }
    }
    assert (missing.status_code, missing.json()) == (401, expected)
    assert (wrong.status_code, wrong.json()) == (401, expected)
    assert "sk-" not in wrong.text
    assert right.status_code == 200
    assert [r.fault for r in provider.requests] == [None] * 4


# --- status faults -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "status", "type_", "code"),
    [
        ("500", 500, "server_error", None),
        ("502", 502, "server_error", None),
        ("503", 503, "server_error", None),
        ("504", 504, "server_error", None),
        ("408", 408, "timeout", "request_timeout"),
        ("529", 529, "overloaded_error", None),
        ("429", 429, "requests", "rate_limit_exceeded"),
        ("429:quota", 429, "insufficient_quota", "insufficient_quota"),
        ("401", 401, "invalid_request_error", "invalid_api_key"),
        ("403", 403, "request_forbidden", "unsupported_country_region_territory"),
        ("404", 404, "invalid_request_error", "model_not_found"),
        ("400", 400, "invalid_request_error", None),
        ("400:context", 400, "invalid_request_error", "context_length_exceeded"),
        ("422", 422, "invalid_request_error", None),
        ("409", 409, "invalid_request_error", None),
        ("520", 520, "server_error", None),
    ],
)
def test_status_fault(
    client: httpx.Client, spec: str, status: int, type_: str, code: str | None
) -> None:
    response = client.post(CHAT, json=chat_body(stream=True), headers={"x-sim-fault": spec})
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-sim-provider"] == "primary"
    assert "retry-after" not in response.headers and "retry-after-ms" not in response.headers
    error = response.json()["error"]
    assert set(error) == ERROR_KEYS
    assert (error["type"], error["code"]) == (type_, code)


def test_status_fault_details(client: httpx.Client) -> None:
    def error(spec: str) -> Any:
        response = client.post(CHAT, json=chat_body(model="gpt-x"), headers={"x-sim-fault": spec})
        return response.json()["error"]

    assert "`gpt-x`" in error("404")["message"]
    assert error("400")["param"] == "messages"
    assert error("400:context")["message"].startswith(
        "This model's maximum context length is 8192 tokens."
    )


def test_402_is_openrouter_shaped(client: httpx.Client) -> None:
    response = client.post(CHAT, json=chat_body(), headers={"x-sim-fault": "402"})
    assert response.status_code == 402
    error = response.json()["error"]
    assert error["code"] == 402
    assert error["message"].startswith("Insufficient credits")
    assert set(error) == {"code", "message"}


@pytest.mark.parametrize(
    ("spec", "header", "value"),
    [
        ("429:retry-after=2", "retry-after", "2"),
        ("429:retry-after=0.5", "retry-after", "0.5"),
        ("503:retry-after=7", "retry-after", "7"),
        ("429:retry-after-ms=1500", "retry-after-ms", "1500"),
    ],
)
def test_retry_after_hints(client: httpx.Client, spec: str, header: str, value: str) -> None:
    response = client.post(CHAT, json=chat_body(), headers={"x-sim-fault": spec})
    assert response.headers[header] == value
    other = "retry-after" if header == "retry-after-ms" else "retry-after-ms"
    assert other not in response.headers


def test_retry_after_http_date(client: httpx.Client) -> None:
    response = client.post(
        CHAT, json=chat_body(), headers={"x-sim-fault": "429:retry-after-date=3"}
    )
    assert response.status_code == 429
    header = response.headers["retry-after"]
    assert header.endswith(" GMT")
    wait = email.utils.parsedate_to_datetime(header).timestamp() - time.time()
    assert 2.5 <= wait <= 4.1


@pytest.mark.parametrize(
    ("spec", "error_class"),
    [
        ("429", openai.RateLimitError),
        ("500", openai.InternalServerError),
        ("404", openai.NotFoundError),
        ("400:context", openai.BadRequestError),
        ("403", openai.PermissionDeniedError),
    ],
)
def test_sdk_error_classes(sdk: openai.OpenAI, spec: str, error_class: type[Exception]) -> None:
    with pytest.raises(error_class):
        sdk.chat.completions.create(**chat_body(), extra_headers={"x-sim-fault": spec})


# --- body and connection faults ----------------------------------------------------------


def test_error_body(client: httpx.Client) -> None:
    response = client.post(CHAT, json=chat_body(), headers={"x-sim-fault": "error-body"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == 502


def test_error_body_in_stream(client: httpx.Client, sdk: openai.OpenAI) -> None:
    response = client.post(CHAT, json=chat_body(stream=True), headers={"x-sim-fault": "error-body"})
    assert response.status_code == 200
    [event] = sse_data(response.text)
    assert json.loads(event)["error"]["code"] == 502
    with pytest.raises(openai.APIError, match="Upstream provider error"):
        list(
            sdk.chat.completions.create(
                **chat_body(), stream=True, extra_headers={"x-sim-fault": "error-body"}
            )
        )


@pytest.mark.parametrize("stream", [False, True])
def test_invalid_json(client: httpx.Client, stream: bool) -> None:
    response = client.post(
        CHAT, json=chat_body(stream=stream), headers={"x-sim-fault": "invalid-json"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.content == b'{"id": "chatcmpl-'
    with pytest.raises(json.JSONDecodeError):
        response.json()


def test_hang_then_client_timeout_is_a_disconnect(
    client: httpx.Client, provider: SimulatedProvider
) -> None:
    assert provider.wait_for_disconnect(0) is False
    with pytest.raises(httpx.ReadTimeout):
        client.post(CHAT, json=chat_body(), headers={"x-sim-fault": "hang"}, timeout=0.3)
    assert provider.wait_for_disconnect(2) is True
    [gone] = provider.disconnects
    assert gone.fault == "hang" and gone is provider.requests[0]


@pytest.mark.parametrize(
    ("stream", "content_type"), [(False, "application/json"), (True, "text/event-stream")]
)
def test_hang_after_headers(
    client: httpx.Client, provider: SimulatedProvider, stream: bool, content_type: str
) -> None:
    body = chat_body(stream=stream)
    with client.stream(
        "POST", CHAT, json=body, headers={"x-sim-fault": "hang-after-headers"}, timeout=0.3
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith(content_type)
        with pytest.raises(httpx.ReadTimeout):
            response.read()
    assert provider.wait_for_disconnect(2)


@pytest.mark.parametrize("spec", ["slow=0.3", "ttfb=0.3"])
def test_slow_answers_late(client: httpx.Client, spec: str) -> None:
    started = time.monotonic()
    response = client.post(CHAT, json=chat_body(), headers={"x-sim-fault": spec})
    assert time.monotonic() - started >= 0.3
    assert response.json()["choices"][0]["message"]["content"] == REPLY


def test_latency_delays_every_response() -> None:
    with SimulatedServer(SimulatedProvider(latency=0.2)) as server:
        started = time.monotonic()
        response = httpx.get(f"{server.base_url}/nope")
        assert time.monotonic() - started >= 0.2
    assert response.status_code == 404


def test_cut_stream_is_a_broken_connection(client: httpx.Client, sdk: openai.OpenAI) -> None:
    events: list[str] = []
    with (
        pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"),
        client.stream(
            "POST", CHAT, json=chat_body(stream=True), headers={"x-sim-fault": "cut=2"}
        ) as response,
    ):
        read_events(response, events)
    assert response.status_code == 200
    deltas = [json.loads(e)["choices"][0]["delta"] for e in events]
    assert deltas == [{"role": "assistant", "content": ""}, {"content": "Hel"}, {"content": "lo f"}]
    stream = sdk.chat.completions.create(
        **chat_body(), stream=True, extra_headers={"x-sim-fault": "cut=1"}
    )
    with pytest.raises(openai.APIConnectionError):
        list(stream)


def test_cut_json_body_is_a_short_read(client: httpx.Client) -> None:
    with pytest.raises(httpx.RemoteProtocolError, match=r"received 10 bytes, expected \d+"):
        client.post(CHAT, json=chat_body(), headers={"x-sim-fault": "cut=10"})


def test_midstream_error_ends_the_stream_cleanly(client: httpx.Client, sdk: openai.OpenAI) -> None:
    response = client.post(
        CHAT, json=chat_body(stream=True), headers={"x-sim-fault": "midstream-error=2"}
    )
    data = sse_data(response.text)
    assert "[DONE]" not in data
    chunks = [json.loads(d) for d in data]
    assert [c["choices"][0]["delta"] for c in chunks[:3]] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo f"},
    ]
    [error_chunk] = chunks[3:]
    assert error_chunk["error"]["code"] == 502
    assert error_chunk["choices"][0]["finish_reason"] == "error"
    assert error_chunk["provider"] == "primary" and error_chunk["id"] == chunks[0]["id"]
    stream = sdk.chat.completions.create(
        **chat_body(), stream=True, extra_headers={"x-sim-fault": "midstream-error=0"}
    )
    with pytest.raises(openai.APIError, match="Upstream provider error"):
        list(stream)


def test_midstream_error_without_stream_is_an_error_body(client: httpx.Client) -> None:
    response = client.post(CHAT, json=chat_body(), headers={"x-sim-fault": "midstream-error=1"})
    assert response.status_code == 200 and response.json()["error"]["code"] == 502


def test_idle_stream_goes_silent_after_the_first_piece(client: httpx.Client) -> None:
    arrivals: list[tuple[float, str]] = []
    headers = {"x-sim-fault": "idle=0.4"}
    with client.stream("POST", CHAT, json=chat_body(stream=True), headers=headers) as response:
        arrivals.extend((time.monotonic(), text) for text in response.iter_text())
    events = sse_data("".join(text for _, text in arrivals))
    assert events[-1] == "[DONE]"
    pieces = [json.loads(e)["choices"][0]["delta"].get("content", "") for e in events[:-1]]
    assert "".join(pieces) == REPLY
    second = next(t for t, text in arrivals if '"Hel"' in text)
    third = next(t for t, text in arrivals if '"lo f"' in text)
    assert third - second >= 0.35


def test_idle_json_body_stalls_mid_body() -> None:
    app = SimulatedProvider(fault="idle=0.3")
    started = time.monotonic()
    start, first, rest = run_asgi(app, "POST", "/v1/chat/completions", b'{"model": "m"}')
    assert time.monotonic() - started >= 0.3
    assert start["status"] == 200
    assert first["more_body"] is True and rest["more_body"] is False
    body = json.loads(first["body"] + rest["body"])
    assert body["choices"][0]["message"]["content"] == "Hello from sim."


def test_dribble_sends_one_byte_at_a_time(client: httpx.Client) -> None:
    app = SimulatedProvider(fault="dribble=0")
    start, *bodies = run_asgi(
        app, "POST", "/v1/chat/completions", json.dumps(chat_body(stream=True)).encode()
    )
    assert all(len(m["body"]) == 1 for m in bodies[:-1]) and bodies[-1]["body"] == b""
    assert b"".join(m["body"] for m in bodies).endswith(b"data: [DONE]\n\n")
    healthy = client.get("/models").content
    started = time.monotonic()
    dribbled = client.get("/models", headers={"x-sim-fault": "dribble=0.002"}).content
    assert dribbled == healthy
    assert time.monotonic() - started >= 0.002 * (len(healthy) - 1)


def test_client_leaving_a_stream_is_a_disconnect(
    client: httpx.Client, provider: SimulatedProvider
) -> None:
    with client.stream(
        "POST", CHAT, json=chat_body(stream=True), headers={"x-sim-fault": "idle=5"}
    ) as response:
        next(response.iter_raw())
    assert provider.wait_for_disconnect(2)
    assert provider.disconnects[0].fault == "idle=5"


def test_send_failing_is_a_disconnect() -> None:
    app = SimulatedProvider()
    body = json.dumps(chat_body(stream=True)).encode()
    sent = run_asgi(app, "POST", "/v1/chat/completions", body, broken_after=3)
    assert len(sent) == 3
    assert app.wait_for_disconnect(0)
    assert app.disconnects == app.requests


def test_cut_is_not_logged_as_an_app_error(
    client: httpx.Client, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="uvicorn.error"):
        with pytest.raises(httpx.RemoteProtocolError):
            client.post(CHAT, json=chat_body(), headers={"x-sim-fault": "cut=1"})
        client.get("/models")  # the cut request's handler has finished by the time this answers
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


# --- fault selection ---------------------------------------------------------------------


def test_selection_order(client: httpx.Client, provider: SimulatedProvider) -> None:
    provider.set_fault("500")
    provider.set_fault("502", model="a")
    provider.fail_next("503")

    def status(model: str, header: str | None = None) -> int:
        headers = {"x-sim-fault": header} if header else {}
        return client.post(CHAT, json=chat_body(model=model), headers=headers).status_code

    assert status("a", "504") == 503  # queued beats everything
    assert status("a", "504") == 502  # then the per-model fault
    assert status("b", "504") == 504  # then the header
    assert status("b") == 500  # then the provider-wide fault
    assert [r.fault for r in provider.requests] == ["503", "502", "504", "500"]


def test_fail_next_is_consumed_per_matching_request(
    client: httpx.Client, provider: SimulatedProvider
) -> None:
    provider.fail_next("500", times=2)
    provider.fail_next("502")
    provider.fail_next("503", model="b")

    def status(model: str) -> int:
        return client.post(CHAT, json=chat_body(model=model)).status_code

    assert [status("a") for _ in range(4)] == [500, 500, 502, 200]
    assert [status("b"), status("b")] == [503, 200]


def test_set_fault_persists_until_removed(
    client: httpx.Client, provider: SimulatedProvider
) -> None:
    def status(model: str = "a") -> int:
        return client.post(CHAT, json=chat_body(model=model)).status_code

    provider.set_fault("503")
    assert [status(), status()] == [503, 503]
    provider.set_fault(None)
    provider.set_fault("429", model="x")
    assert [status("x"), status("y")] == [429, 200]
    provider.set_fault(None, model="x")
    assert status("x") == 200


def test_constructor_faults_and_clear() -> None:
    provider = SimulatedProvider(fault="500", faults={"m1": "404"})
    with SimulatedServer(provider) as server, httpx.Client(base_url=server.base_url) as http:
        assert http.post(CHAT, json=chat_body(model="m1")).status_code == 404
        assert http.post(CHAT, json=chat_body(model="m2")).status_code == 500
        provider.fail_next("502")
        provider.clear()
        assert provider.requests == [] and provider.disconnects == []
        assert http.post(CHAT, json=chat_body(model="m1")).status_code == 200
    assert len(provider.requests) == 1


def test_faults_apply_to_every_endpoint(client: httpx.Client, provider: SimulatedProvider) -> None:
    provider.set_fault("503")
    assert client.get("/models").status_code == 503
    assert client.post("/embeddings", json={"model": "e", "input": "x"}).status_code == 503
    assert client.post("/completions", json={"model": "e", "prompt": "x"}).status_code == 503


def test_invalid_requests_do_not_consume_faults(
    client: httpx.Client, provider: SimulatedProvider
) -> None:
    provider.fail_next("500")
    assert client.post(CHAT, content=b"nope").status_code == 400
    bad_header = client.post(CHAT, json=chat_body(), headers={"x-sim-fault": "teapot"})
    assert bad_header.status_code == 400
    assert bad_header.json()["error"]["param"] == "x-sim-fault"
    assert client.post(CHAT, json=chat_body()).status_code == 500


def test_request_log(client: httpx.Client, provider: SimulatedProvider) -> None:
    client.post(CHAT, json=chat_body(), headers={"X-Custom": "Yes", "x-sim-fault": "500"})
    client.get("/models")
    first, second = provider.requests
    assert (first.method, first.path, first.fault) == ("POST", "/v1/chat/completions", "500")
    assert first.headers["x-custom"] == "Yes"
    assert json.loads(first.body) == first.json == chat_body()
    assert (second.method, second.path, second.json, second.body, second.fault) == (
        "GET",
        "/v1/models",
        None,
        b"",
        None,
    )
    assert first.received_at <= second.received_at <= time.monotonic()


# --- parsing -----------------------------------------------------------------------------


def test_parse_fault() -> None:
    assert parse_fault("429:retry-after=1.5") == Fault(
        spec="429:retry-after=1.5",
        kind="status",
        status=429,
        retry_after_form="seconds",
        retry_after_value=1.5,
    )
    assert parse_fault("429:retry-after-ms=1500:quota").variant == "quota"
    assert parse_fault("ttfb=2") == Fault(spec="ttfb=2", kind="slow", seconds=2.0)
    assert parse_fault(" CUT=3 ") == Fault(spec=" CUT=3 ", kind="cut", count=3)
    assert parse_fault("hang-after-headers").kind == "hang-after-headers"


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "teapot",
        "200",
        "600",
        "429:retry-after=x",
        "429:retry-after=-1",
        "429:retry-after=inf",
        "429:retry-after=1:retry-after-ms=5",
        "500:quota",
        "400:quota",
        "429:quota:quota",
        "error-body:retry-after=1",
        "cut",
        "cut=-1",
        "cut=1.5",
        "hang=3",
        "slow",
        "slow=nan",
    ],
)
def test_parse_fault_rejects(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_fault(spec)


def test_bad_configuration_is_rejected_early() -> None:
    with pytest.raises(ValueError):
        SimulatedProvider(fault="nope")
    with pytest.raises(ValueError):
        SimulatedProvider(faults={"m": "cut=x"})
    with pytest.raises(ValueError):
        SimulatedProvider(stream_chunks=0)
    provider = SimulatedProvider()
    with pytest.raises(ValueError):
        provider.fail_next("500", times=0)
    with pytest.raises(ValueError):
        provider.set_fault("5000")


# --- the server --------------------------------------------------------------------------


def test_stop_returns_promptly_during_a_hang() -> None:
    provider = SimulatedProvider(fault="hang")
    server = SimulatedServer(provider).start()
    errors: list[Exception] = []

    def call() -> None:
        try:
            httpx.post(f"{server.base_url}{CHAT}", json=chat_body(), timeout=10)
        except httpx.HTTPError as error:
            errors.append(error)

    caller = threading.Thread(target=call)
    caller.start()
    deadline = time.monotonic() + 2
    while not provider.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    assert provider.requests
    started = time.monotonic()
    server.stop()
    assert time.monotonic() - started < 0.8  # open connections are closed, not waited for
    caller.join(2)
    assert not caller.is_alive()
    assert len(errors) == 1 and isinstance(errors[0], httpx.RemoteProtocolError)


def test_server_runs_any_asgi_app_on_a_fresh_port() -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    server = SimulatedServer(app)
    assert server.port == 0
    with server:
        assert server.port > 0
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.base_url == server.url + "/v1"
        assert httpx.get(server.url + "/anything").text == "ok"
    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=1)
    port = server.port
    with server:  # a stopped server can start again, on the same port
        assert server.port == port
        assert httpx.get(server.url).text == "ok"


def test_keep_alive_responses_do_not_stall(client: httpx.Client) -> None:
    # Without TCP_NODELAY on the server's sockets each response waits ~40 ms for a delayed ACK.
    client.get("/models")
    started = time.monotonic()
    for _ in range(10):
        assert client.post(CHAT, json=chat_body()).status_code == 200
    assert time.monotonic() - started < 0.3


def test_closed_port_refuses_connections() -> None:
    port = closed_port()
    assert 0 < port < 65536
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1)


def test_missing_uvicorn_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(RuntimeError, match=r"pip install 'badgr-middleware\[server\]'"):
        SimulatedServer(SimulatedProvider()).start()


def test_public_names() -> None:
    assert sorted(simulator.__all__) == [
        "Fault",
        "RecordedRequest",
        "SimulatedAnthropic",
        "SimulatedConnectionAbort",
        "SimulatedGemini",
        "SimulatedProvider",
        "SimulatedServer",
        "closed_port",
        "parse_fault",
    ]
    assert all(hasattr(simulator, name) for name in simulator.__all__)
