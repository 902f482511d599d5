"""The OpenAI wire format: upstream requests, error classification, bodies and streams."""

from __future__ import annotations

import json
from typing import Any

import pytest

from badgr_middleware.config import Config
from badgr_middleware.providers.openai import (
    OPENROUTER_ONLY_FIELDS,
    OpenAICompatible,
    OpenAIStream,
)
from badgr_middleware.routing.outcomes import Failure, FailureKind
from badgr_middleware.routing.plan import Plan, RoutedRequest, Target

LOCAL_KEY = "sk-local-0123456789abcdef"
OR_KEY = "sk-or-v1-fedcba9876543210"
NOW = 1_700_000_000.0

CONFIG = Config.from_dict({
    "providers": {
        "local": {
            "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": LOCAL_KEY,
            "headers": {"X-Title": "my app"},
        },
        "openrouter": {"api_key": OR_KEY},
        "keyless": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1/"},
    },
    "allow_anonymous": True,
})
LOCAL = OpenAICompatible(CONFIG.providers["local"])
OPENROUTER = OpenAICompatible(CONFIG.providers["openrouter"])
KEYLESS = OpenAICompatible(CONFIG.providers["keyless"])

BODY: dict[str, Any] = {
    "model": "smart",
    "messages": [{"role": "user", "content": "héllo"}],
    "temperature": 0.5,
    "models": ["cheap"],
    "route": "fallback",
    "provider": {"order": ["anthropic"], "sort": "price"},
    "transforms": ["middle-out"],
    "plugins": [{"id": "web"}],
    "usage": {"include": True},
    "debug": {"echo_upstream_body": True},
    "trace": {"id": "t"},
    "session_id": "s-1",
}


def routed(
    body: dict[str, Any] | None = None,
    *,
    stream: bool = False,
    route: str = "chat/completions",
    forwarded: dict[str, Any] | None = None,
) -> RoutedRequest:
    plan = Plan((Target("local", "llama"),), forwarded)
    content = dict(BODY if body is None else body)
    return RoutedRequest(route, content, plan, "req_1", stream, "smart")


def sent(request: Any) -> dict[str, Any]:
    return json.loads(request.content)


# -- build_request ----------------------------------------------------------------------------


def test_plain_provider_gets_the_target_model_and_no_openrouter_fields() -> None:
    request = routed()
    upstream = LOCAL.build_request(request, Target("local", "meta/llama-3"))
    body = sent(upstream)
    assert body == {
        "model": "meta/llama-3",
        "messages": [{"role": "user", "content": "héllo"}],
        "temperature": 0.5,
    }
    assert upstream.method == "POST"
    assert upstream.url == "http://127.0.0.1:9/v1/chat/completions"
    assert "héllo".encode() in upstream.content  # UTF-8, not \\u escapes
    assert request.body == BODY  # the client's body is left alone


def test_openrouter_gets_its_own_fields_and_the_forwarded_preferences() -> None:
    request = routed(forwarded={"order": ["anthropic"], "sort": "price"})
    body = sent(OPENROUTER.build_request(request, Target("openrouter", "anthropic/claude")))
    assert body["model"] == "anthropic/claude"
    for name in ("transforms", "plugins", "usage", "debug", "trace", "session_id"):
        assert body[name] == BODY[name]
    assert "models" not in body
    assert "route" not in body
    assert body["provider"] == {"order": ["anthropic"], "sort": "price"}


def test_openrouter_provider_field_is_the_plans_not_the_clients() -> None:
    client_prefs = {"order": ["local", "anthropic"], "only": ["local"]}
    request = routed({**BODY, "provider": client_prefs}, forwarded={"order": ["anthropic"]})
    body = sent(OPENROUTER.build_request(request, Target("openrouter", "x")))
    assert body["provider"] == {"order": ["anthropic"]}


def test_openrouter_without_forwarded_preferences_gets_no_provider_field() -> None:
    body = sent(OPENROUTER.build_request(routed(), Target("openrouter", "x")))
    assert "provider" not in body


