"""Stream resume without I/O: the sent log, the continuation request, the continuation's
rewrite, and the relay's end-of-stream outcomes (issue 10)."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from badgr_middleware.config import ResumePolicy
from badgr_middleware.drivers.base import DriverBase, Opened, Relay
from badgr_middleware.errors import ApiError
from badgr_middleware.pricing import estimate_tokens
from badgr_middleware.providers.openai import OpenAIStream
from badgr_middleware.resume import (
    CONTINUE_INSTRUCTION,
    Continuation,
    SentLog,
    continuation_body,
    resume_marker,
)
from badgr_middleware.routing.flow import Interrupted
from badgr_middleware.routing.outcomes import Delivered, Failure, FailureKind
from badgr_middleware.routing.plan import Plan, RoutedRequest, Target

FIRST = {"id": "chatcmpl-A", "model": "gpt-a", "created": 100}
SECOND = {"id": "chatcmpl-B", "model": "claude-b", "created": 200}


def event(obj: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode() + (
        b"\n\n")


def chunk(content: str | None = None, *, role: str | None = None, finish: str | None = None,
          index: int = 0, meta: dict[str, Any] = FIRST, **delta: Any) -> bytes:
    d: dict[str, Any] = dict(delta)
    if role is not None:
        d["role"] = role
    if content is not None:
        d["content"] = content
    return event({**meta, "object": "chat.completion.chunk",
                  "choices": [{"index": index, "delta": d, "finish_reason": finish}]})


def usage_chunk(prompt: int, completion: int, meta: dict[str, Any] = FIRST) -> bytes:
    return event({**meta, "object": "chat.completion.chunk", "choices": [],
                  "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                            "total_tokens": prompt + completion}})


DONE = b"data: [DONE]\n\n"
TOOL_DELTA = {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                              "function": {"name": "get", "arguments": "{\"ci"}}]}


def decode(out: bytes) -> list[Any]:
    """The data of every event in ``out``: parsed JSON, or the raw bytes of ``[DONE]``."""
    assert out == b"" or out.endswith(b"\n\n"), out
    parsed: list[Any] = []
    for block in out.split(b"\n\n")[:-1]:
        assert block.startswith(b"data: "), block
        data = block[len(b"data: "):]
        parsed.append(data if data == b"[DONE]" else json.loads(data))
    return parsed


# -- SentLog ----------------------------------------------------------------------------------

ANSWER = (chunk("", role="assistant") + b": keep-alive comment\n\n" + chunk("Hel")
          + chunk("lo, w\u00f6r") + chunk("ld \u2603") + chunk(finish="stop") + DONE)


def test_sent_log_reads_the_text_of_a_whole_stream() -> None:
    log = SentLog(100)
    log.feed(ANSWER)
    assert log.text == "Hello, w\u00f6rld \u2603"
    assert log.first == FIRST
    assert (log.tool_call, log.several, log.why_not()) == (False, False, None)


@pytest.mark.parametrize("cut", range(1, len(ANSWER)))
def test_sent_log_text_does_not_depend_on_where_the_bytes_were_split(cut: int) -> None:
    log = SentLog(100)
    log.feed(ANSWER[:cut])
    log.feed(ANSWER[cut:])
    assert log.text == "Hello, w\u00f6rld \u2603"
    assert log.first == FIRST
    assert log.why_not() is None


def test_sent_log_fed_byte_by_byte() -> None:
    log = SentLog(100)
    for i in range(len(ANSWER)):
        log.feed(ANSWER[i:i + 1])
    assert log.text == "Hello, w\u00f6rld \u2603"
    assert log.first == FIRST


def test_sent_log_ignores_the_role_chunk() -> None:
    log = SentLog(100)
    log.feed(chunk("", role="assistant") + chunk(role="assistant"))
    assert log.text == ""
    assert log.why_not() is None
    assert log.first == FIRST


def test_sent_log_keeps_the_first_chunks_id_model_created_only() -> None:
    log = SentLog(100)
    log.feed(event({"id": "x1", "model": "m1", "object": "chat.completion.chunk",
                    "choices": [{"index": 0, "delta": {"content": "a"}}]}))
    log.feed(chunk("b", meta=SECOND))
    assert log.first == {"id": "x1", "model": "m1"}  # no `created` in the first chunk
    assert log.text == "ab"


def test_sent_log_ignores_done_comments_and_events_that_are_not_objects() -> None:
    log = SentLog(100)
    log.feed(b": comment\n\n" + b"data: [1, 2]\n\n" + b"data: not json\n\n" + chunk("x") + DONE)
    assert log.text == "x"
    assert log.first == FIRST  # the first JSON object, not the list before it


@pytest.mark.parametrize("delta", [TOOL_DELTA, {"function_call": {"name": "get"}}])
def test_a_tool_call_makes_the_answer_not_resumable(delta: dict[str, Any]) -> None:
    log = SentLog(100)
    log.feed(chunk("", role="assistant") + chunk("Let me look.") + chunk(**delta))
    assert log.tool_call is True
    assert log.text == "Let me look."
    assert log.why_not() == "the stream broke inside a tool call, which cannot be resumed"
    assert "tool call" in log.why_not()


def test_a_second_choice_makes_the_answer_not_resumable() -> None:
    log = SentLog(100)
    log.feed(chunk("a") + chunk("b", index=1))
    assert log.several is True
    assert log.text == "ab"  # both choices' text: it is never resumed anyway
    assert log.why_not() == "a stream with several choices cannot be resumed"


def test_the_token_limit_counts_four_characters_a_token() -> None:
    log = SentLog(2)  # 8 characters
    log.feed(chunk("abcd") + chunk("efgh"))
    assert log.why_not() is None  # exactly at the limit is still resumable
    log.feed(chunk("i"))
    assert log.why_not() == "more of the answer was sent than the resume policy allows"
    log.feed(chunk("jk") + chunk(**TOOL_DELTA))  # past the limit nothing more is read
    assert log.text == "abcdefghi"
    assert log.tool_call is False


def test_a_tool_call_reason_wins_over_the_others() -> None:
    log = SentLog(0)
    log.feed(chunk("a") + chunk(**TOOL_DELTA, index=1))
    assert (log.tool_call, log.several) == (True, True)
    assert log.why_not() == "the stream broke inside a tool call, which cannot be resumed"


# -- continuation_body ------------------------------------------------------------------------

BODY = {
    "model": "m",
    "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
    "n": 3,
    "max_tokens": 100,
    "max_completion_tokens": 50,
    "stream": True,
    "temperature": 0.5,
}
TEXT = "Hello there,  \n"  # 15 characters: 4 estimated tokens


def test_continuation_body_with_prefill_appends_the_answer_without_trailing_space() -> None:
    body = copy.deepcopy(BODY)
    out = continuation_body(body, TEXT, prefill=True)
    assert out == {
        "model": "m",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "Hello there,"},
        ],
        "n": 1,
        "max_tokens": 96,
        "max_completion_tokens": 46,
        "stream": True,
        "temperature": 0.5,
    }
    assert body == BODY  # the input is not mutated
    assert len(body["messages"]) == 2


def test_continuation_body_without_prefill_asks_in_words() -> None:
    body = copy.deepcopy(BODY)
    out = continuation_body(body, TEXT, prefill=False)
    assert out["messages"] == [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": TEXT},
        {"role": "user", "content": CONTINUE_INSTRUCTION},
    ]
    assert (out["n"], out["max_tokens"], out["max_completion_tokens"]) == (1, 96, 46)
    assert body == BODY
    assert out["messages"][0] is body["messages"][0]  # the original messages, unchanged


def test_continuation_body_leaves_absent_fields_absent_and_keeps_at_least_one_token() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 3}
    out = continuation_body(body, "x" * 40, prefill=False)  # 10 estimated tokens
    assert out["max_tokens"] == 1
    assert "n" not in out and "max_completion_tokens" not in out
    assert body["max_tokens"] == 3


def test_continuation_body_ignores_limits_that_are_not_integers() -> None:
    body = {"messages": [], "max_tokens": True, "max_completion_tokens": 10.0, "n": None}
    out = continuation_body(body, "abcdefgh", prefill=True)
    assert (out["max_tokens"], out["max_completion_tokens"], out["n"]) == (True, 10.0, None)
    assert out["messages"] == [{"role": "assistant", "content": "abcdefgh"}]


def test_continue_instruction_and_resume_marker() -> None:
    assert CONTINUE_INSTRUCTION.startswith("Your previous answer was cut off.")
    assert resume_marker("a/x", "b/y", 12) == (
        b": badgr-resumed from=a/x to=b/y sent_tokens=12\n\n")


# -- Continuation -----------------------------------------------------------------------------

NOTE = {"resumed": True, "from": "a/gpt-a", "to": "b/claude-b", "sent_tokens": 7, "attempts": 2}


def sent_log(text_chunks: list[str]) -> SentLog:
    log = SentLog(1000)
    log.feed(chunk("", role="assistant") + b"".join(chunk(t) for t in text_chunks))
    return log


def rest_of_answer() -> bytes:
    """A continuation as an upstream sends it: its own id, model, created and role chunk."""
    return (chunk("", role="assistant", meta=SECOND) + chunk("   world", meta=SECOND)
            + chunk("  again", meta=SECOND) + chunk(finish="stop", meta=SECOND)
            + usage_chunk(10, 5, meta=SECOND) + DONE)


EXPECTED_REST = [
    {**FIRST, "object": "chat.completion.chunk",
     "choices": [{"index": 0, "delta": {"content": " world"}, "finish_reason": None}]},
    {**FIRST, "object": "chat.completion.chunk",
     "choices": [{"index": 0, "delta": {"content": "  again"}, "finish_reason": None}]},
    {**FIRST, "object": "chat.completion.chunk",
     "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "badgr": NOTE},
    {**FIRST, "object": "chat.completion.chunk", "choices": [],
     "usage": {"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22},
     "badgr": NOTE},
    b"[DONE]",
]


def test_continuation_reads_as_the_rest_of_the_first_answer() -> None:
    sent = sent_log(["Hello", " \n"])  # the client already has two whitespace characters
    out = Continuation(sent, NOTE, 7).feed(rest_of_answer())
    assert decode(out) == EXPECTED_REST
    assert out.endswith(b"\n\ndata: [DONE]\n\n")


def test_continuation_fed_byte_by_byte_gives_the_same_bytes() -> None:
    whole = Continuation(sent_log(["Hello", " \n"]), NOTE, 7).feed(rest_of_answer())
    continuation = Continuation(sent_log(["Hello", " \n"]), NOTE, 7)
    raw = rest_of_answer()
    pieces = [continuation.feed(raw[i:i + 1]) for i in range(len(raw))]
    assert b"".join(pieces) == whole
    assert decode(whole) == EXPECTED_REST
    assert continuation.feed(b"") == b""


def test_continuation_strips_no_whitespace_when_the_sent_text_ended_without_any() -> None:
    out = Continuation(sent_log(["Hello"]), NOTE, 7).feed(chunk(" world", meta=SECOND))
    assert decode(out)[0]["choices"][0]["delta"] == {"content": " world"}


def test_continuation_strips_at_most_the_trailing_amount_in_total() -> None:
    """Two trailing spaces sent: a whitespace-only first piece uses one of them up (and is
    dropped, being empty), the next piece loses one more, and after that nothing is cut."""
    continuation = Continuation(sent_log(["Hi  "]), NOTE, 0)
    out = continuation.feed(chunk(" ", meta=SECOND) + chunk("   there", meta=SECOND)
                            + chunk("  more", meta=SECOND))
    assert [c["choices"][0]["delta"] for c in decode(out)] == [
        {"content": "  there"}, {"content": "  more"}]


def test_continuation_strips_only_the_first_content() -> None:
    continuation = Continuation(sent_log(["Hi \n\n"]), NOTE, 0)  # three trailing characters
    out = continuation.feed(chunk(" x", meta=SECOND) + chunk("   y", meta=SECOND))
    assert [c["choices"][0]["delta"] for c in decode(out)] == [
        {"content": "x"}, {"content": "   y"}]


def test_continuation_passes_error_events_and_done_through() -> None:
    error = b'{"error":{"message":"Provider returned error","code":502}}'
    continuation = Continuation(sent_log(["Hi"]), NOTE, 3)
    out = continuation.feed(b"data: " + error + b"\n\n" + b"data: not json\n\n" + DONE)
    assert out == b"data: " + error + b"\n\n" + b"data: not json\n\n" + DONE


def test_continuation_keeps_ids_the_first_part_lacked() -> None:
    log = SentLog(100)
    log.feed(event({"id": "x1", "choices": [{"index": 0, "delta": {"content": "a"}}]}))
    out = Continuation(log, NOTE, 1).feed(chunk("b", meta=SECOND))
    (rewritten,) = decode(out)
    assert (rewritten["id"], rewritten["model"], rewritten["created"]) == (
        "x1", "claude-b", 200)


def test_continuation_leaves_usage_without_completion_tokens_alone() -> None:
    out = Continuation(sent_log(["Hi"]), NOTE, 3).feed(event(
        {**SECOND, "choices": [], "usage": {"prompt_tokens": 4, "total_tokens": 9}}))
    assert decode(out) == [{**FIRST, "choices": [], "usage": {"prompt_tokens": 4,
                                                              "total_tokens": 9},
                            "badgr": NOTE}]


def test_continuation_writes_compact_json_with_unicode_kept() -> None:
    out = Continuation(sent_log(["Hi"]), NOTE, 0).feed(chunk("\u00e9t\u00e9", meta=SECOND))
    assert out == (b'data: {"id":"chatcmpl-A","model":"gpt-a","created":100,'
                   b'"object":"chat.completion.chunk","choices":[{"index":0,"delta":'
                   b'{"content":"\xc3\xa9t\xc3\xa9"},"finish_reason":null}]}\n\n')


# -- Relay.end() ------------------------------------------------------------------------------


def relay_through(relay: Relay, *pieces: bytes) -> bytes:
    return b"".join(relay.feed(p) for p in pieces)


def test_a_clean_end_is_delivered_with_the_usage() -> None:
    relay = Relay(OpenAIStream(), SentLog(100))
    body = (chunk("", role="assistant") + chunk("Hi") + chunk(finish="stop")
            + usage_chunk(3, 1) + DONE)
    assert relay_through(relay, body[:40], body[40:]) == body
    assert relay.done is True
    assert relay.end() == (b"", Delivered({"prompt_tokens": 3, "completion_tokens": 1,
                                           "total_tokens": 4}))


def test_a_finished_stream_without_done_gets_done_added_at_the_end() -> None:
    relay = Relay(OpenAIStream())
    out = relay_through(relay, chunk("Hi") + chunk(finish="stop"))
    assert relay.done is False
    assert relay.feed(None) == DONE
    assert relay.done is True
    assert relay.end() == (b"", Delivered(None))
    assert out == chunk("Hi") + chunk(finish="stop")


def test_a_broken_resumable_stream_is_interrupted_and_sends_nothing_more() -> None:
    relay = Relay(OpenAIStream(), SentLog(100))
    relay_through(relay, chunk("", role="assistant"), chunk("Hello wor"))
    relay.broken(ConnectionResetError("reset"))
    assert relay.done is True
    assert relay.end() == (b"", Interrupted(
        Failure(FailureKind.STREAM_BROKEN, None,
                "The stream was interrupted: the upstream connection broke.",
                "stream_interrupted"),
        estimate_tokens("Hello wor")))
    assert estimate_tokens("Hello wor") == 3


def test_a_read_timeout_is_an_idle_interruption() -> None:
    relay = Relay(OpenAIStream(), SentLog(100))
    relay_through(relay, chunk("abcdefghijklm"))  # 13 characters: 4 tokens
    relay.broken(TimeoutError())
    assert relay.end() == (b"", Interrupted(
        Failure(FailureKind.STREAM_IDLE, None,
                "The stream was interrupted: the upstream went silent for longer than the "
                "read timeout.", "stream_interrupted"), 4))


def test_an_unfinished_resumable_stream_is_interrupted() -> None:
    relay = Relay(OpenAIStream(), SentLog(100))
    relay_through(relay, chunk("Hi there"))
    assert relay.feed(None) == b""
    assert relay.end() == (b"", Interrupted(
        Failure(FailureKind.STREAM_INCOMPLETE, None,
                "The upstream stream ended before the answer was complete.",
                "stream_interrupted"), 2))


def test_a_stream_broken_inside_a_tool_call_ends_in_an_error_event() -> None:
    relay = Relay(OpenAIStream(), SentLog(100))
    relay_through(relay, chunk("", role="assistant"), chunk(**TOOL_DELTA))
    relay.broken(ConnectionResetError())
    message = ("The stream was interrupted: the upstream connection broke; the stream broke "
               "inside a tool call, which cannot be resumed.")
    failure = Failure(FailureKind.STREAM_BROKEN, None, message, "stream_interrupted")
    tail, outcome = relay.end()
    assert outcome == Delivered(None, failure)
    assert tail == b"data: " + ApiError(502, message, type="upstream_error",
                                        code="stream_interrupted").body() + b"\n\n"
    assert decode(tail) == [{"error": {"message": message, "type": "upstream_error",
                                       "param": None, "code": "stream_interrupted"}}]
    assert "tool call" in decode(tail)[0]["error"]["message"]


def test_a_stream_past_the_resume_limit_ends_in_an_error_event() -> None:
    relay = Relay(OpenAIStream(), SentLog(1))
    relay_through(relay, chunk("abcdefgh"))
    relay.broken(ConnectionResetError())
    tail, outcome = relay.end()
    message = ("The stream was interrupted: the upstream connection broke; more of the answer "
               "was sent than the resume policy allows.")
    assert outcome == Delivered(None, Failure(FailureKind.STREAM_BROKEN, None, message,
                                              "stream_interrupted"))
    assert decode(tail)[0]["error"]["message"] == message


def test_without_resume_a_broken_stream_ends_in_an_error_event() -> None:
    relay = Relay(OpenAIStream())
    relay_through(relay, chunk("Hi"))
    relay.broken(ConnectionResetError())
    tail, outcome = relay.end()
    message = "The stream was interrupted: the upstream connection broke."
    assert outcome == Delivered(None, Failure(FailureKind.STREAM_BROKEN, None, message,
                                              "stream_interrupted"))
    assert decode(tail) == [{"error": {"message": message, "type": "upstream_error",
                                       "param": None, "code": "stream_interrupted"}}]


UPSTREAM_ERROR = (b'event: error\ndata: {"error":{"message":"Provider returned error",'
                  b'"code":502}}\n\n')
IN_BAND = Failure(FailureKind.STREAM_ERROR, 200, "Provider returned error", "upstream_error")


def test_an_upstream_error_event_is_sent_as_is_when_not_resuming() -> None:
    relay = Relay(OpenAIStream())
    out = relay_through(relay, chunk("", role="assistant") + chunk("Hi") + UPSTREAM_ERROR
                        + chunk("after"))
    assert out == chunk("", role="assistant") + chunk("Hi")  # the error is held back
    assert relay.done is True
    assert relay.end() == (UPSTREAM_ERROR, Delivered(None, IN_BAND))


def test_an_upstream_error_event_interrupts_a_resumable_stream() -> None:
    relay = Relay(OpenAIStream(), SentLog(100))
    relay_through(relay, chunk("Hi th"), UPSTREAM_ERROR)
    assert relay.end() == (b"", Interrupted(IN_BAND, 2))


def test_an_upstream_error_event_inside_a_tool_call_is_sent_with_the_reason_noted() -> None:
    relay = Relay(OpenAIStream(), SentLog(100))
    relay_through(relay, chunk(**TOOL_DELTA), UPSTREAM_ERROR)
    tail, outcome = relay.end()
    assert tail == UPSTREAM_ERROR  # the upstream's own event reaches the client
    assert outcome == Delivered(None, Failure(
        FailureKind.STREAM_ERROR, 200,
        "Provider returned error; the stream broke inside a tool call, which cannot be "
        "resumed.", "upstream_error"))


def test_a_broken_connection_after_an_error_event_sends_our_error_event() -> None:
    relay = Relay(OpenAIStream())
    relay_through(relay, chunk("Hi"), UPSTREAM_ERROR)
    relay.broken(ConnectionResetError())
    tail, outcome = relay.end()
    assert outcome.failure is not None
    assert outcome.failure.kind is FailureKind.STREAM_BROKEN
    assert decode(tail)[0]["error"]["code"] == "stream_interrupted"


def test_a_resumed_relay_rewrites_the_continuation_and_keeps_logging() -> None:
    relay = Relay(OpenAIStream(), SentLog(100))
    relay_through(relay, chunk("", role="assistant"), chunk("Hello "))
    relay.broken(ConnectionResetError())
    assert relay.end()[1] == Interrupted(
        Failure(FailureKind.STREAM_BROKEN, None,
                "The stream was interrupted: the upstream connection broke.",
                "stream_interrupted"), 2)
    note = {"resumed": True, "from": "a/gpt-a", "to": "b/claude-b", "sent_tokens": 2,
            "attempts": 2}
    second = relay.resumed(OpenAIStream(), note, 2)
    assert second.sent is relay.sent
    out = relay_through(second, chunk("", role="assistant", meta=SECOND)
                        + chunk(" world", meta=SECOND) + chunk(finish="stop", meta=SECOND)
                        + usage_chunk(20, 3, meta=SECOND) + DONE)
    assert decode(out) == [
        {**FIRST, "object": "chat.completion.chunk",
         "choices": [{"index": 0, "delta": {"content": "world"}, "finish_reason": None}]},
        {**FIRST, "object": "chat.completion.chunk",
         "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "badgr": note},
        {**FIRST, "object": "chat.completion.chunk", "choices": [],
         "usage": {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25},
         "badgr": note},
        b"[DONE]",
    ]
    assert relay.sent is not None and relay.sent.text == "Hello world"
    # the continuation's own translator saw the upstream's usage, not the merged one
    assert second.end() == (b"", Delivered({"prompt_tokens": 20, "completion_tokens": 3,
                                            "total_tokens": 23}))


# -- relay_for --------------------------------------------------------------------------------


def routed(resume: ResumePolicy | None, route: str = "chat/completions") -> RoutedRequest:
    plan = Plan((Target("a", "gpt-a"),))
    return RoutedRequest(route, {"model": "m"}, plan, "req_1", True, "m", resume=resume)


def test_relay_for_logs_what_is_sent_when_the_request_may_resume() -> None:
    first = chunk("", role="assistant") + chunk("abc")
    stream = OpenAIStream()
    stream.feed(first)
    relay = DriverBase.relay_for(routed(ResumePolicy(max_sent_tokens=3)),
                                 Opened(None, stream=stream, first=first))
    assert relay.sent is not None
    assert relay.sent.text == "abc"
    assert relay.sent.first == FIRST
    relay.feed(chunk("defghijklm"))  # 13 characters: over 3 tokens (12 characters)
    assert relay.sent.why_not() == "more of the answer was sent than the resume policy allows"


@pytest.mark.parametrize(("resume", "route"), [
    (None, "chat/completions"), (ResumePolicy(), "completions")])
def test_relay_for_keeps_no_log_otherwise(resume: ResumePolicy | None, route: str) -> None:
    relay = DriverBase.relay_for(routed(resume, route),
                                 Opened(None, stream=OpenAIStream(), first=chunk("x")))
    assert relay.sent is None
