"""The Redis store against real servers: sharing, expiry, round trips, Redis going away.

Behaviour shared with the in-memory store is in test_store_conformance.py.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
import redis

from badgr_middleware import signals
from badgr_middleware.health.redis import RedisHealthStore
from badgr_middleware.signals import CircuitChanged, StoreChanged

T, P = "openrouter/openai/gpt-4o", "openrouter"
PASSWORD = "s3cret-pw"


class FakeClock:
    """The store's monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def events() -> Iterator[list[tuple[str, StoreChanged]]]:
    """Every store_degraded / store_recovered event while the test runs, in order."""
    seen: list[tuple[str, StoreChanged]] = []

    def degraded(sender: Any, event: StoreChanged) -> None:
        seen.append(("degraded", event))

    def recovered(sender: Any, event: StoreChanged) -> None:
        seen.append(("recovered", event))

    with signals.store_degraded.connected_to(degraded), \
            signals.store_recovered.connected_to(recovered):
        yield seen


@pytest.fixture
def stores() -> Iterator[Callable[..., RedisHealthStore]]:
    """``stores(url, policy=..., **kw)``: a RedisHealthStore closed after the test."""
    made: list[RedisHealthStore] = []

    def new(url: str, **kwargs: Any) -> RedisHealthStore:
        store = RedisHealthStore(url, **kwargs)
        made.append(store)
        return store

    yield new
    for store in made:
        store.close()


def _timed(call: Callable[[], Any]) -> tuple[Any, float]:
    started = time.perf_counter()
    result = call()
    return result, time.perf_counter() - started


# -- sharing --------------------------------------------------------------------------------------


def test_two_stores_share_breakers_cooldowns_and_latency(
    redis_url: str, key_prefix: str, make_policy: Callable[..., Any], stores: Any
) -> None:
    policy = make_policy(consecutive_failures=2, open_for=5)
    a = stores(redis_url, policy=policy, key_prefix=key_prefix)
    b = stores(redis_url, policy=policy, key_prefix=key_prefix)
    now = time.time()

    assert a.record([T, P], False, now, ttfb=0.3, total=1.0) == []
    assert b.record([T, P], False, now + 1, ttfb=0.5, total=2.0) == [
        CircuitChanged(T, "open", "failures", now + 1 + 5),
        CircuitChanged(P, "open", "failures", now + 1 + 5),
    ]
    seen = a.snapshot([T, P], now + 2)
    assert seen[T].breaker == seen[P].breaker == "open"
    assert seen[T].open_until == now + 1 + 5
    assert seen[T].latency is not None and seen[T].latency.samples == 2
    assert seen[P].latency is None

    b.cooldown(P, now + 100, "rate_limit")
    assert a.snapshot([P], now + 2)[P].cooldown_kind == "rate_limit"

    # one probe between them
    assert b.admit(T, now + 6) == (True, [CircuitChanged(T, "half_open", "probe", None)])
    assert a.admit(T, now + 6) == (False, [])
    assert a.record([T], True, now + 7) == [CircuitChanged(T, "closed", "probe", None)]
    assert b.snapshot([T], now + 7)[T].breaker == "closed"
    assert not a.degraded and not b.degraded


@pytest.mark.anyio
async def test_sync_and_async_stores_share_state(
    redis_url: str, key_prefix: str, make_policy: Callable[..., Any], stores: Any
) -> None:
    policy = make_policy(consecutive_failures=1, open_for=5)
    sync = stores(redis_url, policy=policy, key_prefix=key_prefix)
    other = stores(redis_url, policy=policy, key_prefix=key_prefix)
    now = time.time()
    try:
        assert await other.arecord([T], False, now, ttfb=0.25) == [
            CircuitChanged(T, "open", "failures", now + 5)
        ]
        health = sync.snapshot([T], now)[T]
        assert health.breaker == "open" and health.latency is not None
        sync.cooldown(P, now + 30, "payment")
        assert (await other.asnapshot([P], now))[P].cooldown_kind == "payment"
        assert await other.aadmit(T, now + 5) == (
            True, [CircuitChanged(T, "half_open", "probe", None)]
        )
        await other.acooldown(T, now + 60, "auth")
        assert sync.snapshot([T], now + 5)[T].cooldown_kind == "auth"
    finally:
        await other.aclose()
    assert not sync.degraded and not other.degraded