def test_openrouter_only_fields_list() -> None:
    assert set(OPENROUTER_ONLY_FIELDS) >= {"models", "route", "provider", "transforms", "plugins"}


@pytest.mark.parametrize(("stream", "accept"), [(True, "text/event-stream"),
                                                 (False, "application/json")])
def test_headers(stream: bool, accept: str) -> None:
    headers = LOCAL.build_request(routed(stream=stream), Target("local", "m")).headers
    assert headers["authorization"] == f"Bearer {LOCAL_KEY}"
    assert headers["accept"] == accept
    assert headers["content-type"] == "application/json"
    assert headers["x-title"] == "my app"
    assert all(name == name.lower() for name in headers)


def test_no_key_no_authorization_header() -> None:
    upstream = KEYLESS.build_request(routed(), Target("keyless", "m"))
    assert "authorization" not in upstream.headers
    assert upstream.url == "http://127.0.0.1:9/v1/chat/completions"


def test_openrouter_url_and_key() -> None:
    upstream = OPENROUTER.build_request(routed(route="embeddings", body={"model": "e",
                                                                        "input": "x"}),
                                        Target("openrouter", "e"))
    assert upstream.url == "https://openrouter.ai/api/v1/embeddings"
    assert upstream.headers["authorization"] == f"Bearer {OR_KEY}"


# -- classify_error -----------------------------------------------------------------------------


def err(body: Any) -> bytes:
    return body if isinstance(body, bytes) else json.dumps(body).encode()


