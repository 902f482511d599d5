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
from .limits import Limiter
from .messages import HttpRequest, HttpResponse
from .providers import wire_for
from .status import StatusPoller, build_status, render_page, sources_for, status_keys, wants_html
from .status.page import PAGE_HEADERS

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
        # inbound limits per client (docs/limits.md); None when none is configured
        self.limiter = Limiter(self.config, clock=clock) if self.config.limits.enabled else None
        self.status_poller: StatusPoller | None = None
        pages = self.config.status_pages
        sources = sources_for(self.config.providers, pages.sources)
        if pages.enabled and sources:
            poller = StatusPoller(sources, interval=pages.interval, timeout=pages.timeout,
                                  store=self.store, clock=clock)
            self.status_poller = poller
            self.sync_driver.deprioritised = self.async_driver.deprioritised = (
                lambda: poller.deprioritised
            )

    def handle(self, request: HttpRequest) -> HttpResponse:
        """Serve one request from sync code (a stream comes back as a sync iterator)."""
        request_id = self.endpoint.request_id(request)
        if self.status_poller is not None:
            self.status_poller.ensure_started()
        try:
            route = self.endpoint.route_of(request)
            page = self._status_page(route, request)
            if page is not None:
                return page
            principal = self._authenticate(route, request)
            if inspect.isawaitable(principal):
                raise TypeError("an async 'authenticate' callable cannot serve a sync server")
            self.endpoint.check_principal(principal, request)
            immediate = self._immediate(route, request)
            if immediate is not None:
                return immediate
            routed = self.endpoint.parse(request, route, request_id)
            if self.limiter is not None:
                return self.limiter.run(principal, request, routed, self.sync_driver.execute)
            return self.sync_driver.execute(routed)
        except ApiError as error:
            return error_response(error, request_id)
        except Exception:
            return _internal_error(request_id)

    async def handle_async(self, request: HttpRequest) -> HttpResponse:
        """Serve one request from async code (a stream comes back as an async iterator)."""
        request_id = self.endpoint.request_id(request)
        if self.status_poller is not None:
            self.status_poller.ensure_started()
        try:
            route = self.endpoint.route_of(request)
            page = self._status_page(route, request)
            if page is not None:
                return page
            principal = self._authenticate(route, request)
            if not isinstance(principal, str) and inspect.isawaitable(principal):
                principal = await principal
            self.endpoint.check_principal(principal, request)
            if route == "status":
                return _json_response(await self.astatus(), _STATUS_HEADERS)
            immediate = self._immediate(route, request)
            if immediate is not None:
                return immediate
            routed = self.endpoint.parse(request, route, request_id)
            if self.limiter is not None:
                return await self.limiter.arun(principal, request, routed,
                                               self.async_driver.execute)
            return await self.async_driver.execute(routed)
        except ApiError as error:
            return error_response(error, request_id)
        except Exception:
            return _internal_error(request_id)

    def _authenticate(self, route: str, request: HttpRequest) -> Any:
        if route == "status":
            return self.endpoint.authenticate_status(request)
        return self.endpoint.authenticate(request)

    def _status_page(self, route: str, request: HttpRequest) -> HttpResponse | None:
        """The HTML status page, for a browser: it holds no data (its script reads the JSON
        with the caller's credentials), so it needs none."""
        if route != "status" or not wants_html(request.headers.get("accept", ""), request.query):
            return None
        return HttpResponse(200, list(PAGE_HEADERS), render_page())

    def _immediate(self, route: str, request: HttpRequest) -> HttpResponse | None:
        if route == "status":
            return _json_response(self.status(), _STATUS_HEADERS)
        if route == "models" or route.startswith("models/"):
            return self.endpoint.models(route)
        return None

    def status(self) -> dict[str, Any]:
        """The status snapshot (docs/status.md): per provider and target, the state, breaker,
        cooldown, recent success rate, latency, last error, requests served, the last hour
        minute by minute, and the official status when polled."""
        now = self.clock()
        return self._status(self.store.snapshot(status_keys(self.config), now, stats=True), now)

    async def astatus(self) -> dict[str, Any]:
        """:meth:`status` for async code (a Redis store is read without blocking the loop)."""
        now = self.clock()
        snapshot = await self.store.asnapshot(status_keys(self.config), now, stats=True)
        return self._status(snapshot, now)

    def _status(self, snapshot: Mapping[str, KeyHealth], now: float) -> dict[str, Any]:
        poller = self.status_poller
        if poller is not None:
            poller.ensure_started()
        return build_status(self.config, snapshot, now, poller.statuses if poller else None,
                            polling=poller is not None)

    def close(self) -> None:
        """Close the sync upstream connection pools (and the store's, if it has any), and stop
        polling the official status pages."""
        if self.status_poller is not None:
            self.status_poller.stop()
        self.sync_driver.close()
        if self.limiter is not None:
            self.limiter.close()
        closer = getattr(self.store, "close", None)
        if closer is not None:
            closer()

    async def aclose(self) -> None:
        """Close the async connection pools of the running event loop."""
        await self.async_driver.aclose()
        if self.limiter is not None:
            await self.limiter.aclose()
        closer = getattr(self.store, "aclose", None)
        if closer is not None:
            await closer()


_STATUS_HEADERS = [("cache-control", "no-store"), ("vary", "Accept")]


def _json_response(data: Any, extra: list[tuple[str, str]] | None = None) -> HttpResponse:
    headers = [("content-type", "application/json"), *(extra or ())]
    return HttpResponse(200, headers, json.dumps(data).encode())


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


def _internal_error(request_id: str) -> HttpResponse:
    logger.exception("badgr failed to serve request %s", request_id)
    error = ApiError(500, f"The gateway failed to serve this request (request id {request_id}).",
                     type="server_error", code="internal_error")
    return error_response(error, request_id)
