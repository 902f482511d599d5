"""What the sync and async drivers share: everything but the I/O itself."""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
import httpx
from blinker import Signal

from .. import signals
from ..errors import ApiError
from ..health import HealthStore, KeyHealth, LatencyStats
from ..messages import HttpResponse
from ..pricing import estimate_tokens, usage_cost
from ..providers.base import StreamTranslator, Wire
from ..providers.quota import read_quota
from ..resume import Continuation, SentLog, continuation_body, resume_marker
from ..routing.flow import Emit, Flow, FlowGenerator, Interrupted, Respond, Unavailable
from ..routing.outcomes import Delivered, Failure, FailureKind
from ..routing.plan import RoutedRequest, Target
from ..signals import AttemptRecord, CircuitChanged
from ..sse import encode_event

__all__ = ["DriverBase", "Opened", "Relay", "stream_interrupted", "transport_failure"]

# response headers that report remaining quota; one is enough to look further
QUOTA_HEADERS = (
    "x-ratelimit-remaining-requests", "x-ratelimit-remaining-tokens",
    "anthropic-ratelimit-requests-remaining", "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-input-tokens-remaining", "anthropic-ratelimit-output-tokens-remaining",
)
QUOTA_LOW_FOR = 60.0  # seconds a low-quota target is tried last when no reset time is given

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


_NO_KEYS: frozenset[str] = frozenset()


def _has_receivers(signal: Signal) -> bool:
    """Whether anything listens to ``signal`` (so its payload is worth building)."""
    return bool(signal.receivers)


def split_snapshot(
    snapshot: Mapping[str, KeyHealth], now: float
) -> tuple[dict[str, Unavailable], frozenset[str], dict[str, LatencyStats], frozenset[str]]:
    """What the flow needs from a health snapshot: who is out until when, which breakers
    need a probe admitted first, latency statistics, and who is low on quota."""
    unavailable: dict[str, Unavailable] = {}
    latency: dict[str, LatencyStats] = {}
    half_open: list[str] = []
    low_quota: list[str] = []
    for key, health in snapshot.items():
        if health.latency is not None:
            latency[key] = health.latency
        if health.cooldown_until is None and health.breaker == "closed":
            continue  # healthy: the common case
        if health.cooldown_until is not None and health.cooldown_until > now:
            if health.cooldown_kind == FailureKind.QUOTA_LOW:
                low_quota.append(key)  # still served, but last
            else:
                unavailable[key] = Unavailable(health.cooldown_until,
                                               FailureKind(health.cooldown_kind))
        if health.breaker == "open" and health.open_until is not None and (
            health.open_until > now
        ):
            current = unavailable.get(key)
            if current is None or current.until < health.open_until:
                unavailable[key] = Unavailable(health.open_until, FailureKind.CIRCUIT_OPEN)
        elif health.breaker != "closed":
            half_open.append(key)
    return (unavailable, frozenset(half_open) if half_open else _NO_KEYS, latency,
            frozenset(low_quota) if low_quota else _NO_KEYS)


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
        kind = FailureKind.STREAM_IDLE
        reason = "the upstream went silent for longer than the read timeout"
    else:
        kind = FailureKind.STREAM_BROKEN
        reason = "the upstream connection broke"
    return Failure(kind, None, f"The stream was interrupted: {reason}.", "stream_interrupted")


def final_error_event(error: ApiError) -> bytes:
    """The in-band error event that ends a stream no target could continue."""
    return encode_event(error.body())


def error_chunk(failure: Failure) -> bytes:
    """The in-band error event that ends a stream whose upstream broke after the first byte."""
    error = ApiError(502, failure.message or "The upstream stream failed.",
                     type="upstream_error", code=failure.code or failure.kind.value)
    return encode_event(error.body())


