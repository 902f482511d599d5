"""Load held: many concurrent requests through each gateway while the primary upstream fails
every request, half of them streamed. Every request must succeed through the backup, and
afterwards nothing may be left: no upstream socket once the pools are closed, the ASGI loop's
task count and the process's thread count back to their baselines.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from hardening_gateways import Gateway, Upstreams
from hardening_support import MESSAGES, exchange, upstream_sockets, wait_until

REQUESTS = 1000
CONCURRENCY = 24


@pytest.mark.long
def test_concurrent_failover_load(gateway: Gateway, sims: Upstreams) -> None:
    tasks_before = gateway.tasks()
    threads_before = threading.active_count()
    sims.primary.set_fault("503")

    def one(i: int) -> tuple[int, str, bool]:
        stream = i % 2 == 1
        reply = exchange(f"{gateway.base_url}/chat/completions",
                         {"model": "fo-primary", "messages": MESSAGES, "stream": stream},
                         client=client)
        if stream:
            text = "".join(e["choices"][0]["delta"].get("content") or ""
                           for e in reply.events if e != "[DONE]" and e["choices"])
            done = bool(reply.events) and reply.events[-1] == "[DONE]"
        else:
            text = reply.json["choices"][0]["message"]["content"]
            done = True
        return reply.status, text, done

    limits = httpx.Limits(max_connections=CONCURRENCY, max_keepalive_connections=CONCURRENCY)
    client = httpx.Client(timeout=15, limits=limits)
    started = time.monotonic()
    with client, ThreadPoolExecutor(CONCURRENCY) as pool:
        results = list(pool.map(one, range(REQUESTS)))
    elapsed = time.monotonic() - started
    print(f"{gateway.kind}: {REQUESTS} requests, {CONCURRENCY} at a time, primary failing: "
          f"{elapsed:.2f} s, {REQUESTS / elapsed:.0f} req/s")
    assert all(r == (200, sims.backup.reply, True) for r in results), [
        r for r in results if r != (200, sims.backup.reply, True)][:3]
    assert len(sims.backup.requests) == REQUESTS
    # the breaker opens after a few 503s, so most requests skip the primary altogether
    assert 1 <= len(sims.primary.requests) < REQUESTS
    gateway.close_pools()
    assert wait_until(lambda: not upstream_sockets(sims.ports), 3.0), upstream_sockets(sims.ports)
    if tasks_before is not None:
        assert wait_until(lambda: gateway.tasks() <= tasks_before, 3.0), gateway.tasks()
    assert wait_until(lambda: threading.active_count() <= threads_before, 3.0)
