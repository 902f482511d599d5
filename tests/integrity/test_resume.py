"""Stream integrity and stream resume, end to end (issue 10, parts 1 and 2).

The upstreams answer with one known reply split into 10 pieces; ``cut=5`` drops the
connection after the role chunk and 5 content pieces, so the client has received half of
the answer when it breaks. Without resume the client must get an error, never a silent clean
end; with resume the next target continues the answer and the client's text is the reply
exactly once.
"""

from __future__ import annotations

import json
from typing import Any

import httpx
import openai
import pytest

from .conftest import CLIENT_KEY, KEYS, MESSAGES, REPLY, config


def stream_text(gateway: Any, model: str, **params: Any) -> tuple[str, list[Any], Any]:
    """Stream through the SDK: (text, chunks, the error that ended it or None)."""
    chunks: list[Any] = []
    error: Any = None
    with gateway.client() as client:
        params.setdefault("messages", MESSAGES)
        try:
            for chunk in client.chat.completions.create(model=model, stream=True, **params):
                chunks.append(chunk)
        except openai.APIError as exc:
            error = exc
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks, error


def raw_stream(gateway: Any, model: str, headers: dict[str, str] | None = None,
               **params: Any) -> tuple[httpx.Response, bytes]:
    body = {"model": model, "messages": MESSAGES, "stream": True, **params}
    with httpx.Client(timeout=10) as http:
        response = http.post(f"{gateway.base_url}/chat/completions", json=body, headers={
            "authorization": f"Bearer {CLIENT_KEY}", **(headers or {})})
    return response, response.content


def test_a_cut_stream_without_resume_ends_in_an_error_not_a_clean_end(sims, serve, recorder):
    sims.a.fail_next("cut=5")
    with serve(config(sims)) as gateway:
        text, chunks, error = stream_text(gateway, "plain")
    assert isinstance(error, openai.APIError)
    assert "interrupted" in str(error)
    assert text and REPLY.startswith(text) and text != REPLY
    assert len(sims.b.requests) == 0  # content reached the client: no silent restart
    (failed,) = recorder.of("request_failed")
    assert failed.error_kind == "stream_broken"
    assert [a.outcome for a in failed.attempts_detail] == ["stream_broken"]


def test_a_stream_failing_before_its_first_byte_fails_over_invisibly(sims, serve, recorder):
    sims.a.fail_next("hang-after-headers")  # 200 and SSE headers, then no event at all
    with serve(config(sims, timeouts={"connect": 1, "read": 0.3, "first_byte": 0.3,
                                      "deadline": 10})) as gateway:
        text, _, error = stream_text(gateway, "plain")
    assert error is None
    assert text == REPLY
    assert [r.json["model"] for r in sims.b.requests] == ["m2"]
    (finished,) = recorder.of("request_finished")
    assert (finished.provider, finished.attempts) == ("b", 2)


def test_resume_continues_on_the_same_model_at_another_provider(sims, serve, recorder):
    """a/m1 breaks after 5 pieces; anth/m1 (same model, listed after b/m2) continues it with
    Anthropic's native prefill, and the client reads the reply exactly once."""
    sims.a.fail_next("cut=5")
    with serve(config(sims)) as gateway:
        text, chunks, error = stream_text(gateway, "resumable")
    assert error is None
    assert text == REPLY
    assert sims.b.requests == []  # the same model elsewhere came first
    (continued,) = sims.anth.requests
    last = continued.json["messages"][-1]
    assert last["role"] == "assistant"
    sent = last["content"] if isinstance(last["content"], str) else last["content"][0]["text"]
    assert REPLY.startswith(sent) and sent == sent.rstrip()  # prefill: no trailing space
    assert len({c.id for c in chunks}) == 1  # one answer, one id
    (resumed,) = recorder.of("stream_resumed")
    assert (resumed.from_provider, resumed.to_provider, resumed.to_model) == ("a", "anth", "m1")
    assert resumed.error_kind == "stream_broken" and resumed.sent_tokens > 0
    (finished,) = recorder.of("request_finished")
    assert [(a.target, a.outcome, a.resumed) for a in finished.attempts_detail] == [
        ("a/m1", "stream_broken", False), ("anth/m1", "ok", True)]


def test_resume_on_an_openai_wire_sends_the_answer_so_far_and_an_instruction(sims, serve):
    sims.a.fail_next("cut=5")
    with serve(config(sims)) as gateway:
        text, _, error = stream_text(gateway, "resumable-openai")
    assert error is None and text == REPLY
    (continued,) = sims.b.requests
    *_, assistant, instruction = continued.json["messages"]
    assert assistant["role"] == "assistant" and REPLY.startswith(assistant["content"])
    assert instruction["role"] == "user" and "Continue" in instruction["content"]
    assert continued.json["messages"][0] == MESSAGES[0]


