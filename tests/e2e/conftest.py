"""Fixtures for the ASGI end-to-end suite.

Everything here runs over real HTTP on 127.0.0.1: simulated upstreams (``SimulatedProvider``
served by ``SimulatedServer``), badgr itself (``BadgrApp`` served by its own
``SimulatedServer``, so the ASGI lifespan runs and closes its aiohttp sessions on stop), and
the official ``openai`` SDK (or plain ``httpx``) as the client.

Cost model: the upstreams and one shared gateway live for the whole session. Every test starts
with clean upstreams (no faults, empty request logs) and an empty health store on the shared
gateway. Tests about cooldowns, or that need a different configuration, start a gateway of
their own with ``make_gateway`` (about 0.2 s each, mostly uvicorn's shutdown tick).
"""

from __future__ import annotations

import contextlib
import inspect
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import openai
import pytest
from blinker import Signal

from badgr_middleware import BadgrApp, signals
from badgr_middleware.simulator import SimulatedProvider, SimulatedServer, closed_port

CLIENT_KEY = "test-client-key"
MESSAGES = [{"role": "user", "content": "Say hello please"}]

# Recognisable fake upstream keys: a test can search every response for them.
UPSTREAM_KEYS = {
    "a": "sk-upstream-aaaa-0123456789abcdef",
    "b": "sk-upstream-bbbb-0123456789abcdef",
    "c": "sk-upstream-cccc-0123456789abcdef",
    "slow": "sk-upstream-slow-0123456789abcdef",
    "paced": "sk-upstream-paced-0123456789abcdef",
    "openrouter": "sk-or-v1-upstream-0123456789abcdef",
    "router": "sk-router-upstream-0123456789abcdef",
    "dead": "sk-upstream-dead-0123456789abcdef",
}
SIMULATED = ("a", "b", "c", "slow", "paced", "openrouter", "router")
SLOW_CHUNK_DELAY = 0.2
SLOW_CHUNKS = 5
# "paced" spaces its events so that each reaches badgr in a read of its own
PACED_CHUNK_DELAY = 0.05

# read is the "no first byte in time" limit the hang tests wait for
TIMEOUTS = {"connect": 1, "read": 0.5, "deadline": 5}
RETRY = {"backoff_base": 0.01, "backoff_max": 0.02, "max_retry_after": 1}

ALIASES: dict[str, Any] = {
    "ab": ["a/m-a", "b/m-b"],
    "a2b": ["a/m-a2", "b/m-b"],  # another model on provider a: shows provider-wide cooldowns
    "abc": ["a/m-a", "b/m-b", "c/m-c"],
    "solo": ["a/m-a"],
    "dead-b": ["dead/m-dead", "b/m-b"],
    "ctx": [
        {"target": "a/m-small", "context_window": 8192},
        {"target": "c/m-tiny", "context_window": 4096},
        "c/m-unknown",
        {"target": "b/m-big", "context_window": 200000},
    ],
    "ctx-none": [{"target": "a/m-small", "context_window": 8192}, "b/m-b"],
    "slow": ["slow/m-slow"],
    "paced-b": ["paced/m-paced", "b/m-b"],
    "or-a": ["router/vendor/m-or", "a/m-a"],
}

SIGNAL_NAMES = (
    "request_started",
    "attempt_failed",
    "retry_scheduled",
    "failover",
    "circuit_opened",
    "circuit_half_opened",
    "circuit_closed",
    "request_finished",
    "request_failed",
)
TERMINAL = ("request_finished", "request_failed")


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- upstreams --------------------------------------------------------------------------------


class Upstreams:
    """The simulated upstreams by provider name: ``sims.a`` is a ``SimulatedProvider``."""

    def __init__(self) -> None:
        self.providers: dict[str, SimulatedProvider] = {}
        self.servers: dict[str, SimulatedServer] = {}

    def __getattr__(self, name: str) -> SimulatedProvider:
        try:
            return self.providers[name]
        except KeyError:
            raise AttributeError(name) from None

    def clear(self) -> None:
        for provider in self.providers.values():
            provider.clear()

    def models_seen(self, name: str) -> list[str]:
        """The ``model`` of every request the upstream ``name`` received, in order."""
        return [r.json["model"] for r in self.providers[name].requests]


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Upstreams]:
    sims = Upstreams()
    try:
        for name in SIMULATED:
            options: dict[str, Any] = {}
            if name == "slow":
                options = {"chunk_delay": SLOW_CHUNK_DELAY, "stream_chunks": SLOW_CHUNKS}
            elif name == "paced":
                options = {"chunk_delay": PACED_CHUNK_DELAY}
            provider = SimulatedProvider(name, api_key=UPSTREAM_KEYS[name], **options)
            sims.providers[name] = provider
            sims.servers[name] = SimulatedServer(provider).start()
        yield sims
    finally:
        for server in sims.servers.values():
            server.stop()