def test_concurrent_admits_take_one_probe_slot(
    redis_url: str, key_prefix: str, make_policy: Callable[..., Any], stores: Any
) -> None:
    policy = make_policy(consecutive_failures=1, open_for=5, half_open_probes=1)
    many = [stores(redis_url, policy=policy, key_prefix=key_prefix, timeout=2.0)
            for _ in range(4)]
    now = time.time()
    many[0].record([T], False, now)
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: many[i % 4].admit(T, now + 5), range(32)))
    assert sum(admitted for admitted, _ in results) == 1
    assert sum(len(changes) for _, changes in results) == 1  # one half_open transition
    assert not any(store.degraded for store in many)


def test_async_clients_are_per_event_loop(
    redis_url: str, key_prefix: str, make_policy: Callable[..., Any], stores: Any
) -> None:
    store = stores(redis_url, policy=make_policy(consecutive_failures=1), key_prefix=key_prefix)
    now = time.time()

    async def use(key: str) -> None:
        try:
            await store.arecord([key], True, now, ttfb=0.1)
            assert key in await store.asnapshot([key], now)
        finally:
            await store.aclose()

    asyncio.run(use("first"))
    asyncio.run(use("second"))  # a new loop, a new client: no cross-loop errors
    assert not store.degraded
    assert set(store.snapshot(["first", "second"], now)) == {"first", "second"}


def test_clear_deletes_only_its_prefix(
    redis_url: str, key_prefix: str, make_policy: Callable[..., Any], stores: Any
) -> None:
    policy = make_policy()
    mine = stores(redis_url, policy=policy, key_prefix=key_prefix + "x[1]*:")
    other = stores(redis_url, policy=policy, key_prefix=key_prefix + "x1:")
    now = time.time()
    for store in (mine, other):
        store.record([T], False, now, ttfb=0.1)
        store.cooldown(P, now + 60, "auth")
    mine.clear()
    assert mine.snapshot([T, P], now) == {}
    assert set(other.snapshot([T, P], now)) == {T, P}


# -- expiry ---------------------------------------------------------------------------------------


def test_keys_carry_their_own_expiry(
    redis_url: str, key_prefix: str, make_policy: Callable[..., Any], stores: Any
) -> None:
    store = stores(redis_url, policy=make_policy(window=1.0, open_for=0.5), key_prefix=key_prefix)
    check = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        now = time.time()
        store.record([T], False, now, ttfb=0.2)
        assert 1500 < check.pttl(f"{key_prefix}br:{T}") <= 2000  # max(window, open_for) * 2
        assert 3590 < check.ttl(f"{key_prefix}lat:{T}") <= 3600
        store.cooldown(P, time.time() + 1.5, "rate_limit")
        assert 1000 < check.pttl(f"{key_prefix}cd:{P}") <= 1501  # PEXPIREAT rounds up
        store.cooldown(P, time.time() + 0.5, "auth")  # earlier: changes nothing
        assert check.pttl(f"{key_prefix}cd:{P}") > 1000
        assert check.hget(f"{key_prefix}cd:{P}", "kind") == "rate_limit"

        # short-lived ones really go away on their own
        fast = stores(redis_url, policy=make_policy(window=0.1, open_for=0.1),
                      key_prefix=key_prefix + "fast:")
        fast.record([T], False, time.time())
        fast.cooldown(T, time.time() + 0.2, "auth")
        names = [f"{key_prefix}fast:br:{T}", f"{key_prefix}fast:cd:{T}"]
        assert check.exists(*names) == 2
        deadline = time.monotonic() + 3.0
        while check.exists(*names) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert check.exists(*names) == 0
    finally:
        check.close()


# -- round trips ----------------------------------------------------------------------------------