@pytest.mark.parametrize(
    ("status", "headers", "body", "kind", "code", "retry_after"),
    [
        pytest.param(
            429, {}, {"error": {"message": "You exceeded your current quota", "type":
                                "insufficient_quota", "param": None,
                                "code": "insufficient_quota"}},
            FailureKind.QUOTA, "insufficient_quota", None, id="openai-quota",
        ),
        pytest.param(
            429, {}, {"error": {"message": "quota", "type": "insufficient_quota", "code": None}},
            FailureKind.QUOTA, "insufficient_quota", None, id="openai-quota-type-only",
        ),
        pytest.param(
            429, {"retry-after": "20"},
            {"error": {"message": "Rate limit reached", "type": "requests",
                       "code": "rate_limit_exceeded"}},
            FailureKind.RATE_LIMITED, "rate_limit_exceeded", 20.0, id="openai-429",
        ),
        pytest.param(
            429, {"retry-after-ms": "1500", "retry-after": "9"}, {"error": {"message": "slow"}},
            FailureKind.RATE_LIMITED, None, 1.5, id="retry-after-ms",
        ),
        pytest.param(
            503, {"retry-after": "4"}, {"error": {"message": "overloaded"}},
            FailureKind.SERVER, None, 4.0, id="503-retry-after",
        ),
        pytest.param(
            401, {}, {"error": {"message": "Incorrect API key", "type": "invalid_request_error",
                                "code": "invalid_api_key"}},
            FailureKind.AUTH, "invalid_api_key", None, id="openai-401",
        ),
        pytest.param(
            402, {}, {"error": {"code": 402, "message": "Insufficient credits"}},
            FailureKind.QUOTA, None, None, id="openrouter-402",
        ),
        pytest.param(
            429, {}, {"error": {"code": 429, "message": "Provider returned error",
                                "metadata": {"error_type": "rate_limit_exceeded",
                                             "provider_name": "Together"}}},
            FailureKind.RATE_LIMITED, "rate_limit_exceeded", None, id="openrouter-metadata",
        ),
        pytest.param(
            429, {}, {"error": {"code": 429, "message": "busy",
                                "availability": {"retry_after": 12}}},
            FailureKind.RATE_LIMITED, None, 12.0, id="openrouter-availability",
        ),
        pytest.param(
            429, {"retry-after": "3"}, {"error": {"code": 429, "message": "busy",
                                                  "availability": {"retry_after": 12}}},
            FailureKind.RATE_LIMITED, None, 3.0, id="header-wins-over-body",
        ),
        pytest.param(
            429, {}, {"error": {"code": 429, "message": "busy",
                                "availability": {"retry_after": -1}}},
            FailureKind.RATE_LIMITED, None, None, id="negative-body-hint",
        ),
        pytest.param(
            502, {}, {"error": {"code": 502, "message": "Provider returned error",
                                "metadata": {"error_type": "provider_unavailable"}}},
            FailureKind.SERVER, "provider_unavailable", None, id="openrouter-502",
        ),
        pytest.param(
            400, {}, {"object": "error", "message": "This model's maximum context length is "
                      "4096 tokens. However, you requested 5000 tokens.",
                      "type": "BadRequestError", "param": None, "code": 400},
            FailureKind.CONTEXT_LENGTH, None, None, id="vllm-context",
        ),
        pytest.param(
            404, {}, {"object": "error", "message": "The model `x` does not exist.",
                      "type": "NotFoundError", "param": None, "code": 404},
            FailureKind.NOT_FOUND, None, None, id="vllm-404",
        ),
        pytest.param(
            503, {}, [{"error": {"code": 503, "message": "The model is overloaded.",
                                 "status": "UNAVAILABLE"}}],
            FailureKind.SERVER, None, None, id="array-wrapped",
        ),
        pytest.param(
            502, {}, b"<html><body>502 Bad Gateway</body></html>",
            FailureKind.SERVER, None, None, id="html",
        ),
        pytest.param(524, {}, b"", FailureKind.SERVER, None, None, id="empty"),
        pytest.param(
            400, {}, {"error": {"message": "bad temperature", "type": "invalid_request_error",
                                "param": "temperature", "code": "invalid_value"}},
            FailureKind.CLIENT, "invalid_value", None, id="client",
        ),
    ],
)
def test_classify_error(
    status: int, headers: dict[str, str], body: Any, kind: FailureKind, code: str | None,
    retry_after: float | None,
) -> None:
    failure = LOCAL.classify_error(status, headers, err(body), NOW)
    assert failure.kind is kind
    assert failure.status == status
    assert failure.code == code
    assert failure.retry_after == retry_after


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"error": {"message": "overloaded"}}, "overloaded"),
        ({"error": "Bad gateway"}, "Bad gateway"),
        ({"message": "Forbidden"}, "Forbidden"),
        ({"object": "error", "message": "vllm says no"}, "vllm says no"),
        ([{"error": {"message": "gemini says no"}}], "gemini says no"),
        (b"not json at all", "Upstream answered HTTP 503."),
        (b"", "Upstream answered HTTP 503."),
        (b"[]", "Upstream answered HTTP 503."),
        (b"null", "Upstream answered HTTP 503."),
        ({"error": {"message": ""}}, "Upstream answered HTTP 503."),
        ({"detail": "nope"}, "Upstream answered HTTP 503."),
        (b"[" * 100_000 + b"]" * 100_000, "Upstream answered HTTP 503."),
    ],
)
def test_classify_error_message(body: Any, message: str) -> None:
    assert LOCAL.classify_error(503, {}, err(body), NOW).message == message


def test_classify_error_param() -> None:
    body = {"error": {"message": "bad", "param": "messages[0].content"}}
    assert LOCAL.classify_error(400, {}, err(body), NOW).param == "messages[0].content"
    body = {"error": {"message": "bad", "param": 3}}
    assert LOCAL.classify_error(400, {}, err(body), NOW).param is None


def test_a_body_echoing_the_api_key_never_puts_it_in_the_failure() -> None:
    body = {"error": {"message": f"Incorrect API key provided: {LOCAL_KEY}. Check it.",
                      "code": "invalid_api_key"}}
    failure = LOCAL.classify_error(401, {}, err(body), NOW)
    assert LOCAL_KEY not in repr(failure)
    assert failure.message == "Incorrect API key provided: ***. Check it."
    assert failure.kind is FailureKind.AUTH


def test_scrub_only_touches_this_providers_key() -> None:
    assert LOCAL.scrub(f"a {LOCAL_KEY} b {LOCAL_KEY}") == "a *** b ***"
    assert LOCAL.scrub(f"{OR_KEY}") == OR_KEY
    assert KEYLESS.scrub("nothing to hide") == "nothing to hide"


