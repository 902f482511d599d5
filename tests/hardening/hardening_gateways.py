"""The upstreams and gateways of tests/hardening (conftest.py turns them into fixtures).

Kept out of conftest.py so that test modules can import them by a unique module name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from hardening_support import (
    BACKUP_KEY,
    CLIENT_KEY,
    DEAD_KEY,
    DNS_KEY,
    PRIMARY_KEY,
    RESET_KEY,
    ProbedApp,
    ResetServer,
    ThreadedWSGIServer,
)

from badgr_middleware import BadgrApp, BadgrWSGIApp
from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

# first_byte/read are short so that hangs fail over quickly; the deadline bounds a slowloris
TIMEOUTS = {"connect": 1, "first_byte": 0.5, "read": 0.5, "deadline": 2.5}
RETRY = {"backoff_base": 0.01, "backoff_max": 0.02, "max_retry_after": 0.5}
SOURCES = ("primary", "reset", "dead", "dns")


@dataclass
class Upstreams:
    primary: SimulatedProvider
    backup: SimulatedProvider
    reset: ResetServer
    servers: dict[str, SimulatedServer]
    dead_port: int

    @property
    def ports(self) -> list[int]:
        return [s.port for s in self.servers.values()] + [self.reset.port]

    def clear(self) -> None:
        self.primary.clear()
        self.backup.clear()
        self.reset.mode = "before-headers"

    def config(self, **overrides: Any) -> dict[str, Any]:
        providers = {
            "primary": {"kind": "openai", "base_url": self.servers["primary"].base_url,
                        "api_key": PRIMARY_KEY},
            "backup": {"kind": "openai", "base_url": self.servers["backup"].base_url,
                       "api_key": BACKUP_KEY},
            "reset": {"kind": "openai", "base_url": self.reset.base_url, "api_key": RESET_KEY},
            "dead": {"kind": "openai", "base_url": f"http://127.0.0.1:{self.dead_port}/v1",
                     "api_key": DEAD_KEY},
            "dns": {"kind": "openai", "base_url": "http://no-such-host.invalid/v1",
                    "api_key": DNS_KEY},
        }
        models: dict[str, Any] = {}
        for source in SOURCES:
            models[f"fo-{source}"] = [f"{source}/m-{source}", "backup/m-backup"]
            models[f"solo-{source}"] = [f"{source}/m-{source}"]
        config: dict[str, Any] = {
            "providers": providers,
            "models": models,
            "client_keys": [CLIENT_KEY],
            "timeouts": dict(TIMEOUTS),
            "retry": dict(RETRY),
            "max_body_bytes": 65536,
        }
        config.update(overrides)
        return config


@dataclass
class Gateway:
    """badgr served over HTTP by one kind of server."""

    kind: str  # "asgi" or "wsgi"
    app: Any
    url: str

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def reset_health(self) -> None:
        self.app.engine.store.clear()

    def tasks(self) -> int | None:
        """The ASGI server loop's live tasks (None under WSGI)."""
        if self.kind != "asgi":
            return None
        return int(httpx.get(f"{self.url}/__probe/tasks", timeout=5).json()["tasks"])

    def close_pools(self) -> None:
        """Close badgr's upstream connection pools, so that any socket left open is a leak."""
        if self.kind == "asgi":
            httpx.post(f"{self.url}/__probe/close", timeout=5).raise_for_status()
        else:
            self.app.engine.close()


@contextlib.contextmanager
def serve_gateway(kind: str, config: dict[str, Any]) -> Iterator[Gateway]:
    if kind == "asgi":
        app = BadgrApp(config)
        with SimulatedServer(ProbedApp(app, app.engine)) as server:
            yield Gateway("asgi", app, server.url)
        return
    wsgi = BadgrWSGIApp(config)
    server = ThreadedWSGIServer(wsgi).start()
    try:
        yield Gateway("wsgi", wsgi, server.url)
    finally:
        server.stop()
        wsgi.engine.close()


