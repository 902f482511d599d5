"""Fixtures for the native-provider end-to-end suite (see native_support.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from native_support import (
    ANTHROPIC_KEY,
    GEMINI_KEY,
    OPENAI_KEY,
    OPENROUTER_KEY,
    Gateway,
    Upstreams,
    native_config,
)

from badgr_middleware import BadgrApp
from badgr_middleware.simulator import (
    SimulatedAnthropic,
    SimulatedGemini,
    SimulatedProvider,
    SimulatedServer,
)


@pytest.fixture(scope="session")
def native_upstreams() -> Iterator[Upstreams]:
    servers: dict[str, SimulatedServer] = {}
    upstreams = Upstreams(
        SimulatedAnthropic(api_key=ANTHROPIC_KEY),
        SimulatedGemini(api_key=GEMINI_KEY),
        SimulatedProvider("openrouter", api_key=OPENROUTER_KEY, reply="Hello from OpenRouter."),
        SimulatedProvider("openai", api_key=OPENAI_KEY, reply="Hello from OpenAI."),
        servers,
    )
    try:
        for name in ("anthropic", "gemini", "openrouter", "openai"):
            servers[name] = SimulatedServer(getattr(upstreams, name)).start()
        yield upstreams
    finally:
        for server in servers.values():
            server.stop()


@pytest.fixture
def fakes(native_upstreams: Upstreams) -> Upstreams:
    native_upstreams.clear()
    return native_upstreams


@pytest.fixture(scope="session")
def shared_native_gateway(native_upstreams: Upstreams) -> Iterator[Gateway]:
    app = BadgrApp(native_config(native_upstreams))
    server = SimulatedServer(app).start()
    try:
        yield Gateway(app, server)
    finally:
        server.stop()


@pytest.fixture
def gateway(shared_native_gateway: Gateway, fakes: Upstreams) -> Gateway:
    shared_native_gateway.reset_health()
    return shared_native_gateway


@pytest.fixture
def make_gateway(fakes: Upstreams) -> Iterator[Any]:
    started: list[SimulatedServer] = []

    def make(**options: Any) -> Gateway:
        app = BadgrApp(native_config(fakes, **options))
        server = SimulatedServer(app).start()
        started.append(server)
        return Gateway(app, server)

    try:
        yield make
    finally:
        for server in started:
            server.stop()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
