"""The Anthropic stream state machine: exact OpenAI chunks for recorded Anthropic streams, fed
whole, byte by byte and split at every boundary."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from badgr_middleware.providers.anthropic import AnthropicStream
from badgr_middleware.routing.outcomes import Failure, FailureKind

CREATED = 1_700_000_000
ID = "chatcmpl-msg_014p7gG3wDgGV9EUtLvnow3U"
MODEL = "claude-opus-4-1-20250805"


def event(name: str, data: dict[str, Any], *, crlf: bool = False) -> bytes:
    text = f"event: {name}\ndata: {json.dumps(data)}\n\n"
    return (text.replace("\n", "\r\n") if crlf else text).encode()


def message_start(input_tokens: int = 472) -> bytes:
    return event("message_start", {"type": "message_start", "message": {
        "id": "msg_014p7gG3wDgGV9EUtLvnow3U", "type": "message", "role": "assistant",
        "model": MODEL, "stop_sequence": None, "content": [], "stop_reason": None,
        "usage": {"input_tokens": input_tokens, "output_tokens": 2}}})


def block_start(index: int, block: dict[str, Any]) -> bytes:
    return event("content_block_start",
                 {"type": "content_block_start", "index": index, "content_block": block})


def text_delta(index: int, text: str) -> bytes:
    return event("content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "text_delta", "text": text}})


def json_delta(index: int, fragment: str) -> bytes:
    return event("content_block_delta", {"type": "content_block_delta", "index": index,
                                          "delta": {"type": "input_json_delta",
                                                    "partial_json": fragment}})


def block_stop(index: int) -> bytes:
    return event("content_block_stop", {"type": "content_block_stop", "index": index})


def message_delta(stop: str, output_tokens: int, **usage: int) -> bytes:
    return event("message_delta", {"type": "message_delta",
                                    "delta": {"stop_reason": stop, "stop_sequence": None},
                                    "usage": {"output_tokens": output_tokens, **usage}})


PING = b'event: ping\ndata: {"type": "ping"}\n\n'
STOP = event("message_stop", {"type": "message_stop"})
OVERLOADED = event("error", {"type": "error", "error": {
    "type": "overloaded_error", "message": "Overloaded", "details": None}})

# the documented tool-use stream (wire-formats.md §3.4), with a second, argument-less call
TOOL_STREAM = b"".join([
    message_start(),
    block_start(0, {"type": "text", "text": ""}),
    PING,
    text_delta(0, "Okay"),
    block_stop(0),
    block_start(1, {"type": "tool_use", "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                    "name": "get_weather", "input": {}}),
    json_delta(1, ""),
    json_delta(1, "{\"location\":"),
    json_delta(1, " \"San Francisco, CA\"}"),
    block_stop(1),
    block_start(2, {"type": "tool_use", "id": "toolu_02", "name": "get_time", "input": {}}),
    block_stop(2),
    message_delta("tool_use", 89),
    STOP,
])
TEXT_STREAM = b"".join([
    message_start(10),
    block_start(0, {"type": "text", "text": ""}),
    text_delta(0, "Hel"),
    PING,
    text_delta(0, "lo ✓"),
    block_stop(0),
    event("brand_new_event", {"type": "brand_new_event"}),
    message_delta("end_turn", 3),
    message_delta("end_turn", 4, input_tokens=10, cache_read_input_tokens=6),
    STOP,
])


def chunk(delta: dict[str, Any], finish: str | None = None,
          usage_field: bool = False) -> dict[str, Any]:
    obj: dict[str, Any] = {
        "id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage_field:
        obj["usage"] = None
    return obj


TOOL_EXPECTED: list[Any] = [
    chunk({"role": "assistant", "content": ""}),
    chunk({"content": "Okay"}),
    chunk({"tool_calls": [{"index": 0, "id": "toolu_01T1x1fJ34qAmk2tNTrN7Up6",
                           "type": "function",
                           "function": {"name": "get_weather", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": "{\"location\":"}}]}),
    chunk({"tool_calls": [{"index": 0, "function": {"arguments": " \"San Francisco, CA\"}"}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "toolu_02", "type": "function",
                           "function": {"name": "get_time", "arguments": ""}}]}),
    chunk({"tool_calls": [{"index": 1, "function": {"arguments": "{}"}}]}),
    chunk({}, "tool_calls"),
    "[DONE]",
]
TEXT_EXPECTED: list[Any] = [
    chunk({"role": "assistant", "content": ""}, usage_field=True),
    chunk({"content": "Hel"}, usage_field=True),
    chunk({"content": "lo ✓"}, usage_field=True),
    chunk({}, "stop", usage_field=True),
    {"id": ID, "object": "chat.completion.chunk", "created": CREATED, "model": MODEL,
     "choices": [], "usage": {"prompt_tokens": 16, "completion_tokens": 4, "total_tokens": 20,
                              "prompt_tokens_details": {"cached_tokens": 6}}},
    "[DONE]",
]


def new(include_usage: bool = False, json_mode: bool = False) -> AnthropicStream:
    return AnthropicStream(lambda text: text.replace("sk-secret", "***"), created=CREATED,
                           model="claude-opus-4-1", include_usage=include_usage,
                           json_mode=json_mode)


def decode(out: bytes) -> list[Any]:
    """The OpenAI events in ``out``, which must be whole ``data:`` events."""
    assert out.endswith(b"\n\n") or not out
    events = []
    for block in out.split(b"\n\n")[:-1]:
        assert block.startswith(b"data: ")
        data = block[len(b"data: "):]
        events.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return events


def splits(data: bytes) -> Iterator[list[bytes]]:
    """The stream whole, byte by byte, cut at every single position, and in random pieces."""
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]
    rng = random.Random(7)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), 8))
        yield [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def run(stream: AnthropicStream, pieces: list[bytes]) -> tuple[list[Any], bool]:
    """Feed the pieces; return the events and whether ``started`` came no earlier than the
    first content event. As the relay does, the error event kept by a stream that failed
    after content comes last."""
    out: list[bytes] = []
    for piece in pieces:
        out.append(stream.feed(piece))
    out.append(stream.close())
    out.append(stream.error_event)
    return decode(b"".join(out)), stream.started


@pytest.mark.parametrize(("data", "expected", "include_usage"), [
    (TOOL_STREAM, TOOL_EXPECTED, False),
    (TEXT_STREAM, TEXT_EXPECTED, True),
    (TEXT_STREAM.replace(b"\n", b"\r\n"), TEXT_EXPECTED, True),
], ids=["tool calls", "text with usage", "text with CRLF"])
def test_exact_chunks_at_any_split(data: bytes, expected: list[Any], include_usage: bool) -> None:
    for pieces in splits(data):
        stream = new(include_usage)
        events, started = run(stream, pieces)
        assert events == expected
        assert started and stream.finished and stream.error is None


def test_usage_is_reported_even_without_include_usage() -> None:
    stream = new()
    run(stream, [TOOL_STREAM])
    assert stream.usage == {"prompt_tokens": 472, "completion_tokens": 89, "total_tokens": 561}


def test_started_only_at_content_not_at_message_start() -> None:
    stream = new()
    out = stream.feed(message_start() + block_start(0, {"type": "text", "text": ""}) + PING)
    assert decode(out) == [chunk({"role": "assistant", "content": ""})]
    assert not stream.started  # the driver holds these bytes back
    stream.feed(text_delta(0, "x"))
    assert stream.started


def test_started_at_a_tool_call_start() -> None:
    stream = new()
    stream.feed(message_start())
    assert not stream.started
    stream.feed(block_start(0, {"type": "tool_use", "id": "t", "name": "f", "input": {}}))
    assert stream.started


def test_overloaded_before_content_fails_over_silently() -> None:
    for pieces in splits(message_start() + PING + OVERLOADED):
        stream = new()
        events, _ = run(stream, pieces)
        assert stream.error == Failure(FailureKind.SERVER, 529, "Overloaded",
                                       "overloaded_error")
        assert not stream.started and not stream.error_in_band
        # only the held-back role chunk was produced; nothing after the error
        assert events == [chunk({"role": "assistant", "content": ""})]


@pytest.mark.parametrize(("kind", "expected"), [
    ("rate_limit_error", FailureKind.RATE_LIMITED),
    ("api_error", FailureKind.SERVER),
    ("authentication_error", FailureKind.AUTH),
    ("invalid_request_error", FailureKind.CLIENT),
    ("something_new", FailureKind.SERVER),
])
def test_error_event_before_content_follows_the_policy(kind: str,
                                                       expected: FailureKind) -> None:
    stream = new()
    stream.feed(message_start() + event("error", {"type": "error", "error": {
        "type": kind, "message": "m"}}))
    assert stream.error is not None and stream.error.kind is expected
    assert stream.error.code == kind


def test_error_after_content_is_in_band() -> None:
    data = message_start() + block_start(0, {"type": "text", "text": ""}) + text_delta(
        0, "Hi") + event("error", {"type": "error", "error": {
            "type": "overloaded_error", "message": "Overloaded sk-secret"}}) + STOP
    for pieces in splits(data):
        stream = new()
        events, _ = run(stream, pieces)
        assert events == [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hi"}),
            {"error": {"message": "Overloaded ***", "type": "upstream_error", "param": None,
                       "code": "overloaded_error"}},
        ]
        assert stream.error == Failure(FailureKind.STREAM_ERROR, 200, "Overloaded ***",
                                       "overloaded_error")
        assert stream.error_in_band and not stream.finished


def test_error_after_content_is_kept_for_the_relay_not_returned() -> None:
    stream = new()
    out = stream.feed(message_start() + block_start(0, {"type": "text", "text": ""})
                      + text_delta(0, "Hi"))
    assert decode(out) == [chunk({"role": "assistant", "content": ""}), chunk({"content": "Hi"})]
    assert stream.feed(OVERLOADED + text_delta(0, "late") + STOP) == b""
    assert decode(stream.error_event) == [{"error": {
        "message": "Overloaded", "type": "upstream_error", "param": None,
        "code": "overloaded_error"}}]
    assert stream.error is not None and stream.error.kind is FailureKind.STREAM_ERROR
    assert stream.close() == b""


def test_garbage_event_after_content_is_malformed() -> None:
    data = message_start() + block_start(0, {"type": "text", "text": ""}) + text_delta(
        0, "Hi") + b"event: content_block_delta\ndata: {not json\n\n" + STOP
    for pieces in splits(data):
        stream = new()
        events, _ = run(stream, pieces)
        assert events == [
            chunk({"role": "assistant", "content": ""}),
            chunk({"content": "Hi"}),
            {"error": {"message": "The upstream sent a stream event that is not JSON.",
                       "type": "upstream_error", "param": None, "code": "stream_malformed"}},
        ]
        assert stream.error == Failure(FailureKind.STREAM_MALFORMED, 200,
                                       "The upstream sent a stream event that is not JSON.",
                                       "stream_malformed")
        assert stream.error_in_band and not stream.finished


@pytest.mark.parametrize("cut_after", ["message_delta", "text", "message_start"])
def test_stream_without_message_stop_is_incomplete(cut_after: str) -> None:
    parts = [message_start(), block_start(0, {"type": "text", "text": ""}),
             text_delta(0, "Hi"), message_delta("end_turn", 2)]
    data = {"message_start": parts[:1], "text": parts[:3], "message_delta": parts}[cut_after]
    stream = new()
    stream.feed(b"".join(data) + b"event: message_stop\ndata: {\"ty")  # half an event
    assert stream.close() == b""
    assert stream.error == Failure(
        FailureKind.STREAM_INCOMPLETE, None,
        "The upstream stream ended before the answer was complete.", "stream_interrupted")
    assert not stream.finished
    assert not stream.error_in_band and stream.error_event == b""  # the relay writes one


def test_empty_answer_still_starts_and_finishes() -> None:
    stream = new()
    events, started = run(stream, [message_start(), message_delta("max_tokens", 0), STOP])
    assert started and stream.finished
    assert events[-2:] == [chunk({}, "length"), "[DONE]"]


def test_json_mode_tool_streams_as_content() -> None:
    data = b"".join([
        message_start(),
        block_start(0, {"type": "tool_use", "id": "toolu_1", "name": "json_response",
                        "input": {}}),
        json_delta(0, ""),
        json_delta(0, "{\"a\": "),
        json_delta(0, "1}"),
        block_stop(0),
        message_delta("tool_use", 5),
        STOP,
    ])
    stream = new(json_mode=True)
    events, _ = run(stream, [data])
    assert events == [
        chunk({"role": "assistant", "content": ""}),
        chunk({"content": "{\"a\": "}),
        chunk({"content": "1}"}),
        chunk({}, "stop"),
        "[DONE]",
    ]


def test_thinking_is_left_out() -> None:
    data = b"".join([
        message_start(),
        block_start(0, {"type": "thinking", "thinking": ""}),
        event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "thinking_delta", "thinking": "hmm"}}),
        event("content_block_delta", {"type": "content_block_delta", "index": 0,
                                      "delta": {"type": "signature_delta", "signature": "s"}}),
        block_stop(0),
        block_start(1, {"type": "text", "text": ""}),
        text_delta(1, "42"),
        block_stop(1),
        message_delta("end_turn", 9),
        STOP,
    ])
    stream = new()
    events, _ = run(stream, [data])
    assert [e["choices"][0]["delta"] for e in events[:-1]] == [
        {"role": "assistant", "content": ""}, {"content": "42"}, {}]


def test_garbage_event_before_content_is_a_bad_response() -> None:
    stream = new()
    stream.feed(b"event: message_start\ndata: {not json\n\n")
    assert stream.error is not None and stream.error.kind is FailureKind.BAD_RESPONSE


def test_nothing_is_read_after_the_end() -> None:
    stream = new()
    run(stream, [TOOL_STREAM])
    assert stream.feed(text_delta(0, "late")) == b""
