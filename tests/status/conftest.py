"""Fixtures for the status tests: ``status_server``, a real HTTP server on 127.0.0.1 whose
pages the test sets (``status_server.page("/a.json", body, delay=...)``), counting the hits of
each path; ``upstreams``, two simulated OpenAI-compatible providers ``a`` and ``b``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from status_support import StatusServer, Upstreams

from badgr_middleware.simulator import SimulatedProvider, SimulatedServer


@pytest.fixture
def status_server() -> Iterator[StatusServer]:
    server = StatusServer()
    server.thread.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def _servers() -> Iterator[tuple[SimulatedProvider, SimulatedProvider, dict[str, str]]]:
    a, b = SimulatedProvider("a"), SimulatedProvider("b")
    with SimulatedServer(a) as sa, SimulatedServer(b) as sb:
        yield a, b, {"a": sa.base_url, "b": sb.base_url}


@pytest.fixture
def upstreams(
    _servers: tuple[SimulatedProvider, SimulatedProvider, dict[str, str]],
) -> Iterator[Upstreams]:
    a, b, urls = _servers
    a.set_fault(None)
    b.set_fault(None)
    yield Upstreams(a, b, urls)
    a.set_fault(None)
    b.set_fault(None)


@pytest.fixture
def redis_url() -> str:
    redis = pytest.importorskip("redis")
    url = "redis://127.0.0.1:6379/0"
    client = redis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
    try:
        client.ping()
    except (redis.RedisError, OSError):
        pytest.skip("no Redis answers at 127.0.0.1:6379 (tests/health starts its own)")
    finally:
        client.close()
    return url
