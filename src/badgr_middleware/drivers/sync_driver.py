"""The sync driver: runs a flow with ``httpx.Client``, for WSGI servers and threads.

One client per provider per process, shared by every thread (``httpx.Client`` is thread-safe).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

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
        flow = self.flow(request)
        action = next(flow)
        opened: Opened | None = None
        while True:
            result: Failure | None = None
            if isinstance(action, Attempt):
                outcome = self._attempt(request, action)
                if isinstance(outcome, Failure):
                    result = outcome
                else:
                    opened = outcome
            elif isinstance(action, Sleep):
                time.sleep(action.seconds)
            elif isinstance(action, Respond):
                assert opened is not None
                if not request.stream:
                    return self.success(request, action, opened, flow)
                relay = self._relay(opened, flow)
                next(relay)  # started: closing it now closes the upstream
                return self.streaming(request, action, opened, relay)
            elif isinstance(action, Fail):
                flow.close()
                return self.failure_response(request, action.error, action.attempts)
            else:
                self.apply(action)
            action = flow.send(result)

    def _attempt(self, request: RoutedRequest, action: Attempt) -> Failure | Opened:
        target = action.target
        wire = self.wires[target.provider]
        upstream = wire.build_request(request, target)
        client = self.client(target.provider)
        deadline = self.clock() + action.time_left
        http_request = client.build_request(
            upstream.method, upstream.url, headers=upstream.headers, content=upstream.content,
            timeout=self.timeout(action.time_left),
        )
        response: httpx.Response | None = None
        handed_over = False
        try:
            response = client.send(http_request, stream=True)
            if not 200 <= response.status_code < 300:
                body = _read_capped(response)
                return wire.classify_error(response.status_code, response.headers, body,
                                           self.clock())
            if not request.stream:
                body = response.read()
                failure, usage = wire.check_body(request.route, body)
                return failure or Opened(response, body=body, usage=usage)
            translator = wire.stream()
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
                if self.clock() > deadline:
                    raise TimeoutError
            translator.close()
            return translator.error or transport_failure(EOFError(), answered=True, stream=True)
        except TRANSPORT_ERRORS as exc:
            return transport_failure(exc, answered=response is not None, stream=request.stream)
        finally:
            if response is not None and not handed_over:
                response.close()

    def _relay(self, opened: Opened, flow: FlowGenerator) -> Iterator[bytes]:
        assert opened.stream is not None
        relay = Relay(opened.stream)
        outcome = DISCONNECTED
        try:
            yield b""
            try:
                while not relay.done:
                    out = relay.feed(next(opened.chunks, None))
                    if out:
                        yield out
            except TRANSPORT_ERRORS as exc:
                yield relay.broken(exc)
            outcome = relay.outcome()
        finally:
            opened.response.close()
            self.finish(flow, outcome)



def _read_capped(response: httpx.Response) -> bytes:
    parts: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= ERROR_BODY_LIMIT:
            break
    return b"".join(parts)[:ERROR_BODY_LIMIT]
