"""What the sync and async drivers share: everything but the I/O itself."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx

from .. import signals
from ..errors import ApiError
from ..health import HealthStore, KeyHealth, LatencyStats
from ..messages import HttpResponse
from ..providers.base import StreamTranslator, Wire
from ..routing.flow import Emit, Flow, FlowGenerator, Respond, Unavailable
from ..routing.outcomes import Delivered, Failure, FailureKind
from ..routing.plan import RoutedRequest, Target
from ..signals import CircuitChanged
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
    stream: StreamTranslator | None = None
    first: bytes = b""
    chunks: Any = None  # the upstream byte iterator, already started


_CIRCUIT_SIGNALS = {
    "open": signals.circuit_opened,
    "half_open": signals.circuit_half_opened,
    "closed": signals.circuit_closed,
}


def split_snapshot(
    snapshot: Mapping[str, KeyHealth], now: float
) -> tuple[dict[str, Unavailable], frozenset[str], dict[str, LatencyStats]]:
    """What the flow needs from a health snapshot: who is out until when, which breakers
    need a probe admitted first, and latency statistics."""
    unavailable: dict[str, Unavailable] = {}
    half_open: set[str] = set()
    latency: dict[str, LatencyStats] = {}
    for key, health in snapshot.items():
        if health.cooldown_until is not None and health.cooldown_until > now:
            unavailable[key] = Unavailable(health.cooldown_until,
                                           FailureKind(health.cooldown_kind))
        if health.breaker == "open" and health.open_until is not None and (
            health.open_until > now
        ):
            current = unavailable.get(key)
            if current is None or current.until < health.open_until:
                unavailable[key] = Unavailable(health.open_until, FailureKind.CIRCUIT_OPEN)
        elif health.breaker != "closed":
            half_open.add(key)
        if health.latency is not None:
            latency[key] = health.latency
    return unavailable, frozenset(half_open), latency


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

    def __init__(self, stream: StreamTranslator) -> None:
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
    """Routing glue around a flow: health snapshots, signals, response headers."""

    def __init__(
        self,
        config: Any,
        wires: Mapping[str, Wire],
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
        # providers to try last (their official status page reports a major outage); the
        # engine replaces this with its status poller's view, read without any I/O
        self.deprioritised: Callable[[], frozenset[str]] = frozenset

    @staticmethod
    def health_keys(request: RoutedRequest) -> list[str]:
        """Every key whose health the request's plan depends on: targets and providers."""
        keys: dict[str, None] = {}
        for target in request.plan.targets:
            keys[target.key] = None
            keys[target.provider] = None
        return list(keys)

    def flow(self, request: RoutedRequest, snapshot: Mapping[str, KeyHealth]) -> FlowGenerator:
        cfg = self.config
        unavailable, half_open, latency = split_snapshot(snapshot, self.clock())
        return Flow(
            request,
            retry=cfg.retry,
            cooldowns=cfg.cooldowns,
            budget=cfg.timeouts.deadline,
            unavailable=unavailable,
            half_open=half_open,
            latency=latency,
            deprioritised=self.deprioritised(),
            clock=self.clock,
            rng=self.rng,
        ).run()

    def emit(self, action: Emit) -> None:
        signals.emit(action.signal, self._sender(), action.event)

    def circuit_changed(self, changes: list[CircuitChanged]) -> None:
        for change in changes:
            signals.emit(_CIRCUIT_SIGNALS[change.state], self._sender(), change)

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

    def success(self, request: RoutedRequest, respond: Respond, opened: Opened) -> HttpResponse:
        """The response to a non-streaming request."""
        headers = JSON_HEADERS + self.served_headers(request, respond.target, respond.attempts)
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