class CommandLog:
    """Every command a server receives, through MONITOR, split at marker ECHOes.

    Commands that scripts run (``lua`` clients) and the markers themselves are left out, so
    what remains between two markers is the round trips the store made.
    """

    MARK = "badgr-mark"

    def __init__(self, server: Any) -> None:
        self.watcher = server.client()
        self.marker = server.client()
        self.monitor = self.watcher.monitor()
        self.monitor.__enter__()  # MONITOR is on once this returns
        self.labels: list[str] = []

    def mark(self, label: str) -> None:
        self.labels.append(label)
        self.marker.echo(f"{self.MARK} {label}")

    def collect(self) -> dict[str, list[str]]:
        self.marker.echo(f"{self.MARK} end")
        out: dict[str, list[str]] = {}
        current: str | None = None
        for _ in range(10_000):  # bounded; each read also has the client's socket timeout
            command = self.monitor.next_command()
            text = command["command"]
            if text.startswith(f"ECHO {self.MARK} "):
                current = text.split(" ", 2)[2]
                if current == "end":
                    return out
                out[current] = []
            elif command["client_type"] != "lua" and current is not None:
                out[current].append(text.split(" ", 1)[0].upper())
        raise AssertionError("the end marker never came")

    def close(self) -> None:
        self.monitor.__exit__(None, None, None)
        self.watcher.close()
        self.marker.close()


def _warm_and_measure(store: RedisHealthStore, log: CommandLog, now: float) -> None:
    for round_ in ("warm", "measured"):
        log.mark(f"{round_} snapshot")
        store.snapshot([T, P], now)
        log.mark(f"{round_} record")
        store.record([T, P], False, now, ttfb=0.1, total=0.2)
        log.mark(f"{round_} cooldown")
        store.cooldown(P, now + 60, "rate_limit")
        log.mark(f"{round_} admit")
        store.admit(T, now)


def test_one_round_trip_per_call(
    private_redis: Any, make_policy: Callable[..., Any], stores: Any
) -> None:
    store = stores(private_redis.url, policy=make_policy())
    log = CommandLog(private_redis)
    try:
        _warm_and_measure(store, log, time.time())
        commands = log.collect()
    finally:
        log.close()
    measured = {label: seen for label, seen in commands.items() if label.startswith("measured")}
    assert measured == {label: ["EVALSHA"] for label in measured}
    assert len(measured) == 4
    # cold: at most a handshake, EVALSHA -> NOSCRIPT, SCRIPT LOAD, EVALSHA
    assert all(len(seen) <= 4 for seen in commands.values())


@pytest.mark.anyio
async def test_one_round_trip_per_async_call(
    private_redis: Any, make_policy: Callable[..., Any], stores: Any
) -> None:
    store = stores(private_redis.url, policy=make_policy())
    log = CommandLog(private_redis)
    now = time.time()
    try:
        for round_ in ("warm", "measured"):
            log.mark(f"{round_} snapshot")
            await store.asnapshot([T, P], now)
            log.mark(f"{round_} record")
            await store.arecord([T, P], False, now, ttfb=0.1, total=0.2)
            log.mark(f"{round_} cooldown")
            await store.acooldown(P, now + 60, "rate_limit")
            log.mark(f"{round_} admit")
            await store.aadmit(T, now)
        commands = log.collect()
    finally:
        log.close()
        await store.aclose()
    measured = {label: seen for label, seen in commands.items() if label.startswith("measured")}
    assert measured == {label: ["EVALSHA"] for label in measured}
    assert len(measured) == 4


# -- Redis going away -----------------------------------------------------------------------------


def _connections(server: Any, check: redis.Redis) -> tuple[int, int]:
    """(connections the server accepted, EVALSHA calls it ran) since it started."""
    stats = check.info("stats")["total_connections_received"]
    evalsha = check.info("commandstats").get("cmdstat_evalsha", {}).get("calls", 0)
    return stats, evalsha


