"""The async driver: runs a flow with ``httpx.AsyncClient`` over the aiohttp transport.

One client per provider per event loop (an async client must never cross loops), reused by
every request on that loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from ..messages import HttpResponse
from ..routing.flow import Attempt, Fail, FlowGenerator, Respond, Sleep
from ..routing.outcomes import Delivered, Failure
from ..routing.plan import RoutedRequest
from .base import (
    DISCONNECTED,
    ERROR_BODY_LIMIT,
    SSE_HEADERS,
    TRANSPORT_ERRORS,
    DriverBase,
    Opened,
    error_chunk,
    transport_failure,
)

__all__ = ["AsyncDriver"]

POOL = httpx.Limits(max_connections=512, max_keepalive_connections=128, keepalive_expiry=30)


class AsyncDriver(DriverBase):
    """Executes routed requests on the running event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, httpx.AsyncClient]
        ] = weakref.WeakKeyDictionary()

    def client(self, provider: str) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        clients = self._clients.get(loop)
        if clients is None:
            clients = self._clients[loop] = {}
        client = clients.get(provider)
        if client is None:
            client = clients[provider] = httpx.AsyncClient(
                transport=AiohttpTransport(limits=POOL), limits=POOL, timeout=None,
                follow_redirects=False,
            )
        return client

    async def aclose(self) -> None:
        """Close the clients of the running loop (call from the ASGI lifespan shutdown)."""
        clients = self._clients.pop(asyncio.get_running_loop(), {})
        for client in clients.values():
            await client.aclose()

    async def execute(self, request: RoutedRequest) -> HttpResponse:
        flow = self.flow(request)
        action = next(flow)
        opened: Opened | None = None
        while True:
            result: Failure | None = None
            if isinstance(action, Attempt):
                outcome = await self._attempt(request, action)
                if isinstance(outcome, Failure):
                    result = outcome
                else:
                    opened = outcome
            elif isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
            elif isinstance(action, Respond):
                assert opened is not None
                if request.stream:
                    headers = SSE_HEADERS + self.served_headers(request, action.target,
                                                                action.attempts)
                    relay = self._relay(opened, flow)
                    await relay.__anext__()  # started: closing it now closes the upstream
                    return HttpResponse(200, headers, opened.first, stream=relay)
                response = self.success(request, action.target, action.attempts, opened)
                self.finish(flow, Delivered(opened.usage))
                return response
            elif isinstance(action, Fail):
                flow.close()
                return self.failure_response(request, action.error, action.attempts)
            else:
                self.apply(action)
            action = flow.send(result)

    async def _attempt(self, request: RoutedRequest, action: Attempt) -> Failure | Opened:
        target = action.target
        wire = self.wires[target.provider]
        upstream = wire.build_request(request, target)
        client = self.client(target.provider)
        http_request = client.build_request(
            upstream.method, upstream.url, headers=upstream.headers, content=upstream.content,
            timeout=self.timeout(action.time_left),
        )
        response: httpx.Response | None = None
        handed_over = False
        try:
            async with asyncio.timeout(action.time_left):
                response = await client.send(http_request, stream=True)
                if not 200 <= response.status_code < 300:
                    body = await _read_capped(response)
                    return wire.classify_error(response.status_code, response.headers, body,
                                               self.clock())
                if not request.stream:
                    body = await response.aread()
                    failure, usage = wire.check_body(request.route, body)
                    return failure or Opened(response, body=body, usage=usage)
                translator = wire.stream()
                chunks = response.aiter_bytes()
                first: list[bytes] = []
                async for chunk in chunks:
                    out = translator.feed(chunk)
                    if translator.error is not None:
                        return translator.error
                    if out:
                        first.append(out)
                    if translator.started:
                        handed_over = True
                        return Opened(response, stream=translator, first=b"".join(first),
                                      chunks=chunks)
                translator.close()
                return translator.error or transport_failure(
                    EOFError(), answered=True, stream=True
                )
        except TRANSPORT_ERRORS as exc:
            return transport_failure(exc, answered=response is not None, stream=request.stream)
        finally:
            if response is not None and not handed_over:
                await response.aclose()

    async def _relay(self, opened: Opened, flow: FlowGenerator) -> AsyncIterator[bytes]:
        stream = opened.stream
        assert stream is not None
        outcome = DISCONNECTED
        try:
            yield b""
            failure: Failure | None = None
            try:
                while not stream.finished and stream.error is None:
                    try:
                        chunk = await opened.chunks.__anext__()
                    except StopAsyncIteration:
                        tail = stream.close()
                        if tail:
                            yield tail
                        break
                    out = stream.feed(chunk)
                    if out:
                        yield out
            except TRANSPORT_ERRORS as exc:
                failure = transport_failure(exc, answered=True, stream=True)
            failure = failure or stream.error
            if failure is not None and not stream.error_in_band:
                yield error_chunk(failure)
            outcome = Delivered(stream.usage, failure)
        finally:
            await opened.response.aclose()
            self.finish(flow, outcome)


async def _read_capped(response: httpx.Response) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= ERROR_BODY_LIMIT:
            break
    return b"".join(parts)[:ERROR_BODY_LIMIT]
