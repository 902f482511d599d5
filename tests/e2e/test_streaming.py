"""Streams end to end (docs/failover.md §4): incremental delivery, usage, breaks, disconnects."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import openai
import pytest

from badgr_middleware.simulator import SimulatedServer
from badgr_middleware.simulator.payloads import split_text

CLIENT_KEY = "test-client-key"
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
MESSAGES = [{"role": "user", "content": "Say hello please"}]
SLOW_CHUNK_DELAY = 0.2  # conftest: the "slow" upstream waits this long between events
SLOW_CHUNKS = 5
PIECES_OF_A = split_text("Hello from a.", 5)
PIECES_OF_PACED = split_text("Hello from paced.", 5)


def sse_payloads(raw: str) -> list[str]:
    """The data payloads (and comments, as ``:...``) of a complete SSE body."""
    assert raw.endswith("\n\n"), raw[-80:]
    out = []
    for event in raw[:-2].split("\n\n"):
        for line in event.split("\n"):
            out.append(line.removeprefix("data: "))
    return out


def content_of(chunk: Any) -> str:
    return (chunk.choices[0].delta.content or "") if chunk.choices else ""


# -- incremental delivery ----------------------------------------------------------------------


def check_incremental(reply: Any, sims: Any) -> None:
    assert reply.error is None, reply.error
    assert reply.content == "Hello from slow."
    (request,) = sims.slow.requests
    pieces = [t for chunk, t in zip(reply.chunks, reply.arrivals, strict=True) if content_of(chunk)]
    assert len(pieces) == SLOW_CHUNKS
    # The upstream sends role, 5 pieces, finish, [DONE] with SLOW_CHUNK_DELAY between events:
    # it cannot have sent its finish chunk before received_at + 6 delays. The first piece
    # reached the client before that moment...
    upstream_finish = request.received_at + 6 * SLOW_CHUNK_DELAY
    assert pieces[0] < upstream_finish
    # ...and the pieces arrived spread out as they were sent, not buffered and flushed together
    assert reply.arrivals[-1] >= upstream_finish
    assert pieces[-1] - pieces[0] >= 0.5 * (SLOW_CHUNKS - 1) * SLOW_CHUNK_DELAY


def test_chunks_reach_the_client_as_the_upstream_sends_them(gateway, sims, recorder) -> None:
    reply = gateway.chat("slow", stream=True)
    check_incremental(reply, sims)
    finished = recorder.wait_for("request_finished", reply.request_id)
    assert finished.stream is True


@pytest.mark.anyio
async def test_chunks_reach_the_async_client_incrementally(gateway, sims, recorder) -> None:
    reply = await gateway.achat("slow", stream=True)
    check_incremental(reply, sims)


# -- usage -------------------------------------------------------------------------------------


USAGE = {"prompt_tokens": 3, "completion_tokens": 3, "total_tokens": 6}
WITH_USAGE = {"stream_options": {"include_usage": True}}


def check_usage(reply: Any, recorder: Any, sims: Any) -> None:
    assert reply.error is None
    assert reply.content == "Hello from a."
    last = reply.chunks[-1]
    assert last.choices == []
    assert last.usage.model_dump(include=set(USAGE)) == USAGE
    assert all(chunk.usage is None for chunk in reply.chunks[:-1])
    assert sims.a.requests[0].json["stream_options"] == {"include_usage": True}
    finished = recorder.wait_for("request_finished", reply.request_id)
    assert {k: finished.usage[k] for k in USAGE} == USAGE


def test_include_usage_chunk_passes_through_and_reaches_request_finished(
    gateway, sims, recorder
) -> None:
    reply = gateway.chat("ab", stream=True, **WITH_USAGE)
    check_usage(reply, recorder, sims)


@pytest.mark.anyio
async def test_include_usage_async(gateway, sims, recorder) -> None:
    reply = await gateway.achat("ab", stream=True, **WITH_USAGE)
    check_usage(reply, recorder, sims)


def test_non_streamed_usage_reaches_request_finished(gateway, recorder) -> None:
    reply = gateway.chat("ab")
    finished = recorder.wait_for("request_finished", reply.request_id)
    assert finished.usage == reply.completion.usage.model_dump(exclude_none=True)
    assert finished.stream is False


# -- failures after the first byte -------------------------------------------------------------


def check_cut(reply: Any, recorder: Any, sims: Any) -> None:
    # the role chunk and two pieces reached the client, then the stream ended in an error
    assert reply.status == 200
    assert reply.content == "".join(PIECES_OF_A[:2])
    assert [content_of(c) for c in reply.chunks] == ["", *PIECES_OF_A[:2]]
    assert type(reply.error) is openai.APIError
    assert re.search(r"interrupt|broke", reply.error.message)
    assert reply.error.type == "upstream_error"
    assert sims.b.requests == []  # too late to fail over: bytes had reached the client
    failed = recorder.wait_for("request_failed", reply.request_id)
    assert (failed.error_kind, failed.stream, failed.provider) == ("stream_broken", True, "a")
    assert recorder.names(reply.request_id) == [
        "request_started", "attempt_failed", "request_failed",
    ]


def test_cut_after_the_first_event_ends_the_stream_with_an_error(gateway, sims, recorder) -> None:
    sims.a.fail_next("cut=2")
    reply = gateway.chat("ab", stream=True)
    check_cut(reply, recorder, sims)


@pytest.mark.anyio
async def test_cut_after_the_first_event_async(gateway, sims, recorder) -> None:
    sims.a.fail_next("cut=2")
    reply = await gateway.achat("ab", stream=True)
    check_cut(reply, recorder, sims)


@pytest.mark.parametrize("fault", ["cut=2", "idle=1"])
def test_break_after_the_first_event_sends_a_stream_interrupted_error(
    gateway, sims, fault: str
) -> None:
    sims.a.fail_next(fault)  # idle=1: one second of silence, twice timeouts.read
    reply = gateway.chat("ab", stream=True)
    delivered = {"cut=2": 2, "idle=1": 1}[fault]  # pieces sent before the break
    assert reply.content == "".join(PIECES_OF_A[:delivered])
    assert type(reply.error) is openai.APIError
    assert (reply.error.type, reply.error.code) == ("upstream_error", "stream_interrupted")


def test_read_timeout_after_the_first_event_is_stream_idle(gateway, sims, recorder) -> None:
    sims.a.fail_next("idle=1")
    reply = gateway.chat("ab", stream=True)
    assert reply.content == PIECES_OF_A[0]
    assert type(reply.error) is openai.APIError
    assert sims.b.requests == []
    assert (reply.error.type, reply.error.code) == ("upstream_error", "stream_interrupted")
    assert "went silent" in reply.error.message
    failed = recorder.wait_for("request_failed", reply.request_id)
    assert failed.error_kind == "stream_idle"


# The paced upstream sends its events 50 ms apart, so the error event arrives after the first
# event has been handed to the client (the simulator's default sends them back to back).


def test_midstream_error_event_is_forwarded_and_ends_the_stream(gateway, sims, recorder) -> None:
    sims.paced.fail_next("midstream-error=2")
    reply = gateway.chat("paced-b", stream=True)
    assert reply.status == 200
    assert reply.content == "".join(PIECES_OF_PACED[:2])
    assert type(reply.error) is openai.APIError
    assert reply.error.message == "Upstream provider error (simulated by paced)."
    assert sims.b.requests == []
    failed = recorder.wait_for("request_failed", reply.request_id)
    assert (failed.error_kind, failed.provider) == ("stream_error", "paced")


def test_midstream_error_event_is_forwarded_as_is(gateway, sims, recorder) -> None:
    sims.paced.fail_next("midstream-error=2")
    body = {"model": "paced-b", "stream": True, "messages": MESSAGES}
    with gateway.http() as http:
        response = http.post("/v1/chat/completions", json=body, headers=AUTH)
    payloads = sse_payloads(response.text)
    assert response.status_code == 200
    assert response.headers["x-badgr-provider"] == "paced"
    # role, two pieces, the upstream's own error chunk: nothing added after it, no [DONE]
    assert len(payloads) == 4
    error_chunk = json.loads(payloads[-1])
    assert error_chunk["provider"] == "paced"
    assert error_chunk["error"] == {
        "message": "Upstream provider error (simulated by paced).", "code": 502,
    }
    assert error_chunk["choices"][0]["finish_reason"] == "error"
    recorder.wait_for_end(response.headers["x-request-id"])


@pytest.mark.anyio
async def test_midstream_error_async(gateway, sims, recorder) -> None:
    sims.paced.fail_next("midstream-error=1")
    reply = await gateway.achat("paced-b", stream=True)
    assert reply.content == PIECES_OF_PACED[0]
    assert type(reply.error) is openai.APIError
    assert sims.b.requests == []
    recorder.wait_for_end(reply.request_id)


# -- failures before the first byte are invisible ----------------------------------------------


@pytest.mark.parametrize("fault", ["error-body", "hang-after-headers", "503"])
def test_failure_before_the_first_event_is_invisible(gateway, sims, recorder, fault) -> None:
    sims.a.fail_next(fault)
    body = {"model": "ab", "stream": True, "messages": MESSAGES}
    with gateway.http() as http:
        response = http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 200
    assert response.headers["x-badgr-attempts"] == "2"
    assert response.headers["x-badgr-provider"] == "b"
    payloads = sse_payloads(response.text)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("error" not in chunk for chunk in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == (
        "Hello from b."
    )
    recorder.wait_for_end(response.headers["x-request-id"])


def test_single_target_error_event_first_is_a_json_error_not_a_stream(gateway, sims) -> None:
    sims.a.set_fault("error-body")
    body = {"model": "solo", "stream": True, "messages": MESSAGES}
    with gateway.http() as http:
        response = http.post("/v1/chat/completions", json=body, headers=AUTH)
    assert response.status_code == 502
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-should-retry"] == "false"
    assert response.json()["error"]["code"] == "all_targets_failed"


# -- headers and framing -----------------------------------------------------------------------


def test_stream_response_headers(gateway, recorder) -> None:
    body = {"model": "ab", "stream": True, "messages": MESSAGES}
    with gateway.http() as http, http.stream(
        "POST", "/v1/chat/completions", json=body, headers=AUTH
    ) as response:
        raw = response.read().decode()
    headers = response.headers
    assert response.status_code == 200
    assert headers["content-type"].split(";")[0] == "text/event-stream"
    assert headers["cache-control"] == "no-cache"
    assert headers["x-accel-buffering"] == "no"
    assert "content-length" not in headers
    assert headers["transfer-encoding"] == "chunked"
    assert (headers["x-badgr-provider"], headers["x-badgr-model"]) == ("a", "m-a")
    assert headers["x-badgr-attempts"] == "1"
    assert raw.endswith("data: [DONE]\n\n")
    recorder.wait_for_end(headers["x-request-id"])


def test_sdk_stream_headers(gateway) -> None:
    reply = gateway.chat("ab", stream=True)
    assert reply.headers["content-type"].startswith("text/event-stream")
    assert "content-length" not in reply.headers


# -- the client goes away ----------------------------------------------------------------------


def test_client_disconnect_cancels_the_upstream_request(gateway, sims, recorder) -> None:
    body = {"model": "slow", "stream": True, "messages": MESSAGES}
    with gateway.http() as http:
        with http.stream("POST", "/v1/chat/completions", json=body, headers=AUTH) as response:
            assert response.status_code == 200
            first = next(response.iter_raw())
            assert first.startswith(b"data: ")
            request_id = response.headers["x-request-id"]
        # the response is closed with most of the stream unread: the connection is dropped
        assert sims.slow.wait_for_disconnect(1.0)
    assert sims.slow.disconnects == sims.slow.requests  # the one request, cut short
    assert sims.slow.requests[0].json["model"] == "m-slow"
    failed = recorder.wait_for("request_failed", request_id)
    assert (failed.error_kind, failed.status, failed.stream) == ("client_disconnected", 499, True)
    assert recorder.events("request_finished", request_id) == []
    assert recorder.events("attempt_failed", request_id) == []


@pytest.mark.anyio
async def test_async_client_disconnect_cancels_the_upstream_request(
    gateway, sims, recorder
) -> None:
    body = {"model": "slow", "stream": True, "messages": MESSAGES}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http, http.stream(
        "POST", "/v1/chat/completions", json=body, headers=AUTH
    ) as response:
        async for _ in response.aiter_raw():
            break
        request_id = response.headers["x-request-id"]
    assert sims.slow.wait_for_disconnect(1.0)
    assert sims.slow.disconnects == sims.slow.requests  # the one request, cut short
    failed = recorder.wait_for("request_failed", request_id)
    assert failed.error_kind == "client_disconnected"


# -- upstream stream shapes the simulator does not produce -------------------------------------

KEEPALIVE = b": OPENROUTER PROCESSING\n\n"
# model -> the writes of the upstream's stream; each write is a list of events
SCRIPTS: dict[str, list[list[Any]]] = {
    # a keep-alive comment before the first event; a finish reason but no [DONE]
    "m-nodone": [[KEEPALIVE], ["role"], ["Hi"], ["finish"]],
    # ends cleanly after one piece: neither [DONE] nor a finish reason
    "m-truncated": [["role"], ["Hi"]],
    # the first event, a piece and an in-band error event, in a single write
    "m-batched-error": [["role", "Hi", "error"]],
}
SCRIPTED_ERROR = {"message": "Upstream provider error (scripted).", "code": 502}


def script_event(step: Any) -> bytes:
    if isinstance(step, bytes):
        return step
    chunk: dict[str, Any] = {"id": "chatcmpl-script", "object": "chat.completion.chunk",
                             "created": 1, "model": "scripted"}
    if step == "role":
        choice = {"index": 0, "delta": {"role": "assistant", "content": ""},
                  "finish_reason": None}
    elif step == "finish":
        choice = {"index": 0, "delta": {}, "finish_reason": "stop"}
    elif step == "error":  # OpenRouter's mid-stream error chunk
        chunk["error"] = SCRIPTED_ERROR
        choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
    else:
        choice = {"index": 0, "delta": {"content": step}, "finish_reason": None}
    chunk["choices"] = [choice]
    return b"data: " + json.dumps(chunk).encode() + b"\n\n"


async def scripted_upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An OpenAI-compatible upstream that plays the stream named by the requested model."""
    if scope["type"] == "lifespan":
        while (await receive())["type"] != "lifespan.shutdown":
            await send({"type": "lifespan.startup.complete"})
        await send({"type": "lifespan.shutdown.complete"})
        return
    chunks = []
    while True:
        message = await receive()
        chunks.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    script = SCRIPTS[json.loads(b"".join(chunks))["model"]]
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/event-stream")]})
    for write in script:
        data = b"".join(script_event(step) for step in write)
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(scope="module")
def scripted():
    with SimulatedServer(scripted_upstream) as server:
        yield server


