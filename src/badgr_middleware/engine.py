"""The engine: one config, one health store, one sync and one async driver.

Every adapter (ASGI, WSGI, Django, Flask) holds one :class:`Engine` and calls
:meth:`Engine.handle` from sync code or :meth:`Engine.handle_async` from async code.
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import random
import time
from collections.abc import Callable, Mapping
from typing import Any

from .config import Config, load_config
from .drivers.async_driver import AsyncDriver
from .drivers.sync_driver import SyncDriver
from .errors import ApiError
from .health import HealthStore, KeyHealth, MemoryHealthStore
from .http.endpoint import Endpoint, error_response
from .messages import HttpRequest, HttpResponse
from .providers import wire_for

__all__ = ["Engine"]

logger = logging.getLogger("badgr_middleware")

ConfigSource = Config | Mapping[str, Any] | str | os.PathLike[str] | None


class Engine:
    """Routes OpenAI-compatible requests across the configured providers.

    ``sender`` is what signal receivers get as their first argument (default: the engine).
    ``clock`` and ``rng`` exist for tests that need exact timing.
    """

    def __init__(
        self,
        config: ConfigSource = None,
        *,
        sender: object | None = None,
        store: HealthStore | None = None,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = load_config(config)
        self.sender = self if sender is None else sender
        self.store: HealthStore = store or _store_for(self.config, self.sender)
        self.endpoint = Endpoint(self.config)
        self.wires = {name: wire_for(provider) for name, provider in self.config.providers.items()}
        options: dict[str, Any] = {"sender": lambda: self.sender, "clock": clock, "rng": rng}
        self.sync_driver = SyncDriver(self.config, self.wires, self.store, **options)
        self.async_driver = AsyncDriver(self.config, self.wires, self.store, **options)
        self.clock = clock

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Serve one request from sync code (a stream comes back as a sync iterator)."""
        request_id = self.endpoint.request_id(request)
        try:
            route = self.endpoint.route_of(request)
            principal = self.endpoint.authenticate(request)
            if inspect.isawaitable(principal):
                raise TypeError("an async 'authenticate' callable cannot serve a sync server")
            self.endpoint.check_principal(principal, request)
            immediate = self._immediate(route, request)
            if immediate is not None:
                return immediate
            routed = self.endpoint.parse(request, route, request_id)
            return self.sync_driver.execute(routed)
        except ApiError as error:
            return error_response(error, request_id)
        except Exception:
            return _internal_error(request_id)

    async def handle_async(self, request: HttpRequest) -> HttpResponse:
        """Serve one request from async code (a stream comes back as an async iterator)."""
        request_id = self.endpoint.request_id(request)
        try:
            route = self.endpoint.route_of(request)
            principal = self.endpoint.authenticate(request)
            if inspect.isawaitable(principal):
                principal = await principal
            self.endpoint.check_principal(principal, request)
            if route == "status":
                return _json_response(await self.astatus())
            immediate = self._immediate(route, request)
            if immediate is not None:
                return immediate
            routed = self.endpoint.parse(request, route, request_id)
            return await self.async_driver.execute(routed)
        except ApiError as error:
            return error_response(error, request_id)
        except Exception:
            return _internal_error(request_id)

    def _immediate(self, route: str, request: HttpRequest) -> HttpResponse | None:
        if route == "status":
            return _json_response(self.status())
        if route == "models" or route.startswith("models/"):
            return self.endpoint.models(route)
        return None

    def status(self) -> dict[str, Any]:
        """A snapshot of health: cooldowns, breakers and latency of providers and targets."""
        return self._status(self.store.snapshot(self._status_keys(), self.clock()))

    async def astatus(self) -> dict[str, Any]:
        """:meth:`status` for async code (a Redis store is read without blocking the loop)."""
        return self._status(await self.store.asnapshot(self._status_keys(), self.clock()))

    def _status_keys(self) -> list[str]:
        keys = list(self.config.providers)
        for alias in self.config.models.values():
            keys += [f"{t.provider}/{t.model}" for t in alias.targets]
        return keys

    def _status(self, snapshot: Mapping[str, KeyHealth]) -> dict[str, Any]:
        now = self.clock()
        providers: dict[str, Any] = {}
        for name, provider in self.config.providers.items():
            providers[name] = {"kind": provider.kind, **_health_entry(snapshot.get(name), now)}
            providers[name]["targets"] = {
                key.partition("/")[2]: _health_entry(health, now)
                for key, health in snapshot.items()
                if key.partition("/")[0] == name and "/" in key
            }
        return {"object": "badgr.status", "providers": providers}

    def close(self) -> None:
        """Close the sync upstream connection pools (and the store's, if it has any)."""
        self.sync_driver.close()
        closer = getattr(self.store, "close", None)
        if closer is not None:
            closer()

    async def aclose(self) -> None:
        """Close the async connection pools of the running event loop."""
        await self.async_driver.aclose()
        closer = getattr(self.store, "aclose", None)
        if closer is not None:
            await closer()


def _json_response(data: Any) -> HttpResponse:
    return HttpResponse(200, [("content-type", "application/json")], json.dumps(data).encode())


def _store_for(config: Config, sender: object) -> HealthStore:
    if config.state.backend == "redis":
        from .health.redis import RedisHealthStore

        assert config.state.url is not None  # validated by the config
        return RedisHealthStore(
            config.state.url.reveal(), policy=config.breaker, timeout=config.state.timeout,
            retry_interval=config.state.retry_interval, key_prefix=config.state.key_prefix,
            sender=sender,
        )
    return MemoryHealthStore(config.breaker)


def _health_entry(health: KeyHealth | None, now: float) -> dict[str, Any]:
    """One key's health as JSON: ``state`` is available, cooling_down, open or half_open."""
    if health is None:
        return {"state": "available", "reason": None, "retry_in": None, "latency": None}
    state, reason, retry_in = "available", None, None
    if health.cooldown_until is not None and health.cooldown_until > now:
        state, reason = "cooling_down", health.cooldown_kind
        retry_in = round(health.cooldown_until - now, 3)
    elif health.breaker != "closed":
        state, reason = health.breaker, "circuit"
        if health.open_until is not None and health.open_until > now:
            retry_in = round(health.open_until - now, 3)
    latency = None
    if health.latency is not None and health.latency.samples:
        latency = {"ttfb": round(health.latency.ttfb, 4),
                   "ttfb_p95": round(health.latency.ttfb_p95, 4),
                   "total": round(health.latency.total, 4),
                   "samples": health.latency.samples}
    return {"state": state, "reason": reason, "retry_in": retry_in, "latency": latency}


def _internal_error(request_id: str) -> HttpResponse:
    logger.exception("badgr failed to serve request %s", request_id)
    error = ApiError(500, f"The gateway failed to serve this request (request id {request_id}).",
                     type="server_error", code="internal_error")
    return error_response(error, request_id)
