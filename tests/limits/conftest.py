"""Fixtures for the inbound-limits suite: simulated upstreams and badgr over real HTTP.

* ``sims``: the simulated providers ``fast`` and ``slow`` (``chunk_delay``), clean per test.
* ``make_gateway(limits, **overrides)``: ``BadgrApp`` under ``SimulatedServer`` (uvicorn);
  ``make_wsgi_gateway``: ``BadgrWSGIApp`` under werkzeug's threaded server.
* ``redis_url``: the machine's Redis at 127.0.0.1:6379, or a private ``redis-server``;
  skipped with the reason only when neither exists.
* ``key_prefix``: a Redis key prefix of this test's own (its keys are deleted afterwards).
"""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from limits_support import CLIENT_KEYS, UPSTREAM_KEY, Gateway, WsgiServer

from badgr_middleware import BadgrApp, BadgrWSGIApp
from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

SLOW_CHUNK_DELAY = 0.15


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, tuple[SimulatedProvider, SimulatedServer]]]:
    started: dict[str, tuple[SimulatedProvider, SimulatedServer]] = {}
    try:
        for name, options in (("fast", {}), ("slow", {"chunk_delay": SLOW_CHUNK_DELAY})):
            provider = SimulatedProvider(name, api_key=UPSTREAM_KEY, **options)
            started[name] = (provider, SimulatedServer(provider).start())
        yield started
    finally:
        for _, server in started.values():
            server.stop()


@pytest.fixture
def sims(upstreams: dict[str, tuple[SimulatedProvider, SimulatedServer]]
         ) -> dict[str, SimulatedProvider]:
    for provider, _ in upstreams.values():
        provider.clear()
    return {name: provider for name, (provider, _) in upstreams.items()}


@pytest.fixture
def config_for(upstreams: dict[str, tuple[SimulatedProvider, SimulatedServer]]
               ) -> Callable[..., dict[str, Any]]:
    def config(limits: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
        data: dict[str, Any] = {
            "providers": {
                name: {"kind": "openai", "base_url": server.base_url, "api_key": UPSTREAM_KEY}
                for name, (_, server) in upstreams.items()
            },
            "models": {"fast": ["fast/m-fast"], "slow": ["slow/m-slow"]},
            "client_keys": list(CLIENT_KEYS),
            "timeouts": {"connect": 1, "read": 2, "deadline": 10},
            "retry": {"backoff_base": 0.01, "backoff_max": 0.02},
        }
        if limits is not None:
            data["limits"] = limits
        data.update(overrides)
        return data

    return config


@pytest.fixture
def limits_clock() -> Callable[[], float]:
    """The limiters' clock: real time shifted so that the test starts 5 s into a minute, so a
    test never straddles a window boundary (shared by every gateway of the test)."""
    shift = time.time() % 60 - 5

    return lambda: time.time() - shift


def _shifted(app: Any, clock: Callable[[], float]) -> Any:
    if app.engine.limiter is not None:
        app.engine.limiter.clock = clock
    return app


@pytest.fixture
def make_gateway(config_for: Callable[..., dict[str, Any]], limits_clock: Callable[[], float]
                 ) -> Iterator[Callable[..., Gateway]]:
    started: list[SimulatedServer] = []

    def make(limits: dict[str, Any] | None = None, **overrides: Any) -> Gateway:
        app = _shifted(BadgrApp(config_for(limits, **overrides)), limits_clock)
        server = SimulatedServer(app).start()
        started.append(server)
        return Gateway(app.engine, server.url)

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def make_wsgi_gateway(config_for: Callable[..., dict[str, Any]],
                      limits_clock: Callable[[], float]) -> Iterator[Callable[..., Gateway]]:
    started: list[tuple[WsgiServer, BadgrWSGIApp]] = []

    def make(limits: dict[str, Any] | None = None, **overrides: Any) -> Gateway:
        app = _shifted(BadgrWSGIApp(config_for(limits, **overrides)), limits_clock)
        server = WsgiServer(app).start()
        started.append((server, app))
        return Gateway(app.engine, server.url)

    try:
        yield make
    finally:
        for server, app in started:
            server.stop()
            app.engine.close()  # the sync driver's upstream pools (and the Redis client)


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    import redis

    try:
        redis.Redis(host="127.0.0.1", port=6379, socket_timeout=0.5).ping()
    except (redis.RedisError, OSError):
        pass
    else:
        yield "redis://127.0.0.1:6379/0"
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("no Redis answers at 127.0.0.1:6379 and no redis-server binary is "
                    "installed (apt-get install redis-server)")
    from badgr_middleware.simulator import closed_port

    port = closed_port()
    workdir: Path = tmp_path_factory.mktemp("limits-redis")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except (redis.RedisError, OSError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.kill()
        process.wait()


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    import redis

    prefix = f"badgr-limits-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url)
    try:
        names = list(client.scan_iter(match=prefix + "*"))
        if names:
            client.delete(*names)
    finally:
        client.close()