# -- check_body ---------------------------------------------------------------------------------


def test_check_body_valid_chat_with_usage() -> None:
    usage = {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    body = {"id": "c", "object": "chat.completion", "choices": [], "usage": usage}
    assert LOCAL.check_body("chat/completions", err(body)) == (None, usage)


@pytest.mark.parametrize("usage", [None, "lots", 5])
def test_check_body_usage_must_be_an_object(usage: Any) -> None:
    body = {"choices": [{"index": 0}], "usage": usage}
    assert LOCAL.check_body("chat/completions", err(body)) == (None, None)


def test_check_body_embeddings_and_completions() -> None:
    assert LOCAL.check_body("embeddings", err({"data": []}))[0] is None
    assert LOCAL.check_body("completions", err({"choices": [{"text": "x"}]}))[0] is None
    failure, _ = LOCAL.check_body("embeddings", err({"choices": []}))
    assert failure is not None
    assert failure.message == "The upstream answer had no 'data'."


def test_check_body_null_error_is_no_error() -> None:
    assert LOCAL.check_body("chat/completions", err({"error": None, "choices": []}))[0] is None


@pytest.mark.parametrize(
    ("body", "code", "message"),
    [
        ({"error": {"message": "overloaded", "code": "server_error"}}, "server_error",
         "overloaded"),
        ({"error": {"message": "Provider returned error", "code": 502}}, "upstream_error",
         "Provider returned error"),
        ({"error": {}}, "bad_response", "The upstream answer had no 'choices'."),
        ({"object": "error", "message": "vllm failed"}, "upstream_error", "vllm failed"),
        ({"error": "boom"}, "upstream_error", "boom"),
        ({"error": {"code": "x"}}, "x", "The upstream returned an error."),
        (b"not json", "bad_response", "The upstream answer was not JSON."),
        (b"", "bad_response", "The upstream answer was not JSON."),
        (b"[" * 100_000, "bad_response", "The upstream answer was not JSON."),
        ([{"choices": []}], "bad_response", "The upstream answer was not an object."),
        ("text", "bad_response", "The upstream answer was not an object."),
        ({"id": "c"}, "bad_response", "The upstream answer had no 'choices'."),
        ({"choices": {"0": {}}}, "bad_response", "The upstream answer had no 'choices'."),
    ],
)
def test_check_body_failures(body: Any, code: str, message: str) -> None:
    failure, usage = LOCAL.check_body("chat/completions", err(body))
    assert failure is not None
    assert failure.kind is FailureKind.BAD_RESPONSE
    assert (failure.status, failure.code, failure.message) == (200, code, message)
    assert usage is None


def test_check_body_scrubs_the_key() -> None:
    body = {"error": {"message": f"key {LOCAL_KEY} is bad"}}
    failure, _ = LOCAL.check_body("chat/completions", err(body))
    assert failure is not None
    assert LOCAL_KEY not in failure.message


# -- OpenAIStream ---------------------------------------------------------------------------


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None,
          usage: dict[str, Any] | None = None) -> bytes:
    choices = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    payload: dict[str, Any] = {"id": "c", "object": "chat.completion.chunk", "choices": choices}
    if usage is not None:
        payload["usage"] = usage
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
ERROR_EVENT = (b'data: {"error":{"message":"Provider returned error","code":502}}\n\n')


def test_a_whole_stream() -> None:
    usage = {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}
    stream = OpenAIStream()
    assert stream.feed(b": OPENROUTER PROCESSING\n\n") == b": OPENROUTER PROCESSING\n\n"
    assert not stream.started
    first = chunk({"role": "assistant", "content": "Hi"})
    assert stream.feed(first) == first
    assert stream.started
    body = chunk({}, "stop") + chunk(None, usage=usage) + DONE
    assert stream.feed(body) == body
    assert stream.finished
    assert stream.usage == usage
    assert stream.close() == b""
    assert stream.error is None


def test_started_only_at_a_complete_data_event() -> None:
    stream = OpenAIStream()
    first = chunk({"content": "Hi"})
    assert stream.feed(first[:-1]) == b""
    assert not stream.started
    assert stream.feed(first[-1:]) == first
    assert stream.started


