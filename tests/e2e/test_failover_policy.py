"""docs/failover.md §2 and §3, row by row, over real HTTP with the openai SDK as the client.

Alias ``ab`` is ``[a/m-a, b/m-b]``: the first target answers with the row's fault, the second
is healthy. Each row runs streamed and not, with the sync SDK and the async SDK.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest

from badgr_middleware.simulator import SimulatedServer

CLIENT_KEY = "test-client-key"
STARTED_TO_FINISHED = ["request_started", "attempt_failed", "failover", "request_finished"]
READ_TIMEOUT = 0.5  # conftest TIMEOUTS["read"]

# (fault on the first target, the failure kind badgr must classify it as)
FAILOVER_ROWS = [
    ("503", "server_error"),
    ("502", "server_error"),
    ("504", "server_error"),
    ("520", "server_error"),
    ("529", "server_error"),
    ("500", "server_error"),
    ("408", "server_error"),
    ("429", "rate_limited"),
    ("429:retry-after=2", "rate_limited"),
    ("429:retry-after-ms=1500", "rate_limited"),
    ("429:retry-after-date=3", "rate_limited"),
    ("429:quota", "quota_exhausted"),
    ("402", "quota_exhausted"),
    ("401", "unauthorized"),
    ("403", "unauthorized"),
    ("404", "model_not_found"),
    ("error-body", "bad_response"),
    ("invalid-json", "bad_response"),
    ("hang", "timeout"),
    ("hang-after-headers", "timeout"),
]
STREAM = pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])


# the kind when streamed, where it differs: the simulator answers `invalid-json` with a
# truncated JSON body, which never completes an SSE event and so ends without [DONE]
STREAM_KINDS = {"invalid-json": "stream_incomplete"}


def expected_kind(fault: str, kind: str, stream: bool) -> set[str]:
    # docs/failover.md: a stream that fails before its first event fails over, whatever its kind
    return {STREAM_KINDS.get(fault, kind) if stream else kind}


def assert_served_by_b_after_failover(
    reply: Any, recorder: Any, sims: Any, *, first: str, first_model: str, kinds: set[str]
) -> Any:
    assert reply.error is None, reply.error
    assert reply.status == 200
    assert reply.content == "Hello from b."
    assert reply.headers["x-badgr-attempts"] == "2"
    assert reply.headers["x-badgr-provider"] == "b"
    assert reply.headers["x-badgr-model"] == "m-b"
    if reply.completion is not None:
        assert reply.completion.model == "m-b"
    else:
        assert {chunk.model for chunk in reply.chunks} == {"m-b"}
    rid = reply.request_id
    recorder.wait_for_end(rid)
    assert recorder.names(rid) == STARTED_TO_FINISHED
    (failed,) = recorder.events("attempt_failed", rid)
    assert (failed.provider, failed.model, failed.attempt) == (first, first_model, 1)
    assert failed.error_kind in kinds
    (moved,) = recorder.events("failover", rid)
    assert (moved.from_provider, moved.from_model) == (first, first_model)
    assert (moved.to_provider, moved.to_model) == ("b", "m-b")
    assert moved.error_kind == failed.error_kind
    (finished,) = recorder.events("request_finished", rid)
    assert (finished.provider, finished.model, finished.attempts) == ("b", "m-b", 2)
    assert sims.models_seen("b") == ["m-b"]
    return failed


def check_row(reply: Any, recorder: Any, sims: Any, fault: str, kind: str, stream: bool) -> None:
    failed = assert_served_by_b_after_failover(
        reply, recorder, sims, first="a", first_model="m-a",
        kinds=expected_kind(fault, kind, stream),
    )
    assert [r.fault for r in sims.a.requests] == [fault]
    head = fault.split(":")[0]
    if head.isdigit():
        assert failed.status == int(head)
    if fault.startswith("hang"):
        # failed over only once timeouts.read passed without a byte
        assert failed.latency >= READ_TIMEOUT * 0.9


# -- one retryable or skippable failure, then the next target ----------------------------------


@STREAM
@pytest.mark.parametrize(("fault", "kind"), FAILOVER_ROWS)
def test_failure_fails_over_to_the_next_target(
    gateway, sims, recorder, fault: str, kind: str, stream: bool
) -> None:
    sims.a.fail_next(fault)
    reply = gateway.chat("ab", stream=stream)
    check_row(reply, recorder, sims, fault, kind, stream)


@pytest.mark.anyio
@STREAM
@pytest.mark.parametrize(("fault", "kind"), FAILOVER_ROWS)
async def test_failure_fails_over_to_the_next_target_async(
    gateway, sims, recorder, fault: str, kind: str, stream: bool
) -> None:
    sims.a.fail_next(fault)
    reply = await gateway.achat("ab", stream=stream)
    check_row(reply, recorder, sims, fault, kind, stream)


@STREAM
def test_connection_refused_fails_over(gateway, sims, recorder, stream: bool) -> None:
    reply = gateway.chat("dead-b", stream=stream)
    failed = assert_served_by_b_after_failover(
        reply, recorder, sims, first="dead", first_model="m-dead", kinds={"connect_error"}
    )
    assert failed.status is None


@pytest.mark.anyio
@STREAM
async def test_connection_refused_fails_over_async(gateway, sims, recorder, stream: bool) -> None:
    reply = await gateway.achat("dead-b", stream=stream)
    assert_served_by_b_after_failover(
        reply, recorder, sims, first="dead", first_model="m-dead", kinds={"connect_error"}
    )


# -- the "done when", literally --------------------------------------------------------


@STREAM
def test_done_when_503_then_second_target(gateway, sims, recorder, stream: bool) -> None:
    sims.a.fail_next("503")
    reply = gateway.chat("ab", stream=stream)
    assert reply.error is None
    assert reply.content == "Hello from b."
    assert reply.headers["x-badgr-attempts"] == "2"
    assert reply.headers["x-badgr-provider"] == "b"
    recorder.wait_for_end(reply.request_id)
    assert recorder.names() == STARTED_TO_FINISHED


@pytest.mark.anyio
@STREAM
async def test_done_when_503_then_second_target_async(
    gateway, sims, recorder, stream: bool
) -> None:
    sims.a.fail_next("503")
    reply = await gateway.achat("ab", stream=stream)
    assert reply.error is None
    assert reply.content == "Hello from b."
    assert reply.headers["x-badgr-attempts"] == "2"
    assert reply.headers["x-badgr-provider"] == "b"
    recorder.wait_for_end(reply.request_id)
    assert recorder.names() == STARTED_TO_FINISHED


# -- retries on a single target ----------------------------------------------------------------


def check_retried_on_same_target(reply: Any, recorder: Any, sims: Any, kind: str) -> Any:
    assert reply.error is None, reply.error
    assert reply.content == "Hello from a."
    assert reply.headers["x-badgr-attempts"] == "2"
    assert reply.headers["x-badgr-provider"] == "a"
    rid = reply.request_id
    recorder.wait_for_end(rid)
    assert recorder.names(rid) == [
        "request_started", "attempt_failed", "retry_scheduled", "request_finished",
    ]
    (retry,) = recorder.events("retry_scheduled", rid)
    assert (retry.provider, retry.model, retry.attempt, retry.error_kind) == ("a", "m-a", 2, kind)
    assert sims.models_seen("a") == ["m-a", "m-a"]
    return retry


@STREAM
def test_single_target_503_is_retried_after_a_short_backoff(
    gateway, sims, recorder, stream: bool
) -> None:
    sims.a.fail_next("503")
    reply = gateway.chat("solo", stream=stream)
    retry = check_retried_on_same_target(reply, recorder, sims, "server_error")
    assert 0 <= retry.delay <= 0.02  # full jitter within retry.backoff_max


@pytest.mark.anyio
@STREAM
async def test_single_target_503_is_retried_async(gateway, sims, recorder, stream: bool) -> None:
    sims.a.fail_next("503")
    reply = await gateway.achat("solo", stream=stream)
    check_retried_on_same_target(reply, recorder, sims, "server_error")


@STREAM
def test_single_target_429_waits_for_a_short_retry_after(
    gateway, sims, recorder, stream: bool
) -> None:
    sims.a.fail_next("429:retry-after=0.3")  # retry.max_retry_after is 1
    reply = gateway.chat("solo", stream=stream)
    retry = check_retried_on_same_target(reply, recorder, sims, "rate_limited")
    assert 0.2 < retry.delay <= 0.3
    first, second = sims.a.requests
    assert second.received_at - first.received_at >= 0.28


# -- cooldowns: the next request skips the target without contacting it -----------------------

# (fault, cooled-down key: one target or the whole provider, Retry-After bounds in seconds)
COOLDOWN_ROWS = [
    ("429", "target", None),
    ("429:retry-after=2", "target", (2.0, 2.0)),
    ("429:retry-after-ms=1500", "target", (1.5, 1.5)),
    ("429:retry-after-date=3", "target", (1.0, 4.0)),  # an HTTP date: whole seconds
    ("429:quota", "provider", None),
    ("402", "provider", None),
    ("401", "provider", None),
    ("403", "provider", None),
    ("404", "target", None),
]


@STREAM
@pytest.mark.parametrize(("fault", "scope", "hint"), COOLDOWN_ROWS)
def test_cooldown_skips_the_target_on_the_next_request(
    make_gateway, sims, recorder, fault: str, scope: str, hint: Any, stream: bool
) -> None:
    gateway = make_gateway()  # cooldowns live in the engine: start from a fresh one
    sims.a.fail_next(fault)
    first = gateway.chat("ab", stream=stream)
    assert first.error is None
    assert (first.attempts, first.headers["x-badgr-provider"]) == (2, "b")
    recorder.wait_for_end(first.request_id)
    (failed,) = recorder.events("attempt_failed", first.request_id)
    if hint is None:
        assert failed.retry_after is None
    else:
        assert hint[0] <= failed.retry_after <= hint[1]

    # the same alias again: a/m-a is skipped without being contacted
    second = gateway.chat("ab", stream=stream)
    assert second.error is None
    assert (second.attempts, second.headers["x-badgr-provider"]) == (1, "b")
    assert second.content == "Hello from b."
    assert sims.models_seen("a") == ["m-a"]
    recorder.wait_for_end(second.request_id)
    assert recorder.names(second.request_id) == ["request_started", "request_finished"]

    # another alias whose first target is another model on provider a
    third = gateway.chat("a2b", stream=stream)
    assert third.error is None
    if scope == "provider":  # 402, quota, 401/403: the whole provider is out
        assert (third.attempts, third.headers["x-badgr-provider"]) == (1, "b")
        assert sims.models_seen("a") == ["m-a"]
    else:  # 429, 404: only that one model is out
        assert (third.attempts, third.headers["x-badgr-provider"]) == (1, "a")
        assert sims.models_seen("a") == ["m-a", "m-a2"]


@pytest.mark.anyio
async def test_cooldown_after_402_async(make_gateway, sims, recorder) -> None:
    gateway = make_gateway()
    sims.a.fail_next("402")
    first = await gateway.achat("ab", stream=True)
    assert (first.attempts, first.headers["x-badgr-provider"]) == (2, "b")
    second = await gateway.achat("a2b")
    assert (second.attempts, second.headers["x-badgr-provider"]) == (1, "b")
    assert sims.models_seen("a") == ["m-a"]


@STREAM
def test_every_target_cooling_down_is_503_with_retry_after(
    make_gateway, sims, recorder, stream: bool
) -> None:
    gateway = make_gateway()
    sims.a.set_fault("402")  # provider a out for cooldowns.quota (300 s)
    sims.b.set_fault("429")  # b/m-b out for cooldowns.rate_limited (10 s)
    first = gateway.chat("ab", stream=stream)
    assert first.status == 502
    second = gateway.chat("ab", stream=stream)
    assert second.status == 503
    assert isinstance(second.error, openai.InternalServerError)
    assert second.error.code == "all_targets_unavailable"
    assert second.attempts == 0
    # the earliest moment a target accepts requests again: b, in at most 10 s
    assert 1 <= int(second.headers["retry-after"]) <= 10
    assert len(sims.a.requests) == len(sims.b.requests) == 1


# -- 429 on every target -----------------------------------------------------------------------


def check_all_rate_limited(reply: Any, recorder: Any, sims: Any) -> None:
    assert reply.status == 429
    assert isinstance(reply.error, openai.RateLimitError)
    assert reply.error.code == "rate_limit_exceeded"
    assert reply.headers["x-badgr-attempts"] == "2"
    # Retry-After 60 is beyond retry.max_retry_after: badgr does not wait, the client may
    assert 59 <= int(reply.headers["retry-after"]) <= 60
    assert 59000 <= int(reply.headers["retry-after-ms"]) <= 60000
    assert "x-should-retry" not in reply.headers
    assert len(sims.a.requests) == len(sims.b.requests) == 1
    failed = recorder.wait_for("request_failed", reply.request_id)
    assert (failed.status, failed.error_kind) == (429, "rate_limited")


@STREAM
def test_every_target_rate_limited_gives_429_with_retry_after(
    gateway, sims, recorder, stream: bool
) -> None:
    sims.a.set_fault("429:retry-after=60")
    sims.b.set_fault("429:retry-after=60")
    reply = gateway.chat("ab", stream=stream)
    check_all_rate_limited(reply, recorder, sims)


@pytest.mark.anyio
@STREAM
async def test_every_target_rate_limited_async(gateway, sims, recorder, stream: bool) -> None:
    sims.a.set_fault("429:retry-after=60")
    sims.b.set_fault("429:retry-after=60")
    reply = await gateway.achat("ab", stream=stream)
    check_all_rate_limited(reply, recorder, sims)


# -- 400: context length, and the client's own errors ------------------------------------------


@STREAM
def test_context_length_fails_over_only_to_a_larger_context(
    gateway, sims, recorder, stream: bool
) -> None:
    # ctx = [a/m-small (8192), c/m-tiny (4096), c/m-unknown (no window), b/m-big (200000)]
    sims.a.fail_next("400:context")
    reply = gateway.chat("ctx", stream=stream)
    assert reply.error is None
    assert reply.content == "Hello from b."
    assert reply.headers["x-badgr-attempts"] == "2"
    assert (reply.headers["x-badgr-provider"], reply.headers["x-badgr-model"]) == ("b", "m-big")
    assert sims.c.requests == []
    recorder.wait_for_end(reply.request_id)
    (moved,) = recorder.events("failover", reply.request_id)
    assert (moved.to_provider, moved.to_model) == ("b", "m-big")
    assert moved.error_kind == "context_length_exceeded"


@pytest.mark.anyio
@STREAM
async def test_context_length_without_a_larger_target_is_400(
    gateway, sims, recorder, stream: bool
) -> None:
    sims.a.fail_next("400:context")
    reply = await gateway.achat("ctx-none", stream=stream)  # b/m-b declares no context_window
    assert reply.status == 400
    assert isinstance(reply.error, openai.BadRequestError)
    assert reply.error.code == "context_length_exceeded"
    assert "maximum context length" in reply.error.message
    assert reply.headers["x-should-retry"] == "false"
    assert reply.headers["x-badgr-attempts"] == "1"
    assert sims.b.requests == []


@STREAM
def test_context_length_without_any_context_window_is_400(gateway, sims, stream: bool) -> None:
    sims.a.fail_next("400:context")
    reply = gateway.chat("ab", stream=stream)
    assert reply.status == 400
    assert reply.error.code == "context_length_exceeded"
    assert sims.b.requests == []


CLIENT_ERRORS = [
    ("400", openai.BadRequestError, "Invalid value for 'messages' (simulated bad request)."),
    ("422", openai.UnprocessableEntityError, "Unprocessable entity (simulated)."),
]


def check_client_error(reply: Any, recorder: Any, sims: Any, fault: str, error: Any,
                       message: str) -> None:
    assert reply.status == int(fault)
    assert type(reply.error) is error
    error_body = reply.error.response.json()["error"]
    assert error_body["message"] == message  # the upstream's own error, passed back
    assert error_body["type"] == "invalid_request_error"
    assert error_body["param"] == ("messages" if fault == "400" else None)
    assert reply.headers["x-should-retry"] == "false"
    assert reply.headers["x-badgr-attempts"] == "1"
    assert sims.b.requests == []
    recorder.wait_for_end(reply.request_id)
    assert recorder.names(reply.request_id) == [
        "request_started", "attempt_failed", "request_failed",
    ]
    (failed,) = recorder.events("request_failed", reply.request_id)
    assert (failed.status, failed.error_kind) == (int(fault), "invalid_request")


@STREAM
@pytest.mark.parametrize(("fault", "error", "message"), CLIENT_ERRORS)
def test_client_error_is_returned_without_failover(
    gateway, sims, recorder, fault: str, error: Any, message: str, stream: bool
) -> None:
    sims.a.fail_next(fault)
    reply = gateway.chat("ab", stream=stream)
    check_client_error(reply, recorder, sims, fault, error, message)


@pytest.mark.anyio
@STREAM
@pytest.mark.parametrize(("fault", "error", "message"), CLIENT_ERRORS)
async def test_client_error_is_returned_without_failover_async(
    gateway, sims, recorder, fault: str, error: Any, message: str, stream: bool
) -> None:
    sims.a.fail_next(fault)
    reply = await gateway.achat("ab", stream=stream)
    check_client_error(reply, recorder, sims, fault, error, message)


def test_client_error_keeps_the_upstreams_error_code(gateway, sims) -> None:
    sims.a.fail_next("422")  # the simulator's 422 has "code": null
    reply = gateway.chat("ab")
    assert reply.status == 422
    assert reply.error.response.json()["error"]["code"] is None


# -- when everything fails: retries never multiply ---------------------------------------------


def check_all_failed(reply: Any, recorder: Any) -> None:
    assert reply.status == 502
    assert isinstance(reply.error, openai.InternalServerError)
    assert reply.error.code == "all_targets_failed"
    assert reply.headers["x-should-retry"] == "false"
    assert "a/m-a: server_error (503)" in reply.error.message
    assert "b/m-b: bad_response" in reply.error.message
    # the SDK was allowed two retries of its own and made none: one request reached badgr
    assert recorder.count("request_started") == 1
    failed = recorder.wait_for("request_failed", reply.request_id)
    assert failed.status == 502


@STREAM
def test_all_targets_failing_is_one_502_even_with_sdk_retries(
    gateway, sims, recorder, stream: bool
) -> None:
    sims.a.set_fault("503")
    sims.b.set_fault("error-body")
    with gateway.client(max_retries=2) as client:
        reply = gateway.chat("ab", stream=stream, client=client)
    check_all_failed(reply, recorder)
    # badgr itself retried the 5xx target once it had tried every target
    assert sims.models_seen("a") == ["m-a", "m-a"]
    assert sims.models_seen("b") == ["m-b"]
    assert reply.headers["x-badgr-attempts"] == "3"


@pytest.mark.anyio
@STREAM
async def test_all_targets_failing_is_one_502_async(
    gateway, sims, recorder, stream: bool
) -> None:
    sims.a.set_fault("503")
    sims.b.set_fault("error-body")
    async with gateway.async_client(max_retries=2) as client:
        reply = await gateway.achat("ab", stream=stream, client=client)
    check_all_failed(reply, recorder)


def test_every_target_404_is_404_model_not_found(gateway, sims, recorder) -> None:
    sims.a.set_fault("404")
    sims.b.set_fault("404")
    with gateway.client(max_retries=2) as client:
        reply = gateway.chat("ab", client=client)
    assert reply.status == 404
    assert isinstance(reply.error, openai.NotFoundError)
    assert reply.error.code == "model_not_found"
    assert reply.headers["x-should-retry"] == "false"
    assert recorder.count("request_started") == 1


def test_every_target_timing_out_is_504(gateway, sims, recorder) -> None:
    sims.a.set_fault("hang")
    sims.b.set_fault("hang-after-headers")
    with gateway.client(max_retries=2) as client:
        reply = gateway.chat("ab", client=client)
    assert reply.status == 504
    assert reply.error.code == "upstream_timeout"
    assert reply.headers["x-should-retry"] == "false"
    assert reply.headers["x-badgr-attempts"] == "2"
    assert recorder.count("request_started") == 1


# -- upstream keys never reach the client ------------------------------------------------------

LEAKY_KEY = "sk-leaky-upstream-9f8e7d6c5b4a3928"


async def echoing_upstream(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """An upstream that, like some real ones, repeats the key it was given in its errors.

    It answers with the status named by the requested model (``m-401``, ``m-400``).
    """
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
    status = int(json.loads(b"".join(chunks))["model"].removeprefix("m-"))
    given = dict(scope["headers"]).get(b"authorization", b"").decode()
    body = json.dumps({"error": {"message": f"Key rejected: {given}",
                                 "type": "invalid_request_error", "param": None,
                                 "code": "invalid_api_key" if status == 401 else None}}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def leaky_upstream():
    with SimulatedServer(echoing_upstream) as server:
        yield server


@STREAM
@pytest.mark.parametrize(
    ("model", "status"), [("leaky-b", 200), ("leaky-401", 502), ("leaky-400", 400)]
)
def test_upstream_key_never_appears_in_a_response(
    make_gateway, config_for, upstream_keys, leaky_upstream, recorder, model: str, status: int,
    stream: bool,
) -> None:
    config = config_for()
    config["providers"]["leaky"] = {
        "kind": "openai", "base_url": leaky_upstream.base_url, "api_key": LEAKY_KEY,
    }
    config["models"].update({
        "leaky-b": ["leaky/m-401", "b/m-b"],
        "leaky-401": ["leaky/m-401"],
        "leaky-400": ["leaky/m-400"],
    })
    gateway = make_gateway(config)
    body = {"model": model, "stream": stream,
            "messages": [{"role": "user", "content": "Say hello please"}]}
    with gateway.http() as http:
        response = http.post("/v1/chat/completions", json=body,
                             headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert response.status_code == status
    seen = response.text + repr(response.headers.raw)
    recorder.wait_for_end()
    seen += repr(recorder.records())
    for key in (LEAKY_KEY, *upstream_keys.values()):
        assert key not in seen
        assert key[-12:] not in seen
    if status == 400:  # the upstream's message comes back, with the key scrubbed
        assert response.json()["error"]["message"].startswith("Key rejected: ")
