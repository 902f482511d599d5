"""Inbound limits end to end over real HTTP with the openai SDK: badgr (``BadgrApp`` under
uvicorn, ``BadgrWSGIApp`` under werkzeug) in front of simulated upstreams."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from typing import Any

import httpx
import openai
import pytest
from limits_support import CLIENT_KEYS, MESSAGES, Gateway, client_id_of

from badgr_middleware import Engine
from badgr_middleware.http import endpoint as endpoint_module
from badgr_middleware.messages import HttpRequest
from badgr_middleware.simulator import SimulatedProvider, closed_port

MakeGateway = Callable[..., Gateway]


def check_limited(outcome: Any, code: str, *, retry_after: bool = True) -> None:
    assert outcome.status == 429, outcome
    assert outcome.code == code
    body = outcome.error.body
    assert body["type"] == "rate_limit_error"
    assert (outcome.headers.get("retry-after") is not None) is retry_after
    if retry_after:
        assert 1 <= int(outcome.headers["retry-after"]) <= 60
        assert 1 <= int(outcome.headers["retry-after-ms"]) <= 60_000
    # the client's id is a hash: the key itself is never in the response
    assert outcome.headers["x-badgr-client"] == client_id_of(CLIENT_KEYS[0])
    assert CLIENT_KEYS[0] not in str(outcome.error.response.text)


def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


# -- requests per minute ------------------------------------------------------------------------


def test_requests_per_minute_asgi(make_gateway: MakeGateway,
                                  sims: dict[str, SimulatedProvider]) -> None:
    gateway = make_gateway({"requests_per_minute": 3})
    for _ in range(3):
        assert gateway.chat().status == 200
    check_limited(gateway.chat(), "client_rate_limited")
    assert len(sims["fast"].requests) == 3  # the refused request never reached an upstream
    # another client key has a budget of its own
    assert gateway.chat(key=CLIENT_KEYS[1]).status == 200
    assert len(sims["fast"].requests) == 4


def test_requests_per_minute_wsgi(make_wsgi_gateway: MakeGateway,
                                  sims: dict[str, SimulatedProvider]) -> None:
    gateway = make_wsgi_gateway({"requests_per_minute": 2})
    assert gateway.chat().status == 200
    assert gateway.stream(model="fast").content == "Hello from fast."
    check_limited(gateway.chat(), "client_rate_limited")
    check_limited(gateway.stream(model="fast"), "client_rate_limited")
    assert len(sims["fast"].requests) == 2


def test_per_client_override(make_gateway: MakeGateway,
                             sims: dict[str, SimulatedProvider]) -> None:
    vip = client_id_of(CLIENT_KEYS[1])
    gateway = make_gateway({"requests_per_minute": 1,
                            "clients": {vip: {"requests_per_minute": 3}}})
    assert gateway.chat().status == 200
    check_limited(gateway.chat(), "client_rate_limited")
    assert [gateway.chat(key=CLIENT_KEYS[1]).status for _ in range(4)] == [200, 200, 200, 429]


# -- tokens per minute --------------------------------------------------------------------------


def test_tokens_per_minute(make_gateway: MakeGateway,
                           sims: dict[str, SimulatedProvider]) -> None:
    # each simulated completion uses 3 prompt + 3 completion tokens
    gateway = make_gateway({"tokens_per_minute": 10})
    assert gateway.chat().status == 200  # 6 tokens
    # a stream's usage counts as well (when it reports usage)
    streamed = gateway.stream(model="fast", stream_options={"include_usage": True})
    assert streamed.status == 200  # 12 tokens: over budget from the next request on
    check_limited(gateway.chat(), "client_tokens_limited")
    assert len(sims["fast"].requests) == 2
    assert gateway.chat(key=CLIENT_KEYS[2]).status == 200


@pytest.mark.anyio
async def test_tokens_per_minute_async_client(make_gateway: MakeGateway,
                                              sims: dict[str, SimulatedProvider]) -> None:
    gateway = make_gateway({"tokens_per_minute": 6})
    async with gateway.async_client() as client:
        await client.chat.completions.create(model="fast", messages=MESSAGES)
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="fast", messages=MESSAGES)
    assert info.value.body["code"] == "client_tokens_limited"  # type: ignore[index]
    assert len(sims["fast"].requests) == 1


# -- concurrent streams -------------------------------------------------------------------------


def open_stream(client: openai.OpenAI) -> Any:
    stream = client.chat.completions.create(model="slow", messages=MESSAGES, stream=True)
    next(iter(stream))  # the stream has started
    return stream


def test_concurrent_streams(make_gateway: MakeGateway,
                            sims: dict[str, SimulatedProvider]) -> None:
    gateway = make_gateway({"concurrent_streams": 2})
    with gateway.client() as client:
        first, second = open_stream(client), open_stream(client)
        check_limited(gateway.stream(), "too_many_streams", retry_after=False)
        assert len(sims["slow"].requests) == 2
        # a non-streaming request is not a stream
        assert gateway.chat().status == 200
        for _ in first:  # the first stream ends normally: its slot is free again
            pass
        third = open_stream(client)
        # a client that disconnects gives its slot back
        second.close()
        third.close()
        assert wait_until(lambda: gateway.stream().status == 200)
    assert len(sims["slow"].disconnects) >= 1


@pytest.mark.anyio
async def test_concurrent_streams_async_client(make_gateway: MakeGateway) -> None:
    gateway = make_gateway({"concurrent_streams": 1})
    async with gateway.async_client() as client:
        stream = await client.chat.completions.create(model="slow", messages=MESSAGES,
                                                      stream=True)
        await stream.__anext__()
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="slow", messages=MESSAGES, stream=True)
        assert info.value.body["code"] == "too_many_streams"  # type: ignore[index]
        await stream.close()

        async def admitted() -> bool:
            try:
                again = await client.chat.completions.create(model="fast", messages=MESSAGES,
                                                             stream=True)
            except openai.RateLimitError:
                return False
            async for _ in again:
                pass
            return True

        deadline = time.monotonic() + 5
        while not await admitted():
            assert time.monotonic() < deadline, "the disconnected stream kept its slot"


def test_upstream_break_releases_the_slot(make_gateway: MakeGateway,
                                          sims: dict[str, SimulatedProvider]) -> None:
    gateway = make_gateway({"concurrent_streams": 1})
    sims["fast"].fail_next("cut=2")  # the upstream breaks the stream after 2 events
    with gateway.client() as client:
        stream = client.chat.completions.create(model="fast", messages=MESSAGES, stream=True)
        try:
            for _ in stream:
                pass
        except openai.APIError:
            pass
    assert gateway.stream(model="fast").status == 200


# -- shared through Redis -----------------------------------------------------------------------


def test_limits_are_shared_through_redis(make_gateway: MakeGateway, redis_url: str,
                                         key_prefix: str,
                                         sims: dict[str, SimulatedProvider]) -> None:
    state = {"backend": "redis", "url": redis_url, "key_prefix": key_prefix, "timeout": 1}
    limits = {"requests_per_minute": 3, "concurrent_streams": 1}
    one = make_gateway(limits, state=state)
    two = make_gateway(limits, state=state)
    with one.client() as client:
        stream = open_stream(client)  # request 1, holding the client's only stream slot
        check_limited(two.stream(), "too_many_streams", retry_after=False)
        stream.close()
    assert wait_until(lambda: two.stream(model="fast").status == 200)  # request 2 (or more)
    statuses = [one.chat().status, two.chat().status, one.chat().status]
    assert 429 in statuses and statuses.count(200) <= 1
    check_limited(two.chat(), "client_rate_limited")
    assert len(sims["fast"].requests) + len(sims["slow"].requests) == 3


def test_redis_away_still_limits_locally(make_gateway: MakeGateway,
                                         sims: dict[str, SimulatedProvider]) -> None:
    state = {"backend": "redis", "url": f"redis://127.0.0.1:{closed_port()}/0",
             "timeout": 0.2, "retry_interval": 60}
    gateway = make_gateway({"requests_per_minute": 2, "concurrent_streams": 1}, state=state)
    assert gateway.chat().status == 200
    assert gateway.stream(model="fast").status == 200
    check_limited(gateway.chat(), "client_rate_limited")
    assert len(sims["fast"].requests) == 2


def test_wsgi_redis_shared_with_asgi(make_gateway: MakeGateway, make_wsgi_gateway: MakeGateway,
                                     redis_url: str, key_prefix: str) -> None:
    state = {"backend": "redis", "url": redis_url, "key_prefix": key_prefix, "timeout": 1}
    asgi = make_gateway({"requests_per_minute": 2}, state=state)
    wsgi = make_wsgi_gateway({"requests_per_minute": 2}, state=state)
    assert asgi.chat().status == 200
    assert wsgi.chat().status == 200
    check_limited(wsgi.chat(), "client_rate_limited")
    check_limited(asgi.chat(), "client_rate_limited")


# -- what existed already: constant-time keys and the body limit --------------------------------


def test_key_comparison_visits_every_configured_key(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = Engine({"providers": {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1",
                                         "api_key": "sk-x"}},
                     "client_keys": list(CLIENT_KEYS)})
    compared: list[bytes] = []
    real = endpoint_module.hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        compared.append(b)
        return real(a, b)

    monkeypatch.setattr(endpoint_module.hmac, "compare_digest", counting)
    for given in (CLIENT_KEYS[0], CLIENT_KEYS[-1], "wrong-key"):
        compared.clear()
        request = HttpRequest("POST", "/chat/completions",
                              {"authorization": f"Bearer {given}"})
        with contextlib.suppress(Exception):
            engine.endpoint.authenticate(request)
        # every key is compared, whichever matched (or none), so timing tells nothing
        assert compared == [key.encode() for key in CLIENT_KEYS]
    engine.close()


@pytest.mark.parametrize("make", ["make_gateway", "make_wsgi_gateway"])
def test_body_size_limit_is_enforced(make: str, request: pytest.FixtureRequest,
                                     sims: dict[str, SimulatedProvider]) -> None:
    gateway = request.getfixturevalue(make)(max_body_bytes=2048)
    body = {"model": "fast", "messages": [{"role": "user", "content": "x" * 4096}]}
    response = httpx.post(f"{gateway.base_url}/chat/completions", json=body, timeout=10,
                          headers={"authorization": f"Bearer {CLIENT_KEYS[0]}"})
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
    assert sims["fast"].requests == []
