"""Unit tests of the inbound limits: counters with an injected clock, client ids, config,
the Redis counter on a real Redis, and the fallback when Redis is away."""

from __future__ import annotations

import hashlib
import threading
from typing import Any

import pytest
from limits_support import client_id_of

from badgr_middleware.config import PROBLEM_CODES, ClientLimits, ConfigError, load_config
from badgr_middleware.errors import ApiError
from badgr_middleware.limits import (
    Limiter,
    MemoryCounter,
    RedisCounter,
    client_id,
)
from badgr_middleware.messages import HttpRequest, HttpResponse
from badgr_middleware.simulator import closed_port

PROVIDERS = {"p": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "sk-x"}}


class Clock:
    def __init__(self, now: float = 1_000_040.0) -> None:  # 20 s into a minute
        self.now = now

    def __call__(self) -> float:
        return self.now


def config(limits: Any, **extra: Any) -> Any:
    return load_config({"providers": PROVIDERS, "client_keys": ["k"], "limits": limits,
                        **extra})


# -- client ids ---------------------------------------------------------------------------------


def test_client_ids_hash_the_key_and_never_hold_it() -> None:
    request = HttpRequest("POST", "/chat/completions", {"authorization": "Bearer sk-secret"})
    ident = client_id("client_key", request)
    assert ident == "key:" + hashlib.sha256(b"sk-secret").hexdigest()[:8]
    assert "sk-secret" not in ident
    assert client_id("anonymous", HttpRequest("POST", "/x", {})) == "anonymous"
    user = client_id("alice", HttpRequest("POST", "/x", {}))
    assert user == "principal:" + hashlib.sha256(b"alice").hexdigest()[:8]
    # a principal set by a framework adapter is a principal, whatever its text
    framework = HttpRequest("POST", "/x", {}, principal="client_key")
    assert client_id("client_key", framework).startswith("principal:")


# -- config -------------------------------------------------------------------------------------


def test_limits_default_off() -> None:
    cfg = load_config({"providers": PROVIDERS, "client_keys": ["k"]})
    assert not cfg.limits.enabled
    assert cfg.limits.requests_per_minute is None


def test_limits_config_and_overrides() -> None:
    ident = client_id_of("vip")
    cfg = config({"requests_per_minute": 10, "concurrent_streams": 2,
                  "clients": {ident: {"requests_per_minute": 100}}})
    assert cfg.limits.enabled
    assert cfg.limits.for_client(ident) == ClientLimits(requests_per_minute=100)
    assert cfg.limits.for_client("anonymous").requests_per_minute == 10


def test_limits_problems_are_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        config({"requests_per_minute": 0, "tokens_per_minute": "lots", "streams": 1,
                "clients": {"sk-plain-key": {}, "anonymous": {"concurrent_streams": True}}})
    problems = {(p.path, p.code) for p in info.value.problems}
    assert problems == {
        ("limits.requests_per_minute", "bad_limits"),
        ("limits.tokens_per_minute", "bad_limits"),
        ("limits.streams", "unknown_key"),
        ("limits.clients", "bad_limits"),
        ("limits.clients.anonymous.concurrent_streams", "bad_limits"),
    }
    assert "sk-plain-key" not in str(info.value)
    assert PROBLEM_CODES.index("bad_limits") == 25  # append-only: its place never moves


# -- the memory counter -------------------------------------------------------------------------


def test_requests_per_minute_window() -> None:
    counter, clock = MemoryCounter(), Clock()
    limits = ClientLimits(requests_per_minute=2)
    assert counter.check("c", limits, None, clock()) is None
    assert counter.check("c", limits, None, clock()) is None
    refusal = counter.check("c", limits, None, clock())
    assert refusal is not None and refusal.kind == "requests"
    assert refusal.retry_after == pytest.approx(40.0)
    assert counter.check("other", limits, None, clock()) is None  # per client
    clock.now += 40.0  # the next minute
    assert counter.check("c", limits, None, clock()) is None


def test_tokens_per_minute() -> None:
    counter, clock = MemoryCounter(), Clock()
    limits = ClientLimits(tokens_per_minute=100)
    assert counter.check("c", limits, None, clock()) is None
    counter.add_tokens("c", 60, clock())
    assert counter.check("c", limits, None, clock()) is None
    counter.add_tokens("c", 60, clock())  # 120 >= 100: the next request is refused
    refusal = counter.check("c", limits, None, clock())
    assert refusal is not None and refusal.kind == "tokens"
    clock.now += 41.0
    assert counter.check("c", limits, None, clock()) is None


