"""Shared health across real processes: two badgr servers, one Redis, simulated upstreams.

Each test starts two badgr server processes, ``A`` and ``B`` (``BadgrApp`` under uvicorn, see
``shared_health_app.py``), configured alike: alias ``ab`` = [``a/x``, ``b/y``], a breaker that
opens after 2 consecutive failures. The upstreams ``a`` and ``b`` run in this process, so the
test counts exactly which requests reached them. What one process learns about ``a`` (an open
breaker; a cooldown from a 429, 402, 401 or 404; latency) must keep the other from contacting
``a`` at all; with the memory backend it must not (the control test, which proves the checks
can fail). Redis going away (killed, or hung) must never fail a request, and sharing must
resume once Redis is back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from distributed_support import (
    Gateway,
    RedisServer,
    Served,
    Upstreams,
    gateway_config,
    redis_state,
)

RETRY_INTERVAL = 0.5  # seconds on local state before a process tries Redis again
RECOVERY_LIMIT = RETRY_INTERVAL + 5.0  # seconds a process may take to use Redis again
OUTAGE_REQUEST_LIMIT = 3.0  # seconds one request may take while Redis is down or hung

# (upstream fault, requests through A after which badgr skips a, what /status then says of a/x).
# A 503 counts once per request towards the breakers of a/x and a (then b serves), so two open
# them; one 429 with a Retry-After cools a/x down; 402 and 401 cool the provider a down, 404 the
# target a/x.
FAULTS = [
    pytest.param("503", 2, "open", id="breaker-503"),
    pytest.param("429:retry-after=30", 1, "cooling_down", id="cooldown-429"),
    pytest.param("402", 1, "available", id="cooldown-402-provider"),
    pytest.param("401", 1, "available", id="cooldown-401-provider"),
    pytest.param("404", 1, "cooling_down", id="cooldown-404-model"),
]
PROVIDER_STATE = {"503": "open", "402": "cooling_down", "401": "cooling_down"}


def fail_over_to_b(gateway: Gateway, upstreams: Upstreams, reason: str) -> Served:
    """One request through ``gateway`` that must try a, fail, and be served by b."""
    before = len(upstreams.a.requests)
    served = gateway.chat()
    assert served.outcome == (200, "b", 2), f"{reason}: {served}"
    assert len(upstreams.a.requests) == before + 1, f"{reason}: a was not tried once"
    return served


def skip_a(gateway: Gateway, upstreams: Upstreams, reason: str) -> Served:
    """One request through ``gateway`` that must skip a without contacting it."""
    before = len(upstreams.a.requests)
    served = gateway.chat()
    assert len(upstreams.a.requests) == before, f"{reason}: a was contacted ({served})"
    assert served.outcome == (200, "b", 1), f"{reason}: {served}"
    assert served.content == "Hello from b."
    return served


def wait_for_recovery(gateway: Gateway) -> None:
    """Send healthy requests through ``gateway`` until its store reports Redis is back.

    The store tries Redis again only on a call made after ``retry_interval``; every request
    makes calls. Bounded by RECOVERY_LIMIT.
    """
    deadline = time.monotonic() + RECOVERY_LIMIT
    while True:
        assert gateway.chat().status == 200
        if gateway.store_events() == ["degraded", "recovered"]:
            assert gateway.store()["degraded"] is False
            return
        if time.monotonic() > deadline:
            pytest.fail(f"{gateway.name} not back on Redis within {RECOVERY_LIMIT} s: "
                        f"{gateway.store()}\n{gateway.log()}")
        time.sleep(0.05)


def status_of(gateway: Gateway) -> tuple[str, str]:
    """What ``GET /v1/status`` of ``gateway`` says of the provider a and of its target a/x."""
    providers = gateway.client.get("/v1/status").json()["providers"]
    target = providers["a"]["targets"].get("x", {"state": "available"})
    return providers["a"]["state"], target["state"]


def timed_chat(gateway: Gateway) -> Served:
    started = time.monotonic()
    served = gateway.chat()
    took = time.monotonic() - started
    assert took < OUTAGE_REQUEST_LIMIT, f"request through {gateway.name} took {took:.2f} s"
    return served


# -- the "done when" checks -------------------------------------------------------------------


@pytest.mark.parametrize(("fault", "requests_through_a", "target_state"), FAULTS)
def test_b_skips_the_target_a_found_failing(
    redis_server: RedisServer, key_prefix: str, upstreams: Upstreams,
    start_gateways: Callable[..., list[Gateway]], fault: str, requests_through_a: int,
    target_state: str,
) -> None:
    A, B = start_gateways(gateway_config(upstreams, redis_state(redis_server, key_prefix)),
                          "A", "B")
    upstreams.a.set_fault(fault)

    for i in range(requests_through_a):
        fail_over_to_b(A, upstreams, f"A's request {i + 1}")
    assert len(upstreams.a.requests) == requests_through_a

    skip_a(B, upstreams, "B after A saw a fail")
    skip_a(A, upstreams, "A itself")
    assert len(upstreams.b.requests) == requests_through_a + 2
    expected = (PROVIDER_STATE.get(fault, "available"), target_state)
    assert status_of(B) == status_of(A) == expected
    for gateway in (A, B):
        info = gateway.store()
        assert info["store"] == "RedisHealthStore"
        assert info["degraded"] is False and info["events"] == [], gateway.log()


@pytest.mark.parametrize(("fault", "requests_through_a", "target_state"), FAULTS)
def test_control_with_the_memory_backend_b_does_not_see_what_a_learned(
    upstreams: Upstreams, start_gateways: Callable[..., list[Gateway]], fault: str,
    requests_through_a: int, target_state: str,
) -> None:
    A, B = start_gateways(gateway_config(upstreams, {"backend": "memory"}), "A", "B")
    upstreams.a.set_fault(fault)

    for i in range(requests_through_a):
        fail_over_to_b(A, upstreams, f"A's request {i + 1}")
    skip_a(A, upstreams, "A, which learned it")

    # B has its own state: it contacts a once more, exactly what Redis sharing prevents
    fail_over_to_b(B, upstreams, "B with per-process state")
    assert B.store()["store"] == "MemoryHealthStore"
    assert status_of(A) == (PROVIDER_STATE.get(fault, "available"), target_state)


def test_failures_seen_by_different_processes_count_towards_one_breaker(
    redis_server: RedisServer, key_prefix: str, upstreams: Upstreams,
    start_gateways: Callable[..., list[Gateway]],
) -> None:
    A, B = start_gateways(gateway_config(upstreams, redis_state(redis_server, key_prefix)),
                          "A", "B")
    upstreams.a.set_fault("503")

    fail_over_to_b(A, upstreams, "A: first failure")
    fail_over_to_b(B, upstreams, "B: second failure, opens the shared breaker")
    skip_a(A, upstreams, "A after B's failure")
    skip_a(B, upstreams, "B")


def test_redis_killed_and_restarted(
    redis_server: RedisServer, key_prefix: str, upstreams: Upstreams,
    start_gateways: Callable[..., list[Gateway]],
) -> None:
    state = redis_state(redis_server, key_prefix, retry_interval=RETRY_INTERVAL)
    A, B = start_gateways(gateway_config(upstreams, state), "A", "B")
    upstreams.a.set_fault("503")

    # 1. shared through Redis
    fail_over_to_b(A, upstreams, "shared: A 1")
    fail_over_to_b(A, upstreams, "shared: A 2")
    skip_a(B, upstreams, "shared: B")

    # 2. Redis dies: every request still succeeds, failover works from each process's own state
    redis_server.kill()
    for gateway in (A, B):
        served = timed_chat(gateway)  # local state is empty: a is tried, fails, b serves
        assert served.outcome == (200, "b", 2), f"{gateway.name} without Redis: {served}"
        served = timed_chat(gateway)  # the second local failure opens the local breaker
        assert served.outcome == (200, "b", 2), f"{gateway.name} without Redis: {served}"
        before = len(upstreams.a.requests)
        served = timed_chat(gateway)
        assert served.outcome == (200, "b", 1), f"{gateway.name} local breaker: {served}"
        assert len(upstreams.a.requests) == before
        info = gateway.store()
        assert info["degraded"] is True, gateway.log()
        assert info["events"] == [{"state": "degraded", "error": "ConnectionError"}]
    time.sleep(RETRY_INTERVAL * 1.2)  # a retry against the dead Redis fails quietly
    for gateway in (A, B):
        assert timed_chat(gateway).outcome == (200, "b", 1)
        assert gateway.store_events() == ["degraded"]  # one signal per outage

    # 3. Redis is back on the same port (empty): both processes pick it up again
    redis_server.start()
    upstreams.a.set_fault(None)
    for gateway in (A, B):
        wait_for_recovery(gateway)
    # the local breakers were dropped on recovery, and the new Redis knows nothing yet
    served = B.chat()
    assert served.outcome == (200, "a", 1), served

    # ... and a breaker opened through A is seen by B again
    upstreams.a.set_fault("503")
    fail_over_to_b(A, upstreams, "after recovery: A 1")
    fail_over_to_b(A, upstreams, "after recovery: A 2")
    skip_a(B, upstreams, "after recovery: B")
    assert A.store_events() == B.store_events() == ["degraded", "recovered"]


# -- more of the shared contract --------------------------------------------------------------


def test_a_hung_redis_does_not_hold_requests_up(
    redis_server: RedisServer, key_prefix: str, upstreams: Upstreams,
    start_gateways: Callable[..., list[Gateway]],
) -> None:
    state = redis_state(redis_server, key_prefix, retry_interval=RETRY_INTERVAL)
    A, B = start_gateways(gateway_config(upstreams, state), "A", "B")
    assert A.chat().outcome == (200, "a", 1)  # connections to Redis are open and pooled
    assert B.chat().outcome == (200, "a", 1)
    redis_server.pause()  # accepts connections, never answers
    try:
        upstreams.a.set_fault("503")
        for gateway in (A, B):
            assert timed_chat(gateway).outcome == (200, "b", 2)
            assert timed_chat(gateway).outcome == (200, "b", 2)
            assert timed_chat(gateway).outcome == (200, "b", 1)  # local breaker
            assert gateway.store()["events"] == [{"state": "degraded", "error": "TimeoutError"}]
    finally:
        redis_server.resume()
    upstreams.a.set_fault(None)
    for gateway in (A, B):
        wait_for_recovery(gateway)
    upstreams.a.set_fault("503")
    fail_over_to_b(B, upstreams, "after recovery: B 1")
    fail_over_to_b(B, upstreams, "after recovery: B 2")
    skip_a(A, upstreams, "after recovery: A")


def test_one_probe_between_processes_when_the_shared_breaker_half_opens(
    redis_server: RedisServer, key_prefix: str, upstreams: Upstreams,
    start_gateways: Callable[..., list[Gateway]],
) -> None:
    open_for = 1.0
    config = gateway_config(upstreams, redis_state(redis_server, key_prefix))
    config["breaker"]["open_for"] = open_for
    A, B = start_gateways(config, "A", "B")
    upstreams.a.set_fault("503")
    fail_over_to_b(A, upstreams, "A 1")
    fail_over_to_b(B, upstreams, "B 1: opens the breaker")
    time.sleep(open_for + 0.2)

    # a is healthy again but slow to answer: both processes want to probe it at the same time
    upstreams.a.set_fault("slow=0.6")
    results: dict[str, Served] = {}
    errors: list[BaseException] = []

    def send(gateway: Gateway) -> None:
        try:
            results[gateway.name] = gateway.chat()
        except BaseException as exc:  # reported below
            errors.append(exc)

    before = len(upstreams.a.requests)
    threads = [threading.Thread(target=send, args=(g,)) for g in (A, B)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not any(t.is_alive() for t in threads) and not errors, errors
    assert len(upstreams.a.requests) == before + 1, "exactly one probe reaches a"
    outcomes = sorted(served.outcome for served in results.values())
    assert outcomes == [(200, "a", 1), (200, "b", 1)], results

    # the probe succeeded: the shared breaker is closed for both
    upstreams.a.set_fault(None)
    assert A.chat().outcome == (200, "a", 1)
    assert B.chat().outcome == (200, "a", 1)


def test_latency_statistics_are_shared(
    redis_server: RedisServer, key_prefix: str, upstreams: Upstreams,
    start_gateways: Callable[..., list[Gateway]],
) -> None:
    config = gateway_config(upstreams, redis_state(redis_server, key_prefix))
    config["models"]["fastest"] = {"targets": ["a/x", "b/y"], "routing": "latency"}
    A, B = start_gateways(config, "A", "B")
    upstreams.a.set_fault("slow=0.3")
    assert A.chat("a/x").outcome == (200, "a", 1)  # A times both targets
    assert A.chat("b/y").outcome == (200, "b", 1)
    before = len(upstreams.a.requests)
    # B has never sent anything to either: it orders them by what A measured
    assert B.chat("fastest").outcome == (200, "b", 1)
    assert len(upstreams.a.requests) == before
