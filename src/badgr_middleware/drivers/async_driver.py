"""The async driver: runs a flow over aiohttp, the fastest asyncio HTTP client measured.

On this project's 2-core benchmark (benchmarks/transport.py) a pass-through proxy served
6,182 req/s on aiohttp, 2,787 on httpx with the httpx-aiohttp transport and 449 on plain
``httpx.AsyncClient``; so the async driver talks aiohttp directly while the sync driver,
tests and users keep httpx. One session per provider per event loop (a session must never
cross loops), reused by every request on that loop.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

from ..messages import HttpResponse
from ..routing.flow import Attempt, Fail, FlowGenerator, Respond, Sleep
from ..routing.outcomes import Failure
from ..routing.plan import RoutedRequest
from .base import (
    DISCONNECTED,
    ERROR_BODY_LIMIT,
    TRANSPORT_ERRORS,
    DriverBase,
    Opened,
    Relay,
    transport_failure,
)

__all__ = ["AsyncDriver"]

POOL_SIZE = 512


class AsyncDriver(DriverBase):
    """Executes routed requests on the running event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sessions: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, dict[str, aiohttp.ClientSession]
        ] = weakref.WeakKeyDictionary()

    def session(self, provider: str) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        sessions = self._sessions.get(loop)
        if sessions is None:
            sessions = self._sessions[loop] = {}
        session = sessions.get(provider)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=30)
            session = sessions[provider] = aiohttp.ClientSession(
                connector=connector, skip_auto_headers=("User-Agent",),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return session

    async def aclose(self) -> None:
        """Close the sessions of the running loop (the ASGI lifespan shutdown calls this)."""
        sessions = self._sessions.pop(asyncio.get_running_loop(), {})
        for session in sessions.values():
            await session.close()

    async def execute(self, request: RoutedRequest) -> HttpResponse:
        flow = self.flow(request)
        try:
            return await self._execute(request, flow)
        except asyncio.CancelledError:
            if flow.gi_frame is not None:  # not yet finished: the response never began
                self.abandon(flow)
            raise

    async def _execute(self, request: RoutedRequest, flow: FlowGenerator) -> HttpResponse:
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
                if not request.stream:
                    return self.success(request, action, opened, flow)
                relay = self._relay(opened, flow)
                await relay.__anext__()  # started: closing it now closes the upstream
                return self.streaming(request, action, opened, relay)
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
        t = self.config.timeouts
        timeout = aiohttp.ClientTimeout(
            total=None, sock_connect=min(t.connect, action.time_left),
            sock_read=min(t.read, action.time_left),
        )
        response: aiohttp.ClientResponse | None = None
        handed_over = False
        try:
            async with asyncio.timeout(action.time_left):
                response = await self.session(target.provider).request(
                    upstream.method, upstream.url, data=upstream.content,
                    headers=upstream.headers, timeout=timeout, allow_redirects=False,
                )
                if not 200 <= response.status < 300:
                    body = await response.content.read(ERROR_BODY_LIMIT)
                    return wire.classify_error(response.status, response.headers, body,
                                               self.clock())
                if not request.stream:
                    body = await response.read()
                    failure, usage = wire.check_body(request.route, body)
                    return failure or Opened(response, body=body, usage=usage)
                translator = wire.stream()
                chunks = response.content.iter_any().__aiter__()
                first: list[bytes] = []
                async for chunk in chunks:
                    out = translator.feed(chunk)
                    if out:
                        first.append(out)
                    if translator.started:  # content came first: an error after it is relayed
                        handed_over = True
                        return Opened(response, stream=translator, first=b"".join(first),
                                      chunks=chunks)
                    if translator.error is not None:
                        return translator.error
                translator.close()
                return translator.error or transport_failure(
                    EOFError(), answered=True, stream=True
                )
        except TRANSPORT_ERRORS as exc:
            return transport_failure(exc, answered=response is not None, stream=request.stream)
        finally:
            if response is not None and not handed_over:
                response.close()

    async def _relay(self, opened: Opened, flow: FlowGenerator) -> AsyncIterator[bytes]:
        assert opened.stream is not None
        relay = Relay(opened.stream)
        outcome = DISCONNECTED
        try:
            yield b""
            try:
                while not relay.done:
                    out = relay.feed(await anext(opened.chunks, None))
                    if out:
                        yield out
            except TRANSPORT_ERRORS as exc:
                yield relay.broken(exc)
            outcome = relay.outcome()
        finally:
            # close, not release: an unfinished upstream must see its connection go at once
            opened.response.close()
            self.finish(flow, outcome)



