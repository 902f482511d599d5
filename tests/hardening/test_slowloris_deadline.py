"""A slowloris upstream on a non-streaming request: the deadline must still bound the request.

docs/failover.md §2: "Every request has a budget of ``timeouts.deadline`` seconds for all of
its attempts, waits and retries." A body that trickles in one byte at a time, each faster than
``timeouts.read``, never trips a read timeout, so only the deadline can end it. The async
driver (ASGI) enforces it (the fault matrix checks that); the sync driver (WSGI) does not.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from hardening_support import CLIENT_KEY, MESSAGES, ThreadedWSGIServer, exchange

from badgr_middleware import BadgrApp, BadgrWSGIApp
from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

DEADLINE = 1.0


@contextlib.contextmanager
def _gateway(kind: str) -> Iterator[tuple[str, SimulatedProvider]]:
    # an upstream of this test's own: its lingering connection cannot disturb other tests
    provider = SimulatedProvider("loris", fault="dribble=0.05")
    with SimulatedServer(provider) as upstream:
        config = {
            "providers": {"loris": {"kind": "openai", "base_url": upstream.base_url}},
            "models": {"loris": ["loris/m"]},
            "client_keys": [CLIENT_KEY],
            "timeouts": {"connect": 1, "first_byte": 0.5, "read": 0.5, "deadline": DEADLINE},
        }
        if kind == "asgi":
            app = BadgrApp(config)
            with SimulatedServer(app) as server:
                yield server.base_url, provider
            return
        wsgi = BadgrWSGIApp(config)
        server = ThreadedWSGIServer(wsgi).start()
        try:
            yield f"{server.url}/v1", provider
        finally:
            server.stop()
            upstream.stop()  # drops the trickle: the sync driver's read ends
            wsgi.engine.close()


@pytest.mark.long
@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_a_slowloris_body_is_bounded_by_the_deadline(kind: str) -> None:
    with _gateway(kind) as (base_url, provider):
        reply = exchange(f"{base_url}/chat/completions",
                         {"model": "loris", "messages": MESSAGES}, timeout=DEADLINE + 2.0)
        assert reply.status == 504
        assert reply.json["error"]["code"] in ("deadline_exceeded", "upstream_timeout")
        assert reply.elapsed < DEADLINE + 1.0
        assert provider.wait_for_disconnect(2.0)