def test_redis_down_serves_local_state_then_recovers(
    private_redis: Any, make_policy: Callable[..., Any], stores: Any, events: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="badgr_middleware.health")
    clock = FakeClock()
    store = stores(private_redis.url, policy=make_policy(consecutive_failures=2, open_for=5),
                   timeout=0.1, retry_interval=5.0, clock=clock)
    now = time.time()
    assert store.record([T], False, now) == []  # on Redis
    assert not store.degraded and events == []

    private_redis.kill()
    changes, elapsed = _timed(lambda: store.record([T], False, now + 1))
    assert elapsed < 0.5
    assert changes == []  # local state starts empty: its first failure
    assert store.degraded
    assert events == [("degraded", StoreChanged("redis", "degraded", "ConnectionError"))]

    # everything answers from local state, quickly, without another signal
    calls: list[Callable[[], Any]] = [
        lambda: store.record([T], False, now + 2),
        lambda: store.snapshot([T], now + 3),
        lambda: store.admit(T, now + 3),
        lambda: store.cooldown(P, now + 60, "rate_limit"),
        lambda: store.snapshot([P], now + 3),
    ]
    results = []
    for call in calls:
        result, elapsed = _timed(call)
        assert elapsed < 0.05  # Redis is not even tried
        results.append(result)
    assert results[0] == [CircuitChanged(T, "open", "failures", now + 2 + 5)]
    assert results[1][T].breaker == "open"
    assert results[2] == (False, [])
    assert results[4][P].cooldown_kind == "rate_limit"
    assert len(events) == 1

    # Redis is back, but retry_interval has not passed: it is not contacted
    private_redis.start()
    check = private_redis.client()
    try:
        before = _connections(private_redis, check)
        clock.now += 4.9
        assert store.snapshot([T], now + 3)[T].breaker == "open"  # still local
        assert _connections(private_redis, check) == before
        assert len(events) == 1

        clock.now += 0.1
        assert store.snapshot([T, P], now + 3) == {}  # Redis again: local writes not replayed
        assert events[1:] == [("recovered", StoreChanged("redis", "recovered", None))]
        assert not store.degraded
        connections, evalsha = _connections(private_redis, check)
        assert connections == before[0] + 1 and evalsha >= 1
        store.cooldown(P, now + 60, "auth")
        assert check.hget(f"badgr:cd:{P}", "kind") == "auth"
    finally:
        check.close()

    # a second outage starts from fresh local state, not the first outage's leftovers
    private_redis.kill()
    assert store.snapshot([T, P], now + 3) == {}
    assert [name for name, _ in events] == ["degraded", "recovered", "degraded"]
    warnings = [r for r in caplog.records
                if r.name == "badgr_middleware.health" and r.levelno == logging.WARNING]
    assert len(warnings) == 2  # one per degradation
    assert all("ConnectionError" in w.getMessage() for w in warnings)


def test_a_failed_retry_waits_another_interval(
    private_redis: Any, make_policy: Callable[..., Any], stores: Any, events: list[Any]
) -> None:
    clock = FakeClock()
    store = stores(private_redis.url, policy=make_policy(), timeout=0.1, retry_interval=5.0,
                   clock=clock)
    now = time.time()
    store.snapshot([T], now)
    private_redis.kill()
    store.snapshot([T], now)  # degraded; next try at +5
    clock.now += 5.0
    _, elapsed = _timed(lambda: store.snapshot([T], now))  # tries, fails; next try at +10
    assert elapsed < 0.5
    assert store.degraded and [name for name, _ in events] == ["degraded"]

    private_redis.start()
    check = private_redis.client()
    try:
        before = _connections(private_redis, check)
        clock.now += 4.9
        store.record([T], False, now)
        assert _connections(private_redis, check) == before
        clock.now += 0.1
        store.record([T], False, now)
        assert [name for name, _ in events] == ["degraded", "recovered"]
        assert check.exists(f"badgr:br:{T}") == 1
    finally:
        check.close()


def test_a_hung_redis_costs_at_most_the_timeout(
    private_redis: Any, make_policy: Callable[..., Any], stores: Any, events: list[Any]
) -> None:
    store = stores(private_redis.url, policy=make_policy(), timeout=0.1, clock=FakeClock())
    now = time.time()
    store.snapshot([T], now)  # a pooled connection exists
    private_redis.pause()
    try:
        result, elapsed = _timed(lambda: store.record([T], False, now))
    finally:
        private_redis.resume()
    assert result == []
    assert elapsed < 0.5
    assert events == [("degraded", StoreChanged("redis", "degraded", "TimeoutError"))]


