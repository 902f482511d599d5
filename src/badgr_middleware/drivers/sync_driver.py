"""The sync driver: runs a flow with ``httpx.Client``, for WSGI servers and threads.

One client per provider per process, shared by every thread (``httpx.Client`` is thread-safe).
It does not hedge: an attempt with a hedge is sent to its first target only.
Timeouts: a socket read may wait ``min(first_byte, read)`` seconds (httpx cannot change the
read timeout mid-response), and the first-byte limit is also checked between chunks.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx

from ..messages import HttpResponse
from ..providers.common import UnsupportedRequest
from ..routing.flow import (
    Admit,
    Attempt,
    ClientDisconnected,
    Cooldown,
    Emit,
    Fail,
    FlowGenerator,
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

__all__ = ["SyncDriver"]

POOL = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30)


class SyncDriver(DriverBase):
    """Executes routed requests on the calling thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._clients: dict[str, httpx.Client] = {}
        self._lock = threading.Lock()

    def client(self, provider: str) -> httpx.Client:
        client = self._clients.get(provider)
        if client is None:
            with self._lock:
                client = self._clients.get(provider)
                if client is None:
                    client = self._clients[provider] = httpx.Client(
                        limits=POOL, timeout=None, follow_redirects=False
                    )
        return client

    def close(self) -> None:
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            client.close()

    def execute(self, request: RoutedRequest) -> HttpResponse:
        snapshot = self.store.snapshot(request.plan.health_keys, self.clock())
        flow = self.flow(request, snapshot)
        advanced = self._advance(request, flow, next(flow))
        if isinstance(advanced, Fail):
            return self.failure_response(request, advanced.error, advanced.attempts)
        respond, opened = advanced
        if not request.stream:
            response = self.success(request, respond, opened)
            self.finish(flow, Delivered(opened.usage))
            return response
        relay = self._relay(request, respond, opened, flow)
        next(relay)  # started: closing it now closes the upstream
        return self.streaming(request, respond, opened, relay)

    def _advance(
        self, request: RoutedRequest, flow: FlowGenerator, action: Any, resume: str = ""
    ) -> tuple[Respond, Opened] | Fail:
        """Carry out the flow's actions up to its Respond (with what answered) or Fail.

        ``resume``: the answer so far, when the attempts continue a broken stream."""
        opened: Opened | None = None
        while True:
            result: Any = None
            if isinstance(action, Attempt):
                outcome = self._attempt(request, action.target, action.time_left,
                                        action.first_byte, resume)
                if isinstance(outcome, Failure):
                    result = outcome
                else:
                    opened = outcome
            elif isinstance(action, Sleep):
                time.sleep(action.seconds)
            elif isinstance(action, Respond):
                assert opened is not None
                return action, opened
            elif isinstance(action, Fail):
                flow.close()
                return action
            else:
                result = self.step(action)
            action = flow.send(result)

    def step(self, action: object) -> Any:
        """Carry out a signal or health-store action; return what the flow expects back."""
        if isinstance(action, Emit):
            self.emit(action)
        elif isinstance(action, Cooldown):
            self.store.cooldown(action.key, action.until, action.kind.value)
        elif isinstance(action, Record):
            self.circuit_changed(self.store.record(
                action.keys, action.ok, self.clock(), action.ttfb, action.total,
                action.kind, action.status,
            ))
        elif isinstance(action, Admit):
            admitted, changes = self.store.admit(action.key, self.clock())
            self.circuit_changed(changes)
            return admitted
        else:  # pragma: no cover - a flow bug, never a client's
            raise RuntimeError(f"unexpected flow action {action!r}")
        return None

    def finish(self, flow: FlowGenerator, delivered: Delivered) -> None:
        """Tell the flow the response is out, and run what it does last."""
        self._drain(flow, flow.send, delivered)

    def abandon(self, flow: FlowGenerator) -> None:
        """The client left before the response began: let the flow report it and end."""
        self._drain(flow, flow.throw, ClientDisconnected())

    def _drain(self, flow: FlowGenerator, first: Callable[[Any], object], arg: Any) -> None:
        try:
            action = first(arg)
            while True:
                action = flow.send(self.step(action))
        except StopIteration:
            pass

    def _attempt(
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
        client = self.client(target.provider)
        t = self.config.timeouts
        first_byte_limit = min(t.first_byte, time_left, first_byte or time_left)
        first_byte_by = self.clock() + first_byte_limit
        read = min(t.read, first_byte_limit)
        connect = min(t.connect, time_left)
        http_request = client.build_request(
            upstream.method, upstream.url, headers=upstream.headers, content=upstream.content,
            timeout=httpx.Timeout(connect=connect, read=read, write=read, pool=connect),
        )
        response: httpx.Response | None = None
        handed_over = False
        try:
            response = client.send(http_request, stream=True)
            if not 200 <= response.status_code < 300:
                body = _read_capped(response)
                return wire.classify_error(response.status_code, response.headers, body,
                                           self.clock())
            low_until = self.quota_low_until(response.headers, self.clock())
            if low_until is not None:
                self.store.cooldown(target.key, low_until, FailureKind.QUOTA_LOW)
            if not request.stream:
                body = _read_until(response, deadline=self.clock() + time_left, clock=self.clock)
                failure, usage = wire.check_body(request.route, body)
                if failure is not None:
                    return failure
                body = wire.response_body(request, target, body)
                return Opened(response, body=body, usage=usage)
            translator = wire.stream(request, target)
            chunks = response.iter_bytes()
            first: list[bytes] = []
            for chunk in chunks:
                out = translator.feed(chunk)
                if out:
                    first.append(out)
                if translator.started:  # content came first: an error after it is relayed
                    handed_over = True
                    return Opened(response, stream=translator, first=b"".join(first),
                                  chunks=chunks)
                if translator.error is not None:
                    return translator.error
                if self.clock() > first_byte_by:
                    raise TimeoutError
            translator.close()
            return translator.error or transport_failure(EOFError(), answered=True, stream=True)
        except TRANSPORT_ERRORS as exc:
            return transport_failure(exc, answered=response is not None, stream=request.stream)
        finally:
            if response is not None and not handed_over:
                response.close()

    def _relay(self, request: RoutedRequest, respond: Respond, opened: Opened,
               flow: FlowGenerator) -> Iterator[bytes]:
        relay = self.relay_for(request, opened)
        outcome: Delivered | None = DISCONNECTED
        resuming = False
        try:
            yield b""
            while True:
                try:
                    while not relay.done:
                        out = relay.feed(next(opened.chunks, None))
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
                opened.response.close()
                assert relay.sent is not None
                resuming = True
                advanced = self._advance(request, flow, flow.send(ended), relay.sent.text)
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
            opened.response.close()
            if resuming:  # the client left while a continuation was being found
                self.abandon(flow)
            elif outcome is not None:
                self.finish(flow, outcome)


def _read_until(response: httpx.Response, *, deadline: float, clock: Callable[[], float]
                ) -> bytes:
    """The whole body, but never past the request's deadline (an upstream may trickle)."""
    parts: list[bytes] = []
    for chunk in response.iter_bytes():
        parts.append(chunk)
        if clock() > deadline:
            raise TimeoutError
    return b"".join(parts)


def _read_capped(response: httpx.Response) -> bytes:
    parts: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= ERROR_BODY_LIMIT:
            break
    return b"".join(parts)[:ERROR_BODY_LIMIT]
