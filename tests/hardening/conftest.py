"""Fixtures for the hardening suite: faulty upstreams, badgr under ASGI and WSGI servers.

Both gateways run in this process, over real HTTP on 127.0.0.1:

- ``asgi``: ``BadgrApp`` (async driver, aiohttp) under uvicorn (``SimulatedServer``), wrapped
  in a probe that reports the serving loop's task count;
- ``wsgi``: ``BadgrWSGIApp`` (sync driver, httpx) under werkzeug's threaded server.

Upstreams: two ``SimulatedProvider``s (``primary`` takes the injected faults, ``backup`` is
healthy), a raw server that answers with a TCP reset, a closed port, and an unresolvable host
(the suite's loopback guard fails its lookup with ``socket.gaierror``, which is what a DNS
failure looks like to badgr).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest
from hardening_gateways import Gateway, Upstreams, serve_gateway
from hardening_support import BACKUP_KEY, PRIMARY_KEY, Recorder, ResetServer

from badgr_middleware.simulator import SimulatedProvider, SimulatedServer, closed_port


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Upstreams]:
    primary = SimulatedProvider("primary", api_key=PRIMARY_KEY)
    backup = SimulatedProvider("backup", api_key=BACKUP_KEY)
    with contextlib.ExitStack() as stack:
        servers = {
            "primary": stack.enter_context(SimulatedServer(primary)),
            "backup": stack.enter_context(SimulatedServer(backup)),
        }
        reset = ResetServer().start()
        stack.callback(reset.stop)
        yield Upstreams(primary, backup, reset, servers, closed_port())


@pytest.fixture
def sims(upstreams: Upstreams) -> Upstreams:
    upstreams.clear()
    return upstreams


@pytest.fixture(scope="session")
def asgi_gateway(upstreams: Upstreams) -> Iterator[Gateway]:
    with serve_gateway("asgi", upstreams.config()) as gateway:
        yield gateway


@pytest.fixture(scope="session")
def wsgi_gateway(upstreams: Upstreams) -> Iterator[Gateway]:
    with serve_gateway("wsgi", upstreams.config()) as gateway:
        yield gateway


@pytest.fixture(params=["asgi", "wsgi"])
def gateway(request: pytest.FixtureRequest, sims: Upstreams) -> Iterator[Gateway]:
    """Each gateway in turn, with an empty health store and clean upstreams.

    Its upstream pools are closed after the test, so every test starts with no connection
    open to any upstream.
    """
    gw: Gateway = request.getfixturevalue(f"{request.param}_gateway")
    gw.reset_health()
    yield gw
    gw.close_pools()


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder().connect()
    try:
        yield rec
    finally:
        rec.disconnect()