class Relay:
    """What the client gets as upstream chunks arrive after the first event. No I/O.

    Feed it each upstream chunk, or ``None`` at the end of the body, and :meth:`broken` the
    exception that broke the connection; it answers with the bytes to send. Once
    :attr:`done`, :meth:`end` gives the last bytes and the outcome: a stream that broke or
    ended unfinished gets one error event (the upstream's own, if it sent one), unless it
    may resume (a ``sent`` log is kept), in which case the outcome is :class:`Interrupted`
    and nothing more is sent.
    """

    __slots__ = ("_stream", "_failure", "_ended", "sent", "_continuation")

    def __init__(self, stream: StreamTranslator, sent: SentLog | None = None,
                 continuation: Continuation | None = None) -> None:
        self._stream = stream
        self._failure: Failure | None = None
        self._ended = False
        self.sent = sent
        self._continuation = continuation

    @property
    def done(self) -> bool:
        return self._ended or self._stream.finished or self._stream.error is not None

    def feed(self, chunk: bytes | None) -> bytes:
        if chunk is None:
            self._ended = True
            return self.forward(self._stream.close())
        return self.forward(self._stream.feed(chunk))

    def forward(self, out: bytes) -> bytes:
        """Bytes of the translated stream on their way to the client."""
        if self._continuation is not None and out:
            out = self._continuation.feed(out)
        if self.sent is not None and out:
            self.sent.feed(out)
        return out

    def broken(self, exc: BaseException) -> None:
        self._ended = True
        self._failure = stream_interrupted(exc)

    def end(self) -> tuple[bytes, Delivered | Interrupted]:
        stream = self._stream
        failure = self._failure or stream.error
        if failure is None:
            return b"", Delivered(stream.usage)
        sent = self.sent
        if sent is not None:
            why = sent.why_not()
            if why is None:
                return b"", Interrupted(failure, estimate_tokens(sent.text))
            failure = dataclasses.replace(failure, message=(
                f"{failure.message.rstrip('.')}; {why}."))
        if self._failure is None and stream.error_in_band and stream.error_event:
            return stream.error_event, Delivered(stream.usage, failure)
        return error_chunk(failure), Delivered(stream.usage, failure)

    def resumed(self, stream: StreamTranslator, note: dict[str, Any],
                sent_tokens: int) -> Relay:
        """The relay of the continuation that takes over from this one."""
        assert self.sent is not None
        continuation = Continuation(self.sent, note, sent_tokens)
        return Relay(stream, self.sent, continuation)


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
        self.deprioritised: Callable[[], frozenset[str]] = lambda: _NO_KEYS

    def flow(self, request: RoutedRequest, snapshot: Mapping[str, KeyHealth]) -> FlowGenerator:
        cfg = self.config
        unavailable, half_open, latency, low_quota = split_snapshot(snapshot, self.clock())
        budget = cfg.timeouts.deadline
        if request.deadline is not None:
            budget = min(budget, request.deadline)
        return Flow(
            request,
            retry=cfg.retry,
            cooldowns=cfg.cooldowns,
            budget=budget,
            unavailable=unavailable,
            half_open=half_open,
            latency=latency,
            low_quota=low_quota,
            deprioritised=self.deprioritised(),
            listening=_has_receivers,
            clock=self.clock,
            rng=self.rng,
        ).run()

    def quota_low_until(self, headers: Mapping[str, str], now: float) -> float | None:
        """When a 2xx answer's rate-limit headers say the target is nearly out of quota:
        until when to try it last (the limit's reset), else None."""
        reserve = self.config.quota_reserve
        if not reserve or not any(name in headers for name in QUOTA_HEADERS):
            return None
        reading = read_quota(headers, now)
        if reading is None or reading.remaining > reserve:
            return None
        return now + (reading.reset_after if reading.reset_after else QUOTA_LOW_FOR)

    @staticmethod
    def resumed_request(request: RoutedRequest, wire: Wire, text: str) -> RoutedRequest:
        """``request`` asking ``wire``'s upstream to continue the answer ``text``."""
        body = continuation_body(request.body, text, prefill=wire.prefill)
        return dataclasses.replace(request, body=body, raw=b"")

    @staticmethod
    def resume_note(relay: Relay, old: Target, respond: Respond) -> tuple[dict[str, Any], bytes]:
        """The ``badgr`` field of a resumed answer's final chunks, and the SSE comment that
        marks where it continues."""
        assert relay.sent is not None
        tokens = estimate_tokens(relay.sent.text)
        target = respond.target
        note = {"resumed": True, "from": old.key, "to": target.key, "sent_tokens": tokens,
                "attempts": respond.attempts}
        return note, resume_marker(old.key, target.key, tokens)

    def emit(self, action: Emit) -> None:
        signals.emit(action.signal, self._sender(), action.event)

    def circuit_changed(self, changes: list[CircuitChanged]) -> None:
        for change in changes:
            signals.emit(_CIRCUIT_SIGNALS[change.state], self._sender(), change)

    @staticmethod
    def served_headers(
        request: RoutedRequest, respond: Respond, usage: dict[str, Any] | None = None,
        *, streaming: bool = False,
    ) -> list[tuple[str, str]]:
        target = respond.target
        headers = [
            ("x-badgr-provider", target.provider),
            ("x-badgr-model", target.model),
            ("x-badgr-attempts", str(respond.attempts)),
            ("x-request-id", request.request_id),
        ]
        if target.price is None and not request.attempts_detail:
            return headers  # nothing to say about cost: the common case stays cheap
        cost = None if streaming else usage_cost(target.price, usage)
        current = AttemptRecord(target.key, "streaming" if streaming else "ok", 200,
                                respond.latency, cost)
        attempts = (*respond.detail, current)
        if not streaming:
            costs = [a.cost for a in attempts if a.cost is not None]
            if costs:
                headers.append(("x-badgr-cost", f"{sum(costs):.8f}".rstrip("0").rstrip(".")))
        if request.attempts_detail:
            headers.append(("x-badgr-attempts-detail", json.dumps(
                [a.as_json() for a in attempts], separators=(",", ":"))))
        return headers

    def success(self, request: RoutedRequest, respond: Respond, opened: Opened) -> HttpResponse:
        """The response to a non-streaming request."""
        headers = JSON_HEADERS + self.served_headers(request, respond, opened.usage)
        return HttpResponse(200, headers, opened.body)

    def streaming(self, request: RoutedRequest, respond: Respond, opened: Opened,
                  relay: Any) -> HttpResponse:
        """The response to a streaming request: the first bytes, then the started relay."""
        headers = SSE_HEADERS + self.served_headers(request, respond, streaming=True)
        return HttpResponse(200, headers, opened.first, stream=relay)

    @staticmethod
    def relay_for(request: RoutedRequest, opened: Opened) -> Relay:
        """The relay of a stream; it logs what is sent when the request may resume."""
        assert opened.stream is not None
        sent = None
        if request.resume is not None and request.route == "chat/completions":
            sent = SentLog(request.resume.max_sent_tokens)
            sent.feed(opened.first)
        return Relay(opened.stream, sent)

    @staticmethod
    def failure_response(request: RoutedRequest, error: ApiError, attempts: int) -> HttpResponse:
        headers = [
            *JSON_HEADERS,
            ("x-badgr-attempts", str(attempts)),
            ("x-request-id", request.request_id),
            *error.headers,
        ]
        return HttpResponse(error.status, headers, error.body())
