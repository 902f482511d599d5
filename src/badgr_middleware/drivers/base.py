"""What the sync and async drivers share: everything but the I/O itself."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from .. import signals
from ..errors import ApiError
from ..health import HealthStore
from ..messages import HttpResponse
from ..providers.openai import OpenAICompatible, OpenAIStream
from ..routing.flow import ClientDisconnected, Cooldown, Emit, Flow, FlowGenerator, Respond
from ..routing.outcomes import Delivered, Failure, FailureKind
from ..routing.plan import RoutedRequest, Target
from ..sse import encode_event

__all__ = ["DriverBase", "Opened", "Relay", "stream_interrupted", "transport_failure"]

ERROR_BODY_LIMIT = 256 * 1024  # an upstream error body longer than this is cut when read
DISCONNECTED = Delivered(None, Failure(FailureKind.CLIENT_DISCONNECTED, 499,
                                       "The client went away.", "client_disconnected"))

SSE_HEADERS = [
    ("content-type", "text/event-stream; charset=utf-8"),
    ("cache-control", "no-cache"),
    ("x-accel-buffering", "no"),
]
JSON_HEADERS = [("content-type", "application/json")]

# httpx's errors (sync driver), aiohttp's (async driver), and the OS's under both
TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httpx.HTTPError, aiohttp.ClientError, OSError)


@dataclass(slots=True)
class Opened:
    """An upstream answer that passed its first check and is ready for the client."""

    response: Any  # httpx.Response (sync driver) or aiohttp.ClientResponse (async driver)
    body: bytes = b""
    usage: dict[str, Any] | None = None
    stream: OpenAIStream | None = None
    first: bytes = b""
    chunks: Any = None  # the upstream byte iterator, already started


def transport_failure(exc: BaseException, *, answered: bool, stream: bool) -> Failure:
    """Classify an exception raised while talking to an upstream."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        connect_timeouts = (httpx.ConnectTimeout, httpx.PoolTimeout, aiohttp.ConnectionTimeoutError)
        if isinstance(exc, connect_timeouts) and not answered:
            return Failure(FailureKind.CONNECT, None, "Could not connect to the upstream in time.",
                           "connect_timeout")
        return Failure(FailureKind.TIMEOUT, None, "The upstream did not answer in time.",
                       "upstream_timeout")
    if not answered:
        return Failure(FailureKind.CONNECT, None, "Could not reach the upstream.",
                       "connect_error")
    kind = FailureKind.STREAM_BROKEN if stream else FailureKind.BAD_RESPONSE
    return Failure(kind, None, "The upstream connection broke mid-answer.", "upstream_broken")


def stream_interrupted(exc: BaseException) -> Failure:
    """Classify an exception raised while relaying a stream the client has begun to receive."""
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        reason = "the upstream went silent for longer than the read timeout"
    else:
        reason = "the upstream connection broke"
    return Failure(FailureKind.STREAM_BROKEN, None, f"The stream was interrupted: {reason}.",
                   "stream_interrupted")


def error_chunk(failure: Failure) -> bytes:
    """The in-band error event that ends a stream whose upstream broke after the first byte."""
    error = ApiError(502, failure.message or "The upstream stream failed.",
                     type="upstream_error", code=failure.code or failure.kind.value)
    return encode_event(error.body())


class Relay:
    """What the client gets as upstream chunks arrive after the first event. No I/O.

    Feed it each upstream chunk, ``None`` at the end of the body, or the exception that broke
    the connection; it answers with the bytes to send. A stream that breaks, or ends without
    finishing, gets one error event at the end, unless the upstream already sent its own.
    """

    __slots__ = ("_stream", "_failure", "_ended")

    def __init__(self, stream: OpenAIStream) -> None:
        self._stream = stream
        self._failure: Failure | None = None
        self._ended = False

    @property
    def done(self) -> bool:
        return self._ended or self._stream.finished or self._stream.error is not None

    def feed(self, chunk: bytes | None) -> bytes:
        if chunk is None:
            self._ended = True
            return self._stream.close() + self._error_event()
        return self._stream.feed(chunk)

    def broken(self, exc: BaseException) -> bytes:
        self._ended = True
        self._failure = stream_interrupted(exc)
        return self._error_event()

    def outcome(self) -> Delivered:
        return Delivered(self._stream.usage, self._failure or self._stream.error)

    def _error_event(self) -> bytes:
        failure = self._failure or self._stream.error
        if failure is None or (self._failure is None and self._stream.error_in_band):
            return b""
        return error_chunk(failure)