@pytest.fixture
def sims(upstreams: Upstreams) -> Upstreams:
    """The upstreams, with no faults and empty request logs."""
    upstreams.clear()
    return upstreams


def gateway_config(sims: Upstreams, **overrides: Any) -> dict[str, Any]:
    """badgr's config for the simulated upstreams; top-level keys in ``overrides`` replace."""
    providers: dict[str, Any] = {
        name: {"kind": "openai", "base_url": sims.servers[name].base_url,
               "api_key": UPSTREAM_KEYS[name]}
        for name in SIMULATED
    }
    # the well-known name implies openrouter = true; "router" is a custom OpenRouter-speaker
    del providers["openrouter"]["kind"]
    providers["router"]["openrouter"] = True
    providers["dead"] = {"kind": "openai", "base_url": f"http://127.0.0.1:{closed_port()}/v1",
                         "api_key": UPSTREAM_KEYS["dead"]}
    config: dict[str, Any] = {
        "providers": providers,
        "models": dict(ALIASES),
        "client_keys": [CLIENT_KEY],
        "timeouts": dict(TIMEOUTS),
        "retry": dict(RETRY),
    }
    config.update(overrides)
    return config


@pytest.fixture
def config_for(sims: Upstreams) -> Callable[..., dict[str, Any]]:
    """``config_for(**overrides)``: a fresh copy of the standard config, to adjust."""
    return lambda **overrides: gateway_config(sims, **overrides)


@pytest.fixture(scope="session")
def upstream_keys() -> dict[str, str]:
    return dict(UPSTREAM_KEYS)


# -- badgr ------------------------------------------------------------------------------------


@dataclass
class Reply:
    """What a client saw: status, headers, content, and the error that ended it, if any."""

    status: int
    headers: Mapping[str, str]
    content: str = ""
    chunks: list[Any] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # monotonic time of each chunk
    error: openai.APIError | None = None
    completion: Any = None

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")

    @property
    def attempts(self) -> int | None:
        value = self.headers.get("x-badgr-attempts")
        return None if value is None else int(value)


class Gateway:
    """badgr served over HTTP, with the clients the tests use."""

    def __init__(self, app: BadgrApp, server: SimulatedServer) -> None:
        self.app = app
        self.server = server

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return self.server.base_url

    def reset_health(self) -> None:
        self.app.engine.store.clear()  # type: ignore[attr-defined]

    def client(self, **options: Any) -> openai.OpenAI:
        """An SDK client (use it in a ``with`` block); no SDK retries unless asked."""
        options.setdefault("max_retries", 0)
        options.setdefault("api_key", CLIENT_KEY)
        return openai.OpenAI(base_url=self.base_url, **options)

    def async_client(self, **options: Any) -> openai.AsyncOpenAI:
        options.setdefault("max_retries", 0)
        options.setdefault("api_key", CLIENT_KEY)
        return openai.AsyncOpenAI(base_url=self.base_url, **options)

    def http(self, **options: Any) -> httpx.Client:
        options.setdefault("timeout", 10)
        return httpx.Client(base_url=self.url, **options)

    def chat(
        self, model: str, *, stream: bool = False, client: openai.OpenAI | None = None,
        **params: Any,
    ) -> Reply:
        """One chat completion through the sync SDK; an API error is returned, not raised."""
        with contextlib.ExitStack() as stack:
            if client is None:
                client = stack.enter_context(self.client())
            params.setdefault("messages", MESSAGES)
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model=model, stream=stream, **params
                )
            except openai.APIStatusError as error:
                return Reply(error.status_code, error.response.headers, error=error)
            reply = Reply(raw.status_code, raw.headers)
            if not stream:
                reply.completion = raw.parse()
                reply.content = reply.completion.choices[0].message.content or ""
                return reply
            try:
                for chunk in raw.parse():
                    _add_chunk(reply, chunk)
            except openai.APIError as error:
                reply.error = error
            return reply

    async def achat(
        self, model: str, *, stream: bool = False, client: openai.AsyncOpenAI | None = None,
        **params: Any,
    ) -> Reply:
        """One chat completion through the async SDK; an API error is returned, not raised."""
        async with contextlib.AsyncExitStack() as stack:
            if client is None:
                client = await stack.enter_async_context(self.async_client())
            params.setdefault("messages", MESSAGES)
            try:
                raw = await client.chat.completions.with_raw_response.create(
                    model=model, stream=stream, **params
                )
            except openai.APIStatusError as error:
                return Reply(error.status_code, error.response.headers, error=error)
            reply = Reply(raw.status_code, raw.headers)
            if not stream:
                reply.completion = await _parsed(raw)
                reply.content = reply.completion.choices[0].message.content or ""
                return reply
            try:
                chunks: AsyncIterator[Any] = await _parsed(raw)
                async for chunk in chunks:
                    _add_chunk(reply, chunk)
            except openai.APIError as error:
                reply.error = error
            return reply


