"""What the routing flow needs to know about a key, and the interface every store provides.

A *key* is a provider name (``openrouter``) or a target (``openrouter/openai/gpt-4o``).
Stores keep, per key: a cooldown (from a 429, 402, 401 or 404), a circuit breaker, and
latency statistics. Every method has a sync form (for the sync driver) and an async form
(``a``-prefixed, for the async driver); the in-memory store's async forms just call the sync
ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from ..signals import CircuitChanged
from .latency import LatencyStats

__all__ = ["HISTORY_MINUTES", "STATS_TTL", "ErrorInfo", "HealthStore", "KeyHealth"]

HISTORY_MINUTES = 60  # per-minute result counts kept for the status page
STATS_TTL = 86400.0  # seconds the request statistics of a key live after its last result


@dataclass(frozen=True, slots=True)
class ErrorInfo:
    """The last failure counted for a key: its kind, upstream status (if any) and time."""

    kind: str
    status: int | None
    at: float


@dataclass(slots=True)  # not frozen: built per request, and frozen ones cost 5x to build
class KeyHealth:
    """One key's health at one moment.

    The request statistics (``served`` .. ``last_error``) are filled in only by a snapshot
    taken with ``stats=True`` (the status page); routing never needs them.
    """

    cooldown_until: float | None = None
    cooldown_kind: str | None = None
    breaker: str = "closed"  # closed | open | half_open
    open_until: float | None = None  # when an open breaker starts admitting probes
    latency: LatencyStats | None = None
    served: int = 0  # successful results counted (within STATS_TTL of the last one)
    failed: int = 0  # failed results counted
    # (successes, failures) per minute, oldest first, the last entry being the current minute
    history: tuple[tuple[int, int], ...] = ()
    last_error: ErrorInfo | None = None


class HealthStore(Protocol):
    def snapshot(
        self, keys: Sequence[str], now: float, *, stats: bool = False
    ) -> dict[str, KeyHealth]:
        """The health of each of ``keys`` (keys with nothing recorded may be left out);
        with ``stats``, the request statistics too (over the last HISTORY_MINUTES)."""
        ...

    def record(
        self, keys: Sequence[str], ok: bool, now: float, ttfb: float | None = None,
        total: float | None = None, kind: str | None = None, status: int | None = None,
    ) -> list[CircuitChanged]:
        """Count one result for each key's breaker and statistics (and latency, when given);
        a failure's ``kind`` and ``status`` become each key's last error."""
        ...

    def cooldown(self, key: str, until: float, kind: str) -> None:
        """Keep ``key`` out until ``until`` (an earlier cooldown never shortens a later one)."""
        ...

    def admit(self, key: str, now: float) -> tuple[bool, list[CircuitChanged]]:
        """Take a probe slot of a half-open breaker; False when none is free."""
        ...

    async def asnapshot(
        self, keys: Sequence[str], now: float, *, stats: bool = False
    ) -> dict[str, KeyHealth]: ...

    async def arecord(
        self, keys: Sequence[str], ok: bool, now: float, ttfb: float | None = None,
        total: float | None = None, kind: str | None = None, status: int | None = None,
    ) -> list[CircuitChanged]: ...

    async def acooldown(self, key: str, until: float, kind: str) -> None: ...

    async def aadmit(self, key: str, now: float) -> tuple[bool, list[CircuitChanged]]: ...