class DriverBase:
    """Routing glue around a flow: signals, health, response headers."""

    def __init__(
        self,
        config: Any,
        wires: Mapping[str, OpenAICompatible],
        store: HealthStore,
        *,
        sender: Callable[[], object],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.wires = wires
        self.store = store
        self._sender = sender
        self.clock = clock
        self.rng = rng or random.Random()

    def flow(self, request: RoutedRequest) -> FlowGenerator:
        cfg = self.config
        return Flow(
            request,
            retry=cfg.retry,
            cooldowns=cfg.cooldowns,
            budget=cfg.timeouts.deadline,
            unavailable=self.store.unavailable(self.clock()),
            clock=self.clock,
            rng=self.rng,
        ).run()

    def timeout(self, time_left: float) -> httpx.Timeout:
        t = self.config.timeouts
        read = min(t.read, time_left)
        connect = min(t.connect, time_left)
        return httpx.Timeout(connect=connect, read=read, write=read, pool=connect)

    def apply(self, action: object) -> None:
        """Carry out the actions that need no waiting: signals and cooldowns."""
        if isinstance(action, Emit):
            signals.emit(action.signal, self._sender(), action.event)
        elif isinstance(action, Cooldown):
            self.store.cooldown(action.key, action.until, action.kind)
        else:  # pragma: no cover - a flow bug, never a client's
            raise RuntimeError(f"unexpected flow action {action!r}")

    def finish(self, flow: FlowGenerator, delivered: Delivered) -> None:
        """Tell the flow the response is out, and run what it does last."""
        with contextlib.suppress(StopIteration):
            self._drain(flow, flow.send(delivered))

    def abandon(self, flow: FlowGenerator) -> None:
        """The client left before the response began: let the flow report it and end."""
        with contextlib.suppress(StopIteration):
            self._drain(flow, flow.throw(ClientDisconnected()))

    def _drain(self, flow: FlowGenerator, action: object) -> None:
        while True:
            self.apply(action)
            action = flow.send(None)

    @staticmethod
    def served_headers(
        request: RoutedRequest, target: Target, attempts: int
    ) -> list[tuple[str, str]]:
        return [
            ("x-badgr-provider", target.provider),
            ("x-badgr-model", target.model),
            ("x-badgr-attempts", str(attempts)),
            ("x-request-id", request.request_id),
        ]

    def success(self, request: RoutedRequest, respond: Respond, opened: Opened,
                flow: FlowGenerator) -> HttpResponse:
        """The response to a non-streaming request; the flow learns it is delivered."""
        headers = JSON_HEADERS + self.served_headers(request, respond.target, respond.attempts)
        self.finish(flow, Delivered(opened.usage))
        return HttpResponse(200, headers, opened.body)

    def streaming(self, request: RoutedRequest, respond: Respond, opened: Opened,
                  relay: Any) -> HttpResponse:
        """The response to a streaming request: the first bytes, then the started relay."""
        headers = SSE_HEADERS + self.served_headers(request, respond.target, respond.attempts)
        return HttpResponse(200, headers, opened.first, stream=relay)

    @staticmethod
    def failure_response(request: RoutedRequest, error: ApiError, attempts: int) -> HttpResponse:
        headers = [
            *JSON_HEADERS,
            ("x-badgr-attempts", str(attempts)),
            ("x-request-id", request.request_id),
            *error.headers,
        ]
        return HttpResponse(error.status, headers, error.body())