async def _parsed(raw: Any) -> Any:
    # the SDK's async raw response parses synchronously in some versions, awaitably in others
    parsed = raw.parse()
    return await parsed if inspect.isawaitable(parsed) else parsed


def _add_chunk(reply: Reply, chunk: Any) -> None:
    reply.arrivals.append(time.monotonic())
    reply.chunks.append(chunk)
    if chunk.choices:
        reply.content += chunk.choices[0].delta.content or ""


def _start_gateway(app: BadgrApp) -> Gateway:
    return Gateway(app, SimulatedServer(app).start())


@pytest.fixture(scope="session")
def shared_gateway(upstreams: Upstreams) -> Iterator[Gateway]:
    gateway = _start_gateway(BadgrApp(gateway_config(upstreams)))
    try:
        yield gateway
    finally:
        gateway.server.stop()


@pytest.fixture
def gateway(shared_gateway: Gateway, sims: Upstreams) -> Gateway:
    """The shared gateway with an empty health store and clean upstreams."""
    shared_gateway.reset_health()
    return shared_gateway


@pytest.fixture
def make_gateway(sims: Upstreams) -> Iterator[Callable[..., Gateway]]:
    """Start a gateway of this test's own (fresh health state).

    ``make(**overrides)`` replaces top-level keys of the standard config; ``make(config)``
    uses ``config`` as it is.
    """
    started: list[Gateway] = []

    def make(config: dict[str, Any] | None = None, **overrides: Any) -> Gateway:
        if config is None:
            config = gateway_config(sims, **overrides)
        gateway = _start_gateway(BadgrApp(config))
        started.append(gateway)
        return gateway

    try:
        yield make
    finally:
        for gateway in started:
            gateway.server.stop()


@pytest.fixture
def fresh_gateway(make_gateway: Callable[..., Gateway]) -> Gateway:
    return make_gateway()


# -- signals ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    name: str
    event: Any


class SignalRecorder:
    """Every badgr signal sent while a test runs, in order (the servers run in-process)."""

    def __init__(self) -> None:
        self._records: list[Record] = []
        self._changed = threading.Condition()

    def receiver(self, name: str) -> Callable[..., None]:
        def receive(sender: object, event: object) -> None:
            with self._changed:
                self._records.append(Record(name, event))
                self._changed.notify_all()

        return receive

    def records(self, request_id: str | None = None) -> list[Record]:
        with self._changed:
            records = list(self._records)
        if request_id is None:
            return records
        return [r for r in records if getattr(r.event, "request_id", None) == request_id]

    def names(self, request_id: str | None = None) -> list[str]:
        return [r.name for r in self.records(request_id)]

    def events(self, name: str, request_id: str | None = None) -> list[Any]:
        return [r.event for r in self.records(request_id) if r.name == name]

    def count(self, name: str) -> int:
        return len(self.events(name))

    def wait_for(
        self, name: str, request_id: str | None = None, *, timeout: float = 3.0
    ) -> Any:
        """The first ``name`` event (of ``request_id``); fails after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for record in self._records:
                    if record.name == name and (
                        request_id is None
                        or getattr(record.event, "request_id", None) == request_id
                    ):
                        return record.event
                left = deadline - time.monotonic()
                if left <= 0:
                    names = [r.name for r in self._records]
                    raise AssertionError(f"no {name} signal within {timeout}s; got {names}")
                self._changed.wait(left)

    def wait_for_end(self, request_id: str | None = None, *, timeout: float = 3.0) -> Record:
        """The request's terminal signal (request_finished or request_failed)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for record in self._records:
                    if record.name in TERMINAL and (
                        request_id is None
                        or getattr(record.event, "request_id", None) == request_id
                    ):
                        return record
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"the request did not end within {timeout}s")
                self._changed.wait(left)


@pytest.fixture
def recorder() -> Iterator[SignalRecorder]:
    recorder = SignalRecorder()
    connected: list[tuple[Signal, Callable[..., None]]] = []
    try:
        for name in SIGNAL_NAMES:
            signal: Signal = getattr(signals, name)
            receiver = recorder.receiver(name)
            signal.connect(receiver, weak=False)
            connected.append((signal, receiver))
        yield recorder
    finally:
        for signal, receiver in connected:
            signal.disconnect(receiver)