def test_done_alone_does_not_start_the_stream() -> None:
    stream = OpenAIStream()
    stream.feed(DONE)
    assert stream.finished
    assert not stream.started


@pytest.mark.parametrize(
    "event",
    [
        ERROR_EVENT,
        b'event: error\ndata: {"error":{"message":"Provider returned error","code":502}}\n\n',
        b'data: {"object":"error","message":"Provider returned error","code":502}\n\n',
        b'data: {"error": {"message": "Provider returned error", "code": 502}}\n\n',
    ],
)
def test_in_band_error_before_the_first_event_is_a_bad_response(event: bytes) -> None:
    stream = OpenAIStream()
    # not forwarded: kept for the relay, which sends it if the response already started
    assert stream.feed(event) == b""
    assert stream.error_event == event
    assert not stream.started
    assert stream.error is not None
    assert stream.error.kind is FailureKind.BAD_RESPONSE
    assert (stream.error.status, stream.error.code) == (200, "upstream_error")
    assert stream.error.message == "Provider returned error"
    assert stream.error_in_band
    assert stream.close() == b""


def test_in_band_error_after_the_first_event_is_a_stream_error() -> None:
    stream = OpenAIStream()
    first = chunk({"content": "Hi"})
    assert stream.feed(first) == first
    error = b'data: {"error":{"message":"cut","code":"server_error"}}\n\n'
    assert stream.feed(error) == b""  # kept in error_event: the relay sends it at the end
    assert stream.error_event == error
    assert stream.error is not None
    assert stream.error.kind is FailureKind.STREAM_ERROR
    assert (stream.error.status, stream.error.code) == (200, "server_error")
    assert stream.error.message == "cut"
    assert stream.error_in_band
    assert stream.close() == b""


def test_in_band_error_in_the_same_chunk_forwards_only_what_came_before() -> None:
    stream = OpenAIStream()
    before = b": keep-alive\n\n" + chunk({"content": "Hi"}) + chunk({"content": "!"})
    error = b'event: error\ndata: {"error":{"message":"cut","code":"server_error"}}\n\n'
    assert stream.feed(before + error + chunk({"content": "late"}) + DONE) == before
    assert stream.error_event == error
    assert stream.error is not None and stream.error.kind is FailureKind.STREAM_ERROR
    assert stream.error_in_band and stream.started and not stream.finished


def test_error_inside_content_is_not_an_error() -> None:
    stream = OpenAIStream()
    stream.feed(chunk({"content": "error"}) + chunk({"content": '"error": 1'}))
    assert stream.error is None
    assert stream.started


NOT_JSON_OBJECTS = [
    b'event: error\ndata: "error" but not json\n\n',
    b"data: line1\ndata: line2\n\n",
    b"data: hello\n\n",  # one-line data events: the fast path must find it too
    b"data:nospace\n\n",
    b'data: ["a list"]\n\n',
    b"data: \n\n",
]


@pytest.mark.parametrize("event", NOT_JSON_OBJECTS)
def test_event_that_is_not_a_json_object_before_the_first_event_is_a_bad_response(
    event: bytes,
) -> None:
    stream = OpenAIStream()
    assert stream.feed(event + chunk({"content": "Hi"}) + DONE) == b""
    assert not stream.started and not stream.finished
    assert stream.error == Failure(
        FailureKind.BAD_RESPONSE, 200,
        "The upstream sent a stream event that is not a JSON object.", "stream_malformed")
    assert not stream.error_in_band  # the client would choke on it: never forwarded
    assert stream.error_event == b""
    assert stream.close() == b""


@pytest.mark.parametrize("event", NOT_JSON_OBJECTS)
def test_event_that_is_not_a_json_object_after_the_first_event_is_malformed(
    event: bytes,
) -> None:
    stream = OpenAIStream()
    first = chunk({"role": "assistant", "content": "Hi"})
    assert stream.feed(first) == first
    before = chunk({"content": "!"})
    assert stream.feed(before + event + chunk({}, "stop") + DONE) == before
    assert stream.started and not stream.finished
    assert stream.error == Failure(
        FailureKind.STREAM_MALFORMED, 200,
        "The upstream sent a stream event that is not a JSON object.", "stream_malformed")
    assert not stream.error_in_band
    assert stream.error_event == b""
    assert stream.close() == b""


