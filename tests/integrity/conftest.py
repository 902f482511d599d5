"""Fixtures for the stream-integrity, resume, cost and etiquette suite (issue 10).

Everything runs over real HTTP on 127.0.0.1: simulated upstreams that answer with one long,
known reply (so a continuation can be checked letter for letter), badgr's ASGI app served by
uvicorn (``SimulatedServer``) or its WSGI app served by werkzeug's threaded server, and the
official ``openai`` SDK as the client.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import openai
import pytest
from blinker import Signal

from badgr_middleware import BadgrApp, BadgrWSGIApp, signals
from badgr_middleware.simulator import SimulatedAnthropic, SimulatedProvider, SimulatedServer

CLIENT_KEY = "integrity-client-key"
REPLY = ("The quick brown fox jumps over the lazy dog while the old cat watches from the warm "
         "windowsill, counting the birds that land on the fence.")
MESSAGES = [{"role": "user", "content": "Tell me about the fox."}]
KEYS = {name: f"sk-upstream-{name}-0123456789abcdef" for name in ("a", "b", "anth", "q", "q2")}
CHUNKS = 10  # content pieces per streamed answer: a cut after 5 leaves half of it sent

CHEAP = {"input": 0.15, "output": 0.60}
PRICEY = {"input": 5.0, "output": 15.0}


@dataclass
class Upstreams:
    a: SimulatedProvider
    b: SimulatedProvider
    anth: SimulatedAnthropic
    q: SimulatedProvider
    q2: SimulatedProvider
    servers: dict[str, SimulatedServer] = field(default_factory=dict)

    def all(self) -> list[Any]:
        return [self.a, self.b, self.anth, self.q, self.q2]


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Upstreams]:
    sims = Upstreams(
        a=SimulatedProvider("a", api_key=KEYS["a"], reply=REPLY, stream_chunks=CHUNKS),
        b=SimulatedProvider("b", api_key=KEYS["b"], reply=REPLY, stream_chunks=CHUNKS),
        anth=SimulatedAnthropic("anth", api_key=KEYS["anth"], reply=REPLY),
        q=SimulatedProvider("q", api_key=KEYS["q"], rate_limit=4, rate_limit_window=60),
        q2=SimulatedProvider("q2", api_key=KEYS["q2"]),
    )
    try:
        for name in ("a", "b", "anth", "q", "q2"):
            sims.servers[name] = SimulatedServer(getattr(sims, name)).start()
        yield sims
    finally:
        for server in sims.servers.values():
            server.stop()


@pytest.fixture
def sims(upstreams: Upstreams) -> Upstreams:
    for sim in upstreams.all():
        sim.clear()
    return upstreams


def config(sims: Upstreams, **overrides: Any) -> dict[str, Any]:
    def openai_provider(name: str) -> dict[str, Any]:
        return {"kind": "openai", "base_url": sims.servers[name].base_url, "api_key": KEYS[name]}

    providers = {name: openai_provider(name) for name in ("a", "b", "q", "q2")}
    providers["anth"] = {"kind": "anthropic", "base_url": sims.servers["anth"].base_url,
                         "api_key": KEYS["anth"]}
    cfg: dict[str, Any] = {
        "providers": providers,
        "client_keys": [CLIENT_KEY],
        "timeouts": {"connect": 1, "read": 0.5, "first_byte": 2, "deadline": 10},
        "retry": {"backoff_base": 0.01, "backoff_max": 0.02, "max_retry_after": 1},
        "models": {
            # the same model (m1) at another provider comes after a different one (m2):
            # a resume must prefer it
            "resumable": {"targets": ["a/m1", "b/m2", "anth/m1"], "resume": True},
            "resumable-openai": {"targets": ["a/m1", "b/m2"], "resume": True},
            "plain": ["a/m1", "b/m2"],
            "priced": {"targets": [{"target": "a/cheap", "price": CHEAP},
                                   {"target": "b/pricey", "price": PRICEY}],
                       "max_price_ratio": 2},
            "priced-open": {"targets": [{"target": "a/cheap", "price": CHEAP},
                                        {"target": "b/pricey", "price": PRICEY}]},
            "quota": ["q/m", "q2/m"],
        },
    }
    cfg.update(overrides)
    return cfg


class Gateway:
    """badgr served over real HTTP, and SDK clients for it."""

    def __init__(self, base_url: str, app: Any) -> None:
        self.base_url = base_url
        self.app = app

    def client(self, **options: Any) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        options.setdefault("api_key", CLIENT_KEY)
        options.setdefault("timeout", 10)
        return openai.OpenAI(base_url=self.base_url, **options)


@contextlib.contextmanager
def asgi_gateway(cfg: dict[str, Any]) -> Iterator[Gateway]:
    app = BadgrApp(cfg)
    with SimulatedServer(app) as server:
        yield Gateway(server.base_url, app)


@contextlib.contextmanager
def wsgi_gateway(cfg: dict[str, Any]) -> Iterator[Gateway]:
    from werkzeug.serving import make_server

    app = BadgrWSGIApp(cfg)
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Gateway(f"http://127.0.0.1:{server.server_port}/v1", app)
    finally:
        server.shutdown()
        thread.join(5)
        app.engine.close()


@pytest.fixture(params=["asgi", "wsgi"])
def serve(request: pytest.FixtureRequest) -> Callable[[dict[str, Any]], Any]:
    """Serve a config under the ASGI app (async driver) or the WSGI app (sync driver)."""
    return asgi_gateway if request.param == "asgi" else wsgi_gateway


class Recorder:
    """Every payload of the given core signals, in order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []
        self._lock = threading.Lock()
        self._receivers: list[tuple[Signal, Callable[..., None]]] = []

    def listen(self, *names: str) -> Recorder:
        for name in names:
            signal: Signal = getattr(signals, name)

            def receive(sender: Any, event: Any = None, _name: str = name) -> None:
                with self._lock:
                    self.events.append((_name, event))

            signal.connect(receive, weak=False)
            self._receivers.append((signal, receive))
        return self

    def of(self, name: str) -> list[Any]:
        with self._lock:
            return [event for n, event in self.events if n == name]

    def close(self) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    rec = Recorder().listen("request_started", "attempt_failed", "failover", "stream_resumed",
                            "request_finished", "request_failed")
    try:
        yield rec
    finally:
        rec.close()