def test_concurrent_streams_and_release() -> None:
    counter, clock = MemoryCounter(), Clock()
    limits = ClientLimits(concurrent_streams=2)
    assert counter.check("c", limits, "s1", clock()) is None
    assert counter.check("c", limits, "s2", clock()) is None
    refusal = counter.check("c", limits, "s3", clock())
    assert refusal is not None and refusal.kind == "streams" and refusal.retry_after is None
    assert counter.check("c", limits, None, clock()) is None  # non-streams are not counted
    counter.release("c", "s1")
    counter.release("c", "s1")  # twice is harmless
    assert counter.check("c", limits, "s3", clock()) is None


def test_a_refused_stream_does_not_count_as_a_request() -> None:
    counter, clock = MemoryCounter(), Clock()
    limits = ClientLimits(requests_per_minute=2, concurrent_streams=1)
    assert counter.check("c", limits, "s1", clock()) is None
    assert counter.check("c", limits, "s2", clock()).kind == "streams"  # type: ignore[union-attr]
    assert counter.check("c", limits, None, clock()) is None
    assert counter.check("c", limits, None, clock()).kind == "requests"  # type: ignore[union-attr]


def test_memory_counter_is_thread_safe() -> None:
    counter, clock = MemoryCounter(), Clock()
    limits = ClientLimits(requests_per_minute=500)
    admitted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(100):
            ok = counter.check("c", limits, None, clock()) is None
            with lock:
                admitted.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert admitted.count(True) == 500


# -- the limiter around execute -----------------------------------------------------------------


class Routed:
    def __init__(self, stream: bool, request_id: str = "req_1") -> None:
        self.stream = stream
        self.request_id = request_id


REQUEST = HttpRequest("POST", "/chat/completions", {"authorization": "Bearer k"})


def test_limiter_releases_a_slot_on_every_path() -> None:
    limiter = Limiter(config({"concurrent_streams": 1}), clock=Clock())

    def streaming(_: Any) -> HttpResponse:
        return HttpResponse(200, [], b"", stream=iter([b"a", b"b"]))

    def admit() -> HttpResponse:
        return limiter.run("client_key", REQUEST, Routed(True), streaming)  # type: ignore[arg-type]

    # normal end
    response = admit()
    with pytest.raises(ApiError) as info:
        admit()
    assert info.value.status == 429 and info.value.code == "too_many_streams"
    assert list(response.stream) == [b"a", b"b"]  # type: ignore[arg-type]
    # closed before its first chunk (a client that left at once)
    response = admit()
    response.stream.close()  # type: ignore[union-attr]
    # the upstream broke mid-stream

    def broken() -> Any:
        yield b"a"
        raise OSError("upstream went away")

    response = limiter.run("client_key", REQUEST, Routed(True),  # type: ignore[arg-type]
                           lambda _: HttpResponse(200, [], b"", stream=broken()))
    with pytest.raises(OSError):
        list(response.stream)  # type: ignore[arg-type]
    # execute raised
    with pytest.raises(RuntimeError):
        limiter.run("client_key", REQUEST, Routed(True),  # type: ignore[arg-type]
                    lambda _: (_ for _ in ()).throw(RuntimeError("boom")))
    # an error response (no stream) releases at once
    limiter.run("client_key", REQUEST, Routed(True),  # type: ignore[arg-type]
                lambda _: HttpResponse(502, [], b"{}"))
    response = admit()
    assert response.stream is not None


