"""Fixtures for the distributed suite: badgr in several real processes sharing one Redis.

* ``redis_server``: a private ``redis-server`` on a free 127.0.0.1 port, which the test may
  SIGKILL and restart on the same port; skipped (with how to install it) only when no
  ``redis-server`` binary is installed.
* ``key_prefix``: a Redis key prefix of this test's own.
* ``upstreams``: the simulated providers ``a`` and ``b``, with no faults and empty request logs.
* ``start_gateways``: ``start_gateways(config, "A", "B")`` starts one badgr server process per
  name and returns them once all answer; every process is stopped in teardown, and a
  traceback in any process's log fails the test.

The helpers behind them are in distributed_support.py.
"""

from __future__ import annotations

import shutil
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from distributed_support import (
    GATEWAY_START_LIMIT,
    REDIS_INSTALL_HINT,
    Gateway,
    PortTaken,
    RedisServer,
    Upstreams,
)

from badgr_middleware.simulator import SimulatedProvider, SimulatedServer


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own; killed in teardown (also when paused)."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip(REDIS_INSTALL_HINT)
    workdir = tmp_path / "redis"
    workdir.mkdir()
    server = RedisServer(binary, workdir)
    try:
        server.start_on_a_free_port()
        yield server
    finally:
        server.resume()
        server.kill()


@pytest.fixture
def key_prefix() -> str:
    """A key prefix of this test's own (its Redis dies with the test: nothing to clean up)."""
    return f"badgr-distributed:{uuid.uuid4().hex}:"


@pytest.fixture(scope="module")
def _upstream_servers() -> Iterator[Upstreams]:
    a, b = SimulatedProvider("a"), SimulatedProvider("b")
    a_server = SimulatedServer(a).start()
    try:
        b_server = SimulatedServer(b).start()
        try:
            yield Upstreams(a, b, a_server, b_server)
        finally:
            b_server.stop()
    finally:
        a_server.stop()


@pytest.fixture
def upstreams(_upstream_servers: Upstreams) -> Iterator[Upstreams]:
    """Providers ``a`` and ``b``: no faults and empty request logs, before and after."""
    _upstream_servers.clear()
    yield _upstream_servers
    _upstream_servers.clear()


@pytest.fixture
def start_gateways(tmp_path: Path) -> Iterator[Callable[..., list[Gateway]]]:
    """``start_gateways(config, "A", "B")``: one badgr process per name, all answering."""
    started: list[Gateway] = []

    def launch(name: str, config: Mapping[str, Any]) -> Gateway:
        gateway = Gateway(name, config, tmp_path)
        started.append(gateway)
        return gateway

    def start(config: Mapping[str, Any], *names: str) -> list[Gateway]:
        gateways = [launch(name, config) for name in names]  # all at once: imports overlap
        deadline = time.monotonic() + GATEWAY_START_LIMIT
        for i, gateway in enumerate(gateways):
            for attempt in range(3):
                try:
                    gateway.wait_ready(deadline)
                    break
                except PortTaken:  # another process took the free port first: a new one
                    if attempt == 2:
                        raise
                    gateway.stop()
                    gateway = gateways[i] = launch(gateway.name, config)
        return gateways

    try:
        yield start
    finally:
        errors: list[BaseException] = []
        for gateway in started:
            try:
                gateway.stop()
            except Exception as exc:  # stop the others first
                errors.append(exc)
        if errors:
            raise errors[0]
        for gateway in started:  # an exception inside badgr is a failure even if answered
            if "Traceback" in gateway.log():
                pytest.fail(f"gateway {gateway.name} logged an exception:\n{gateway.log()}")
