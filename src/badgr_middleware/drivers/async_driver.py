"""The async driver: runs a flow over aiohttp, the fastest asyncio HTTP client measured.

On this project's 2-core benchmark (benchmarks/transport.py) a pass-through proxy served
6,182 req/s on aiohttp, 2,787 on httpx with the httpx-aiohttp transport and 449 on plain
``httpx.AsyncClient``; so the async driver talks aiohttp directly while the sync driver,
tests and users keep httpx. One session per provider per event loop (a session must never
cross loops), reused by every request on that loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp

from ..alarms import alarm_at
from ..loop_local import LoopLocal
from ..messages import HttpResponse
from ..providers.base import StreamTranslator
from ..providers.common import UnsupportedRequest
from ..routing.flow import (
    Admit,
    Attempt,
    ClientDisconnected,
    Cooldown,
    Emit,
    Fail,
    FlowGenerator,
    Hedged,
    Interrupted,
    Record,
    Respond,
    Sleep,
)
from ..routing.outcomes import Delivered, Failure, FailureKind
from ..routing.plan import RoutedRequest, Target
from .base import (
    DISCONNECTED,
    ERROR_BODY_LIMIT,
    TRANSPORT_ERRORS,
    DriverBase,
    Opened,
    final_error_event,
    transport_failure,
)

__all__ = ["AsyncDriver"]

# No cap on upstream connections per provider: an LLM stream holds its connection for
# minutes, so a cap of N would queue stream N+1 behind them until its first-byte timeout.
# The server's own concurrency limits (and the OS's file descriptors) bound it instead.
POOL_SIZE = 0


class AsyncDriver(DriverBase):
    """Executes routed requests on the running event loop."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sessions: LoopLocal[dict[str, aiohttp.ClientSession]] = LoopLocal(dict)
        self._timeouts: tuple[Any, aiohttp.ClientTimeout] | None = None

    def session(self, provider: str) -> aiohttp.ClientSession:
        sessions = self._sessions.get()
        session = sessions.get(provider)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(limit=POOL_SIZE, keepalive_timeout=30)
            session = sessions[provider] = aiohttp.ClientSession(
                connector=connector, skip_auto_headers=("User-Agent",),
                timeout=aiohttp.ClientTimeout(total=None),
            )
        return session

    def _socket_timeouts(self, t: Any, time_left: float) -> aiohttp.ClientTimeout:
        """aiohttp's connect and read limits, capped by the time left (cached when not)."""
        if time_left < t.connect or time_left < t.read:
            return aiohttp.ClientTimeout(total=None, sock_connect=min(t.connect, time_left),
                                         sock_read=min(t.read, time_left))
        cached = self._timeouts
        if cached is None or cached[0] is not t:
            cached = self._timeouts = (
                t, aiohttp.ClientTimeout(total=None, sock_connect=t.connect, sock_read=t.read)
            )
        return cached[1]

    async def aclose(self) -> None:
        """Close the sessions of the running loop (the ASGI lifespan shutdown calls this)."""
        for session in (self._sessions.pop() or {}).values():
            await session.close()

    async def execute(self, request: RoutedRequest) -> HttpResponse:
        flow = self.flow(request, await self.store.asnapshot(request.plan.health_keys,
                                                             self.clock()))
        try:
            advanced = await self._advance(request, flow, next(flow))
            if isinstance(advanced, Fail):
                return self.failure_response(request, advanced.error, advanced.attempts)
            respond, opened = advanced
            if not request.stream:
                response = self.success(request, respond, opened)
                await self.finish(flow, Delivered(opened.usage))
                return response
            relay = self._relay(request, respond, opened, flow)
            await relay.__anext__()  # started: closing it now closes the upstream
            return self.streaming(request, respond, opened, relay)
        except asyncio.CancelledError:
            if flow.gi_frame is not None:  # not yet finished: the response never began
                await self.abandon(flow)
            raise

    async def _advance(
        self, request: RoutedRequest, flow: FlowGenerator, action: Any, resume: str = ""
    ) -> tuple[Respond, Opened] | Fail:
        """Carry out the flow's actions up to its Respond (with what answered) or Fail.

        ``resume``: the answer so far, when the attempts continue a broken stream."""
        opened: Opened | None = None
        while True:
            result: Any = None
            if isinstance(action, Attempt):
                if action.hedge is None:
                    outcome = await self._attempt(request, action.target, action.time_left,
                                                  action.first_byte, resume)
                    result, opened = _split(outcome)
                else:
                    result, opened = await self._hedged(request, action)
            elif isinstance(action, Sleep):
                await asyncio.sleep(action.seconds)
            elif isinstance(action, Respond):
                assert opened is not None
                return action, opened
            elif isinstance(action, Fail):
                flow.close()
                return action
            else:
                result = await self.step(action)
            action = flow.send(result)

    async def step(self, action: object) -> Any:
        """Carry out a signal or health-store action; return what the flow expects back."""
        if isinstance(action, Emit):
            self.emit(action)
        elif isinstance(action, Cooldown):
            await self.store.acooldown(action.key, action.until, action.kind.value)
        elif isinstance(action, Record):
            self.circuit_changed(await self.store.arecord(
                action.keys, action.ok, self.clock(), action.ttfb, action.total,
                action.kind, action.status,
            ))
        elif isinstance(action, Admit):
            admitted, changes = await self.store.aadmit(action.key, self.clock())
            self.circuit_changed(changes)
            return admitted
        else:  # pragma: no cover - a flow bug, never a client's
            raise RuntimeError(f"unexpected flow action {action!r}")
        return None

    async def finish(self, flow: FlowGenerator, delivered: Delivered) -> None:
        """Tell the flow the response is out, and run what it does last."""
        await self._drain(flow, flow.send, delivered)

    async def abandon(self, flow: FlowGenerator) -> None:
        """The client left before the response began: let the flow report it and end."""
        await self._drain(flow, flow.throw, ClientDisconnected())

    async def _drain(self, flow: FlowGenerator, first: Callable[[Any], object], arg: Any) -> None:
        try:
            action = first(arg)
            while True:
                action = flow.send(await self.step(action))
        except StopIteration:
            pass

    async def _hedged(
        self, request: RoutedRequest, action: Attempt
    ) -> tuple[Failure | Hedged | None, Opened | None]:
        """Race ``action.target`` against ``action.hedge``, started ``hedge_after`` later.

        The first to answer well wins; the other is cancelled at once, which closes its
        connection so the upstream stops generating.
        """
        assert action.hedge is not None and action.hedge_after is not None
        first = asyncio.ensure_future(
            self._attempt(request, action.target, action.time_left, action.first_byte))
        done, _ = await asyncio.wait({first}, timeout=action.hedge_after)
        if first in done:
            return _split(first.result())
        second = asyncio.ensure_future(self._attempt(
            request, action.hedge, action.time_left - action.hedge_after, action.first_byte))
        racing = {first: action.target, second: action.hedge}
        failures: list[tuple[Target, Failure]] = []
        pending = set(racing)
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                winners = []
                for task in done:
                    outcome = task.result()
                    if isinstance(outcome, Failure):
                        failures.append((racing[task], outcome))
                    else:
                        winners.append((racing[task], outcome))
                if winners:
                    for _, extra in winners[1:]:  # both answered in the same instant
                        extra.response.close()
                    return Hedged(winners[0][0], tuple(failures)), winners[0][1]
            return Hedged(None, tuple(failures)), None
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _attempt(
        self, request: RoutedRequest, target: Target, time_left: float,
        first_byte: float | None = None, resume: str = "",
    ) -> Failure | Opened:
        wire = self.wires[target.provider]
        try:
            if resume:
                request = self.resumed_request(request, wire, resume)
            upstream = wire.build_request(request, target)
        except UnsupportedRequest as refusal:
            return refusal.failure
        t = self.config.timeouts
        timeout = self._socket_timeouts(t, time_left)
        response: aiohttp.ClientResponse | None = None
        handed_over = False
        start = asyncio.get_running_loop().time()
        first_byte_limit = min(t.first_byte, time_left, first_byte or time_left)
        task = asyncio.current_task()
        assert task is not None  # an attempt always runs in a task
        # one coarse alarm (alarms.py): the first-byte limit, moved out to the deadline once
        # the answer began
        limit = alarm_at(start + first_byte_limit, task.cancel)
        try:
            response = await self.session(target.provider).request(
                upstream.method, upstream.url, data=upstream.content,
                headers=upstream.headers, timeout=timeout, allow_redirects=False,
            )
            if not 200 <= response.status < 300:
                body = await response.content.read(ERROR_BODY_LIMIT)
                return wire.classify_error(response.status, response.headers, body,
                                           self.clock())
            low_until = self.quota_low_until(response.headers, self.clock())
            if low_until is not None:
                await self.store.acooldown(target.key, low_until, FailureKind.QUOTA_LOW)
            if request.stream:
                opened = await self._first_event(wire.stream(request, target), response)
                handed_over = isinstance(opened, Opened)
                return opened
            if first_byte_limit < time_left and not response.content.is_eof():
                limit.cancel()
                limit = alarm_at(start + time_left, task.cancel)
            body = await response.read()
            failure, usage = wire.check_body(request.route, body)
            if failure is not None:
                return failure
            body = wire.response_body(request, target, body)
            return Opened(response, body=body, usage=usage)
        except asyncio.CancelledError:
            if not limit.fired or task.uncancel() > 0:
                raise  # not (only) the limit: the request itself is being cancelled
            return transport_failure(TimeoutError(), answered=response is not None,
                                     stream=request.stream)
        except TRANSPORT_ERRORS as exc:
            return transport_failure(exc, answered=response is not None, stream=request.stream)
        finally:
            limit.cancel()
            if response is not None and not handed_over:
                _done_with(response)

    @staticmethod
    async def _first_event(
        translator: StreamTranslator, response: aiohttp.ClientResponse
    ) -> Failure | Opened:
        """Read a stream until its first event: content means go, an error means fail over."""
        chunks = response.content.iter_any().__aiter__()
        first: list[bytes] = []
        async for chunk in chunks:
            out = translator.feed(chunk)
            if out:
                first.append(out)
            if translator.started:  # content came first: an error after it is relayed
                return Opened(response, stream=translator, first=b"".join(first), chunks=chunks)
            if translator.error is not None:
                return translator.error
        translator.close()
        return translator.error or transport_failure(EOFError(), answered=True, stream=True)

    async def _relay(self, request: RoutedRequest, respond: Respond, opened: Opened,
                     flow: FlowGenerator) -> AsyncIterator[bytes]:
        relay = self.relay_for(request, opened)
        outcome: Delivered | None = DISCONNECTED
        resuming = False
        try:
            yield b""
            while True:
                try:
                    while not relay.done:
                        out = relay.feed(await anext(opened.chunks, None))
                        if out:
                            yield out
                except TRANSPORT_ERRORS as exc:
                    relay.broken(exc)
                tail, ended = relay.end()
                if not isinstance(ended, Interrupted):
                    outcome = ended
                    if tail:
                        yield tail
                    return
                opened.response.close()  # an unfinished upstream must see its connection go
                assert relay.sent is not None
                resuming = True
                advanced = await self._advance(request, flow, flow.send(ended), relay.sent.text)
                resuming = False
                if isinstance(advanced, Fail):  # no target could continue: the flow is over
                    outcome = None
                    yield final_error_event(advanced.error)
                    return
                old, (respond, opened) = respond.target, advanced
                assert opened.stream is not None
                note, marker = self.resume_note(relay, old, respond)
                relay = relay.resumed(opened.stream, note, note["sent_tokens"])
                yield marker + relay.forward(opened.first)
        finally:
            if outcome is None or resuming:
                opened.response.close()
                if resuming:  # the client left while a continuation was being found
                    await self.abandon(flow)
            else:
                if outcome.failure is None:
                    _done_with(opened.response)
                else:  # an unfinished upstream must see its connection go at once
                    opened.response.close()
                await self.finish(flow, outcome)


def _done_with(response: aiohttp.ClientResponse) -> None:
    """Give the connection back to the pool when the whole body was read, else close it.

    Closing, not releasing, is what stops an upstream that is still generating (a client
    that left, a cancelled hedge); a body read to its end leaves a connection the next
    request can reuse, which saves a TCP handshake per stream and per failed attempt.
    """
    if response.content.at_eof():
        response.release()  # aiohttp still closes it if the connection cannot be reused
    else:
        response.close()


def _split(outcome: Failure | Opened) -> tuple[Failure | None, Opened | None]:
    return (outcome, None) if isinstance(outcome, Failure) else (None, outcome)