@pytest.fixture
def scripted_gateway(make_gateway, config_for, scripted):
    config = config_for()
    config["providers"]["scripted"] = {"kind": "openai", "base_url": scripted.base_url}
    config["models"].update({"nodone": ["scripted/m-nodone"],
                             "truncated": ["scripted/m-truncated"],
                             "batched-b": ["scripted/m-batched-error", "b/m-b"]})
    return make_gateway(config)


def test_keepalive_comment_is_kept_and_done_is_added(scripted_gateway, recorder) -> None:
    body = {"model": "nodone", "stream": True, "messages": MESSAGES}
    with scripted_gateway.http() as http:
        response = http.post("/v1/chat/completions", json=body, headers=AUTH)
    payloads = sse_payloads(response.text)
    assert payloads[0] == ": OPENROUTER PROCESSING"
    assert [json.loads(p)["choices"][0]["finish_reason"] for p in payloads[1:-1]] == [
        None, None, "stop",
    ]
    assert payloads[-1] == "[DONE]"
    recorder.wait_for("request_finished", response.headers["x-request-id"])
    with scripted_gateway.client() as client:
        stream = client.chat.completions.create(model="nodone", stream=True, messages=MESSAGES)
        assert "".join(content_of(chunk) for chunk in stream) == "Hi"


def test_stream_ending_without_finish_or_done_ends_with_an_error(
    scripted_gateway, recorder
) -> None:
    reply = scripted_gateway.chat("truncated", stream=True)
    assert reply.content == "Hi"
    assert type(reply.error) is openai.APIError
    assert (reply.error.type, reply.error.code) == ("upstream_error", "stream_interrupted")
    failed = recorder.wait_for("request_failed", reply.request_id)
    assert failed.error_kind == "stream_incomplete"


def test_error_event_in_the_same_read_as_the_first_event_is_forwarded(
    scripted_gateway, sims, recorder
) -> None:
    reply = scripted_gateway.chat("batched-b", stream=True)
    assert reply.headers.get("x-badgr-provider") == "scripted"
    assert reply.content == "Hi"
    assert type(reply.error) is openai.APIError
    assert reply.error.message == SCRIPTED_ERROR["message"]
    assert sims.b.requests == []