def test_the_client_can_read_where_the_answer_was_resumed(sims, serve):
    sims.a.fail_next("cut=5")
    with serve(config(sims)) as gateway:
        response, raw = raw_stream(gateway, "resumable-openai",
                                   stream_options={"include_usage": True})
    assert response.status_code == 200
    events = [block for block in raw.split(b"\n\n") if block]
    comments = [e for e in events if e.startswith(b":")]
    assert comments == [comments[0]] and comments[0].startswith(
        b": badgr-resumed from=a/m1 to=b/m2 sent_tokens=")
    data = [json.loads(e[6:]) for e in events if e.startswith(b"data: {")]
    assert events[-1] == b"data: [DONE]"
    marked = [d for d in data if "badgr" in d]
    assert marked and all(d["badgr"]["resumed"] is True and d["badgr"]["from"] == "a/m1"
                          and d["badgr"]["to"] == "b/m2" for d in marked)
    usage = data[-1]["usage"]
    # merged: the continuation's own completion plus the estimate of the part already sent
    continuation_words = len(REPLY[len(json.loads(
        sims.b.requests[0].body)["messages"][-2]["content"].rstrip()):].split())
    assert usage["completion_tokens"] > continuation_words
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    text = "".join(d["choices"][0]["delta"].get("content") or "" for d in data if d["choices"])
    assert text == REPLY


def test_a_request_header_turns_resume_on(sims, serve):
    sims.a.fail_next("cut=5")
    with serve(config(sims)) as gateway:
        response, raw = raw_stream(gateway, "plain", {"x-badgr-resume": "true"})
    text = "".join(
        json.loads(e[6:])["choices"][0]["delta"].get("content") or ""
        for e in raw.split(b"\n\n") if e.startswith(b"data: {") and b'"choices":[{' in e)
    assert text == REPLY


def test_a_broken_tool_call_is_never_resumed(sims, serve, recorder):
    """The break happens inside the arguments of a tool call: a clean error, no resume."""
    sims.a.fail_next("cut=1")
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {
        "type": "object", "properties": {"ok": {"type": "boolean"}}}}}]
    with serve(config(sims)) as gateway:
        _, chunks, error = stream_text(gateway, "resumable", tools=tools)
    assert isinstance(error, openai.APIError)
    assert "tool call" in str(error)
    assert chunks and chunks[0].choices[0].delta.tool_calls
    assert sims.b.requests == [] and sims.anth.requests == []
    assert recorder.of("stream_resumed") == []
    (failed,) = recorder.of("request_failed")
    assert failed.error_kind == "stream_broken"


def test_the_resume_policy_limits_how_much_may_already_have_been_sent(sims, serve):
    sims.a.fail_next("cut=5")
    with serve(config(sims)) as gateway:
        response, raw = raw_stream(gateway, "resumable", {"x-badgr-resume": "2"})
    assert b"badgr-resumed" not in raw
    assert b"more of the answer was sent than the resume policy allows" in raw
    assert sims.b.requests == [] and sims.anth.requests == []


def test_with_no_target_left_to_continue_the_stream_ends_in_an_error(sims, serve):
    sims.a.fail_next("cut=5")
    sims.b.set_fault("503")
    with serve(config(sims)) as gateway:
        text, _, error = stream_text(gateway, "resumable-openai")
    assert isinstance(error, openai.APIError)
    assert REPLY.startswith(text) and text != REPLY
    assert len(sims.b.requests) >= 1


def test_an_idle_upstream_is_abandoned_at_the_idle_timeout(sims, serve, recorder):
    """After one content piece the upstream goes silent for 3 s; the read (idle) timeout is
    0.5 s: the stream is given up well before the upstream would have gone on."""
    sims.a.fail_next("idle=3")
    with serve(config(sims)) as gateway:
        text, _, error = stream_text(gateway, "plain")
    assert isinstance(error, openai.APIError)
    assert "silent" in str(error)
    assert sims.a.wait_for_disconnect(2)  # badgr hung up on it
    (failed,) = recorder.of("request_failed")
    assert failed.error_kind == "stream_idle"


def test_an_idle_upstream_is_resumed_elsewhere_when_allowed(sims, serve, recorder):
    sims.a.fail_next("idle=3")
    with serve(config(sims)) as gateway:
        text, _, error = stream_text(gateway, "resumable-openai")
    assert error is None and text == REPLY
    (resumed,) = recorder.of("stream_resumed")
    assert resumed.error_kind == "stream_idle"


def test_keys_never_reach_the_client_in_a_resumed_stream(sims, serve):
    sims.a.fail_next("cut=5")
    with serve(config(sims, attempts_detail=True)) as gateway:
        response, raw = raw_stream(gateway, "resumable")
    blob = raw + str(response.headers).encode()
    for key in KEYS.values():
        assert key.encode() not in blob


@pytest.mark.parametrize("header", ["yes", "-1", "0"])
def test_a_bad_resume_header_is_a_clear_400(sims, header):
    from .conftest import asgi_gateway

    with asgi_gateway(config(sims)) as gateway:
        response, raw = raw_stream(gateway, "plain", {"x-badgr-resume": header})
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "x-badgr-resume"
    assert sims.a.requests == []
