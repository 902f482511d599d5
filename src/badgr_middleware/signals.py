"""Blinker signals for every routing decision, with frozen-dataclass payloads.

Connect with ``@signals.failover.connect`` (blinker holds receivers weakly unless
``weak=False``). Each receiver is called as ``receiver(sender, event=<payload>)``, where
``sender`` is the engine (or the object an adapter passed, such as a Flask app).

Payloads never carry message content or keys. A receiver that raises is logged on the
``badgr_middleware.signals`` logger and never breaks a request.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from blinker import Namespace, Signal

__all__ = [
    "AttemptFailed",
    "AttemptRecord",
    "CircuitChanged",
    "Failover",
    "RequestFailed",
    "RequestFinished",
    "RequestStarted",
    "RetryScheduled",
    "StoreChanged",
    "StreamResumed",
    "attempt_failed",
    "circuit_closed",
    "circuit_half_opened",
    "circuit_opened",
    "emit",
    "failover",
    "request_failed",
    "request_finished",
    "request_started",
    "retry_scheduled",
    "store_degraded",
    "store_recovered",
    "stream_resumed",
]

logger = logging.getLogger(__name__)

_signals = Namespace()

request_started = _signals.signal("request_started", doc="A client request was accepted.")
attempt_failed = _signals.signal("attempt_failed", doc="One upstream attempt failed.")
retry_scheduled = _signals.signal("retry_scheduled", doc="The same target is retried after a wait.")
failover = _signals.signal("failover", doc="The request moves on to the next target.")
circuit_opened = _signals.signal("circuit_opened", doc="A circuit breaker opened.")
circuit_half_opened = _signals.signal("circuit_half_opened", doc="A breaker admits probes.")
circuit_closed = _signals.signal("circuit_closed", doc="A circuit breaker closed again.")
request_finished = _signals.signal("request_finished", doc="A request was served.")
request_failed = _signals.signal("request_failed", doc="A request ended in an error.")
store_degraded = _signals.signal(
    "store_degraded", doc="The shared health store is unreachable; local state is used."
)
store_recovered = _signals.signal("store_recovered", doc="The shared health store is back.")
stream_resumed = _signals.signal(
    "stream_resumed", doc="A stream that broke mid-answer continues on another target."
)


@dataclass(frozen=True, slots=True)
class RequestStarted:
    request_id: str
    route: str
    model: str
    stream: bool
    targets: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class AttemptFailed:
    request_id: str
    route: str
    provider: str
    model: str
    attempt: int
    error_kind: str
    status: int | None
    latency: float
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class RetryScheduled:
    request_id: str
    route: str
    provider: str
    model: str
    attempt: int
    delay: float
    error_kind: str


@dataclass(frozen=True, slots=True)
class Failover:
    request_id: str
    route: str
    from_provider: str
    from_model: str
    to_provider: str
    to_model: str
    error_kind: str
    attempt: int


@dataclass(frozen=True, slots=True)
class CircuitChanged:
    key: str
    state: str
    reason: str
    until: float | None = None


@dataclass(frozen=True, slots=True)
class StoreChanged:
    """The shared store went away (``state="degraded"``) or came back (``"recovered"``)."""

    backend: str
    state: str
    error: str | None = None  # the error's class name, never its message (it may hold a URL)


@dataclass(frozen=True, slots=True)
class AttemptRecord:
    """One attempt of a request, as ``x-badgr-attempts-detail`` and the end signals show it.

    ``outcome`` is ``"ok"``, a failure kind, ``"cancelled"`` (a hedge that lost) or
    ``"streaming"`` (in the headers of a stream still running); ``cost`` is in USD when the
    target's price and the attempt's usage (or, for a stream that broke, an estimate of it)
    are known; ``resumed`` marks an attempt that continued a broken stream.
    """

    target: str
    outcome: str
    status: int | None
    latency: float
    cost: float | None = None
    resumed: bool = False

    def as_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"target": self.target, "outcome": self.outcome,
                                "status": self.status, "ms": round(self.latency * 1000, 1),
                                "cost": None if self.cost is None else round(self.cost, 8)}
        if self.resumed:
            data["resumed"] = True
        return data


@dataclass(frozen=True, slots=True)
class StreamResumed:
    """A stream broke after ``sent_tokens`` (estimated) reached the client and continues on
    ``to_provider``/``to_model``."""

    request_id: str
    route: str
    from_provider: str
    from_model: str
    to_provider: str
    to_model: str
    error_kind: str
    sent_tokens: int
    attempt: int


@dataclass(frozen=True, slots=True)
class RequestFinished:
    request_id: str
    route: str
    provider: str
    model: str
    attempts: int
    latency: float
    stream: bool
    status: int = 200
    usage: dict[str, Any] | None = field(default=None, hash=False)
    cost: float | None = None  # USD over every attempt, where prices are known
    attempts_detail: tuple[AttemptRecord, ...] = ()


@dataclass(frozen=True, slots=True)
class RequestFailed:
    request_id: str
    route: str
    status: int
    error_kind: str
    attempts: int
    latency: float
    stream: bool
    provider: str | None = None
    model: str | None = None
    cost: float | None = None
    attempts_detail: tuple[AttemptRecord, ...] = ()


def emit(signal: Signal, sender: Any, event: object) -> None:
    """Send ``event`` to every receiver of ``signal``; a receiver's exception is only logged.

    Costs one attribute check when nobody listens.
    """
    if not signal.receivers:
        return
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, event=event)
        except Exception:
            logger.exception("badgr signal receiver %r for %s raised", receiver, signal.name)