def test_done_counts_as_well_formed() -> None:
    stream = OpenAIStream()
    body = chunk({"content": "Hi"}) + chunk({}, "stop") + DONE
    assert stream.feed(body) == body
    assert stream.error is None and stream.finished


def test_stream_error_message_is_scrubbed() -> None:
    stream = LOCAL.stream()
    stream.feed(b'data: {"error":{"message":"bad key ' + LOCAL_KEY.encode() + b'"}}\n\n')
    assert stream.error is not None
    assert LOCAL_KEY not in stream.error.message
    assert stream.error.message == "bad key ***"
    assert stream.error_event == b'data: {"error":{"message":"bad key ***"}}\n\n'


@pytest.mark.parametrize("finish", [b'"finish_reason":"stop"', b'"finish_reason": "length"'])
def test_finish_without_done_is_completed_by_close(finish: bytes) -> None:
    stream = OpenAIStream()
    stream.feed(b'data: {"choices":[{"delta":{},' + finish + b"}]}\n\n")
    assert not stream.finished
    assert stream.close() == b"data: [DONE]\n\n"
    assert stream.finished
    assert stream.error is None


def test_no_finish_means_close_finds_the_stream_incomplete() -> None:
    stream = OpenAIStream()
    stream.feed(chunk({"content": "Hi"}, None))  # "finish_reason":null
    assert stream.close() == b""
    assert stream.error is not None
    assert stream.error.kind is FailureKind.STREAM_INCOMPLETE
    assert stream.error.code == "stream_interrupted"  # what the client is told
    assert not stream.error_in_band
    assert stream.error_event == b""


def test_an_unfinished_last_event_does_not_count() -> None:
    stream = OpenAIStream()
    stream.feed(chunk({"content": "Hi"}) + chunk({}, "stop")[:-2])
    assert stream.close() == b""
    assert stream.error is not None
    assert stream.error.kind is FailureKind.STREAM_INCOMPLETE


@pytest.mark.parametrize(
    ("data", "usage"),
    [
        (b'{"choices":[],"usage":{"total_tokens":9}}', {"total_tokens": 9}),
        (b'{"choices":[], "usage": {"total_tokens":9}}', {"total_tokens": 9}),
        (b'{"choices":[],"usage":null}', None),
        (b'{"choices":[],"usage":{"total_tokens":9', None),
    ],
)
def test_usage_chunk(data: bytes, usage: dict[str, Any] | None) -> None:
    stream = OpenAIStream()
    stream.feed(b"data: " + data + b"\n\n")
    assert stream.usage == usage


def test_stream_fed_byte_by_byte() -> None:
    body = (b": keepalive\r\n\r\n" + chunk({"content": "Hi"}) + chunk({}, "stop")
            + chunk(None, usage={"total_tokens": 2}) + DONE)
    stream = OpenAIStream()
    out = b"".join(stream.feed(body[i : i + 1]) for i in range(len(body)))
    assert out == body
    assert stream.started and stream.finished
    assert stream.usage == {"total_tokens": 2}
    assert stream.close() == b""


def test_nothing_after_an_in_band_error_is_forwarded() -> None:
    stream = LOCAL.stream()
    stream.feed(b'data: {"choices":[{"index":0,"delta":{"content":"a"}}]}\n\n')
    error = b'data: {"error":{"message":"overloaded","code":502}}\n\n'
    out = stream.feed(error + b"data: [DONE]\n\n")
    assert out == b""  # the error event itself is the relay's to send
    assert stream.error_event == error  # and nothing after it
    assert stream.error is not None and stream.error_in_band
    assert not stream.finished


def test_an_event_without_data_does_not_start_the_stream() -> None:
    stream = LOCAL.stream()
    stream.feed(b"event: ping\n\n: keep-alive\n\n")
    assert not stream.started