def test_one_retry_at_a_time_while_degraded(
    private_redis: Any, make_policy: Callable[..., Any], stores: Any, events: list[Any]
) -> None:
    clock = FakeClock()
    store = stores(private_redis.url, policy=make_policy(), timeout=0.2, retry_interval=5.0,
                   clock=clock)
    now = time.time()
    store.snapshot([T], now)
    private_redis.pause()
    try:
        store.snapshot([T], now)  # degraded (a timeout)
        clock.now += 5.0  # a retry is due: one caller makes it, the others answer locally
        with ThreadPoolExecutor(8) as pool:
            timings = list(pool.map(lambda _: _timed(lambda: store.snapshot([T], now))[1],
                                    range(8)))
    finally:
        private_redis.resume()
    assert sum(elapsed >= 0.15 for elapsed in timings) == 1, timings
    assert [name for name, _ in events] == ["degraded"]


@pytest.mark.anyio
async def test_async_calls_degrade_and_recover(
    private_redis: Any, make_policy: Callable[..., Any], stores: Any, events: list[Any]
) -> None:
    clock = FakeClock()
    store = stores(private_redis.url, policy=make_policy(consecutive_failures=1, open_for=5),
                   timeout=0.1, retry_interval=5.0, clock=clock)
    now = time.time()
    try:
        assert await store.asnapshot([T], now) == {}
        private_redis.kill()
        started = time.perf_counter()
        assert await store.arecord([T], False, now) == [
            CircuitChanged(T, "open", "failures", now + 5)
        ]
        assert time.perf_counter() - started < 0.5
        assert (await store.asnapshot([T], now))[T].breaker == "open"
        assert await store.aadmit(T, now) == (False, [])
        await store.acooldown(P, now + 10, "auth")
        assert [name for name, _ in events] == ["degraded"]

        private_redis.start()
        clock.now += 5.0
        assert await store.asnapshot([T, P], now) == {}
        assert [name for name, _ in events] == ["degraded", "recovered"]
    finally:
        await store.aclose()


# -- secrets --------------------------------------------------------------------------------------


def test_the_url_and_its_password_never_show(
    private_redis: Any, make_policy: Callable[..., Any], stores: Any, events: list[Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    private_redis.set_password(PASSWORD)
    url = private_redis.url_with_password()
    clock = FakeClock()
    store = stores(url, policy=make_policy(), timeout=0.1, retry_interval=5.0, clock=clock,
                   key_prefix="pw:")
    now = time.time()
    store.record([T], False, now)
    check = private_redis.client()
    try:
        assert check.exists(f"pw:br:{T}") == 1  # authenticated with the URL's password
    finally:
        check.close()

    private_redis.kill()
    store.snapshot([T], now)
    private_redis.start()
    clock.now += 5.0
    store.snapshot([T], now)
    wrong = stores(url.replace(PASSWORD, "wrong-pw"), policy=make_policy(), timeout=0.5)
    assert wrong.snapshot([T], now) == {}  # refused: answered locally
    assert [(name, e.error) for name, e in events] == [
        ("degraded", "ConnectionError"), ("recovered", None), ("degraded", "AuthenticationError")
    ]

    texts = [repr(store), str(store), repr(vars(store)), repr(wrong), repr(vars(wrong)),
             caplog.text, *(r.getMessage() for r in caplog.records), *(repr(e) for e in events)]
    for text in texts:
        assert PASSWORD not in text
        assert "wrong-pw" not in text
        assert url not in text


def test_an_invalid_url_is_not_echoed(make_policy: Callable[..., Any]) -> None:
    with pytest.raises(ValueError) as info:
        RedisHealthStore("redis://:hunter2-pw@127.0.0.1:notaport/0", policy=make_policy())
    assert "hunter2" not in str(info.value) and "notaport" not in str(info.value)
