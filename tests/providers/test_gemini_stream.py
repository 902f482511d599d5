"""The Gemini stream translator: exact OpenAI chunks, at any split of the upstream bytes."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import pytest

from badgr_middleware.providers.common import synthetic_id
from badgr_middleware.providers.gemini import GeminiStream
from badgr_middleware.routing.outcomes import Failure, FailureKind

CREATED = 1_700_000_000
MODEL = "gemini-2.5-flash-001"


def ev(data: Any, *, crlf: bool = False) -> bytes:
    text = f"data: {json.dumps(data)}\n\n"
    return (text.replace("\n", "\r\n") if crlf else text).encode()


def part_event(parts: list[dict[str, Any]], finish: str | None = None, index: int = 0,
               usage: dict[str, Any] | None = None) -> dict[str, Any]:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": parts}, "index": index}
    if finish:
        candidate["finishReason"] = finish
    out: dict[str, Any] = {"candidates": [candidate], "modelVersion": MODEL, "responseId": "r1"}
    if usage:
        out["usageMetadata"] = usage
    return out


USAGE = {"promptTokenCount": 5, "candidatesTokenCount": 4, "totalTokenCount": 9}
TEXT = b"".join([
    ev(part_event([{"text": "Hel"}], usage={"promptTokenCount": 5, "totalTokenCount": 5})),
    ev(part_event([{"text": "lo ✓"}])),
    ev(part_event([{"text": ""}], "STOP", usage=USAGE)),
])
CALL = b"".join([
    ev(part_event([{"text": "Checking."}])),
    ev(part_event([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
                   {"functionCall": {"id": "fc2", "name": "get_time", "args": {}}}],
                  "STOP", usage=USAGE)),
])


def chunk(delta: dict[str, Any], finish: str | None = None, index: int = 0,
          usage_field: bool = False) -> dict[str, Any]:
    obj: dict[str, Any] = {"id": "chatcmpl-r1", "object": "chat.completion.chunk",
                           "created": CREATED, "model": MODEL,
                           "choices": [{"index": index, "delta": delta, "logprobs": None,
                                        "finish_reason": finish}]}
    if usage_field:
        obj["usage"] = None
    return obj


ROLE = {"role": "assistant", "content": ""}
TEXT_EXPECTED: list[Any] = [
    chunk(ROLE, usage_field=True), chunk({"content": "Hel"}, usage_field=True),
    chunk({"content": "lo ✓"}, usage_field=True), chunk({}, "stop", usage_field=True),
    {"id": "chatcmpl-r1", "object": "chat.completion.chunk", "created": CREATED,
     "model": MODEL, "choices": [],
     "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}},
    "[DONE]",
]
CALL_EXPECTED: list[Any] = [
    chunk(ROLE), chunk({"content": "Checking."}),
    chunk({"tool_calls": [{"index": 0, "id": synthetic_id("r1", 0, 0, "get_weather"),
                           "type": "function",
                           "function": {"name": "get_weather",
                                        "arguments": "{\"city\":\"Paris\"}"}}]}),
    chunk({"tool_calls": [{"index": 1, "id": "fc2", "type": "function",
                           "function": {"name": "get_time", "arguments": "{}"}}]}),
    chunk({}, "tool_calls"),
    "[DONE]",
]


def new(include_usage: bool = False, choices: int = 1) -> GeminiStream:
    return GeminiStream(lambda t: t.replace("AIza-secret", "***"), created=CREATED,
                        model="gemini-2.5-flash", include_usage=include_usage, choices=choices)


def decode(out: bytes) -> list[Any]:
    events = []
    for block in out.split(b"\n\n")[:-1]:
        data = block.removeprefix(b"data: ")
        events.append("[DONE]" if data == b"[DONE]" else json.loads(data))
    return events


def splits(data: bytes) -> Iterator[list[bytes]]:
    yield [data]
    yield [data[i:i + 1] for i in range(len(data))]
    for cut in range(1, len(data)):
        yield [data[:cut], data[cut:]]
    rng = random.Random(11)
    for _ in range(20):
        cuts = sorted(rng.sample(range(1, len(data)), 6))
        yield [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]


def run(stream: GeminiStream, pieces: list[bytes]) -> list[Any]:
    # as the relay does: the error event kept by a stream that failed after content is last
    return decode(b"".join([stream.feed(p) for p in pieces] + [stream.close()])
                  + stream.error_event)


@pytest.mark.parametrize(("data", "expected", "include_usage"), [
    (TEXT, TEXT_EXPECTED, True),
    (TEXT.replace(b"\n", b"\r\n"), TEXT_EXPECTED, True),
    (CALL, CALL_EXPECTED, False),
], ids=["text", "text CRLF", "function calls"])
def test_exact_chunks_at_any_split(data: bytes, expected: list[Any], include_usage: bool) -> None:
    for pieces in splits(data):
        stream = new(include_usage)
        assert run(stream, pieces) == expected
        assert stream.started and stream.finished and stream.error is None


def test_usage_is_kept() -> None:
    stream = new()
    run(stream, [TEXT])
    assert stream.usage == {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}


def test_last_event_without_its_blank_line_still_counts() -> None:
    stream = new()
    events = run(stream, [TEXT[:-2]])
    assert events[-2:] == [chunk({}, "stop"), "[DONE]"] and stream.error is None


def test_started_only_with_content() -> None:
    stream = new()
    stream.feed(ev(part_event([])))
    assert not stream.started
    stream.feed(ev(part_event([{"text": "x"}])))
    assert stream.started


def test_no_finish_reason_is_an_incomplete_stream() -> None:
    stream = new()
    run(stream, [ev(part_event([{"text": "Hel"}]))])
    assert stream.error == Failure(FailureKind.STREAM_INCOMPLETE, None,
                                   "The upstream stream ended before the answer was complete.",
                                   "stream_interrupted")
    assert not stream.error_in_band and stream.error_event == b""  # the relay writes one


def test_error_before_content_follows_the_policy_with_its_retry_delay() -> None:
    stream = new()
    out = stream.feed(ev({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",
                                    "message": "slow", "details": [{
                                        "@type": "type.googleapis.com/google.rpc.RetryInfo",
                                        "retryDelay": "3s"}]}}))
    assert out == b""
    assert stream.error == Failure(FailureKind.RATE_LIMITED, 429, "slow", "RESOURCE_EXHAUSTED",
                                   3.0)
    assert not stream.error_in_band


def test_error_after_content_is_in_band() -> None:
    data = ev(part_event([{"text": "Hi"}])) + ev([{"error": {
        "code": 503, "status": "UNAVAILABLE", "message": "overloaded AIza-secret"}}])
    for pieces in splits(data):
        stream = new()
        assert run(stream, pieces) == [
            chunk(ROLE), chunk({"content": "Hi"}),
            {"error": {"message": "overloaded ***", "type": "upstream_error", "param": None,
                       "code": "UNAVAILABLE"}}]
        assert stream.error == Failure(FailureKind.STREAM_ERROR, 200, "overloaded ***",
                                       "UNAVAILABLE")
        assert stream.error_in_band


def test_error_after_content_is_kept_for_the_relay_not_returned() -> None:
    stream = new()
    out = stream.feed(ev(part_event([{"text": "Hi"}])) + ev({"error": {
        "code": 503, "status": "UNAVAILABLE", "message": "overloaded"}})
        + ev(part_event([{"text": "late"}], "STOP")))
    assert decode(out) == [chunk(ROLE), chunk({"content": "Hi"})]
    assert decode(stream.error_event) == [{"error": {
        "message": "overloaded", "type": "upstream_error", "param": None,
        "code": "UNAVAILABLE"}}]
    assert stream.error is not None and stream.error.kind is FailureKind.STREAM_ERROR
    assert not stream.finished and stream.close() == b""


def test_garbage_event_after_content_is_malformed() -> None:
    data = ev(part_event([{"text": "Hi"}])) + b"data: {not json\n\n" + ev(
        part_event([{"text": ""}], "STOP"))
    for pieces in splits(data):
        stream = new()
        assert run(stream, pieces) == [
            chunk(ROLE), chunk({"content": "Hi"}),
            {"error": {"message": "The upstream sent a stream event that is not JSON.",
                       "type": "upstream_error", "param": None, "code": "stream_malformed"}}]
        assert stream.error == Failure(FailureKind.STREAM_MALFORMED, 200,
                                       "The upstream sent a stream event that is not JSON.",
                                       "stream_malformed")
        assert stream.error_in_band and not stream.finished


def test_two_candidates_finish_separately() -> None:
    data = ev(part_event([{"text": "a"}], index=0)) + ev(part_event([{"text": "b"}], "STOP",
                                                                    index=1))
    stream = new(choices=2)
    stream.feed(data)
    assert not stream.finished
    stream.feed(ev(part_event([], "MAX_TOKENS", index=0)))
    assert stream.finished
    assert stream.error is None


def test_blocked_prompt() -> None:
    stream = new()
    events = run(stream, [ev({"promptFeedback": {"blockReason": "SAFETY"}, "responseId": "r1",
                              "modelVersion": MODEL})])
    assert events == [chunk(ROLE), chunk({}, "content_filter"), "[DONE]"]