@pytest.mark.anyio
async def test_async_limiter_releases_on_close_and_cancel() -> None:
    limiter = Limiter(config({"concurrent_streams": 1}), clock=Clock())

    async def chunks() -> Any:
        yield b"a"
        yield b"b"

    async def streaming(_: Any) -> HttpResponse:
        return HttpResponse(200, [], b"", stream=chunks())

    async def admit() -> HttpResponse:
        return await limiter.arun("client_key", REQUEST, Routed(True),  # type: ignore[arg-type]
                                  streaming)

    response = await admit()
    with pytest.raises(ApiError):
        await admit()
    await response.stream.aclose()  # type: ignore[union-attr]
    response = await admit()
    assert [c async for c in response.stream] == [b"a", b"b"]  # type: ignore[union-attr]
    response = await admit()
    assert response.stream is not None


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def test_limiter_rejects_with_openai_shaped_429() -> None:
    limiter = Limiter(config({"requests_per_minute": 1}), clock=Clock())
    ok = HttpResponse(200, [], b"{}")
    limiter.run("client_key", REQUEST, Routed(False), lambda _: ok)  # type: ignore[arg-type]
    with pytest.raises(ApiError) as info:
        limiter.run("client_key", REQUEST, Routed(False), lambda _: ok)  # type: ignore[arg-type]
    error = info.value
    assert error.status == 429 and error.type == "rate_limit_error"
    assert error.code == "client_rate_limited"
    headers = dict(error.headers)
    assert headers["retry-after"] == "40" and headers["retry-after-ms"] == "40000"
    assert headers["x-badgr-client"] == client_id_of("k")


# -- Redis --------------------------------------------------------------------------------------


def test_redis_counter_shares_counts(redis_url: str, key_prefix: str) -> None:
    clock = Clock()
    one = RedisCounter(redis_url, key_prefix=key_prefix, timeout=1)
    two = RedisCounter(redis_url, key_prefix=key_prefix, timeout=1)
    try:
        limits = ClientLimits(requests_per_minute=3, concurrent_streams=1, tokens_per_minute=50)
        assert one.check("c", limits, "s1", clock()) == (None, True)
        refusal, shared = two.check("c", limits, "s2", clock())
        assert shared and refusal is not None and refusal.kind == "streams"
        two.release("c", "s1", True)
        assert two.check("c", limits, "s2", clock()) == (None, True)
        assert one.check("c", limits, None, clock()) == (None, True)
        refusal, _ = two.check("c", limits, None, clock())
        assert refusal is not None and refusal.kind == "requests"
        assert refusal.retry_after == pytest.approx(40.0)
        one.add_tokens("d", 50, clock())
        refusal, _ = two.check("d", limits, None, clock())
        assert refusal is not None and refusal.kind == "tokens"
        # keys expire on their own
        import redis

        client = redis.Redis.from_url(redis_url)
        names = list(client.scan_iter(match=key_prefix + "*"))
        assert names and all(client.pttl(name) > 0 for name in names)
        client.close()
    finally:
        one.close()
        two.close()


@pytest.mark.anyio
async def test_redis_counter_async(redis_url: str, key_prefix: str) -> None:
    clock = Clock()
    counter = RedisCounter(redis_url, key_prefix=key_prefix, timeout=1)
    try:
        limits = ClientLimits(requests_per_minute=2, concurrent_streams=1, tokens_per_minute=5)
        assert await counter.acheck("c", limits, "s", clock()) == (None, True)
        refusal, _ = await counter.acheck("c", limits, "t", clock())
        assert refusal is not None and refusal.kind == "streams"
        await counter.arelease("c", "s", True)
        assert await counter.acheck("c", limits, "t", clock()) == (None, True)
        refusal, _ = await counter.acheck("c", limits, None, clock())
        assert refusal is not None and refusal.kind == "requests"
        await counter.aadd_tokens("e", 5, clock())
        refusal, _ = await counter.acheck("e", limits, None, clock())
        assert refusal is not None and refusal.kind == "tokens"
    finally:
        await counter.aclose()
        counter.close()


def test_redis_away_counts_locally(caplog: pytest.LogCaptureFixture) -> None:
    counter = RedisCounter(f"redis://127.0.0.1:{closed_port()}/0", timeout=0.2,
                           retry_interval=60)
    clock = Clock()
    limits = ClientLimits(requests_per_minute=2)
    try:
        assert counter.check("c", limits, None, clock()) == (None, False)
        assert counter.degraded
        assert counter.check("c", limits, None, clock()) == (None, False)
        refusal, shared = counter.check("c", limits, None, clock())
        assert not shared and refusal is not None and refusal.kind == "requests"
        counter.add_tokens("c", 10, clock())  # never raises
        counter.release("c", "slot", True)
    finally:
        counter.close()
    assert "Redis unreachable" in caplog.text
