"""The per-process health store: the default, and the fallback when Redis is unreachable."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..signals import CircuitChanged
from . import breaker
from .latency import LatencyStats, update
from .store import HISTORY_MINUTES, STATS_TTL, ErrorInfo, KeyHealth

if TYPE_CHECKING:
    from ..config import BreakerPolicy

__all__ = ["MemoryHealthStore"]


class MemoryHealthStore:
    """Health of every key in this process; safe to share between threads and event loops."""

    def __init__(self, policy: BreakerPolicy | None = None) -> None:
        if policy is None:
            from ..config import BreakerPolicy

            policy = BreakerPolicy()
        self.policy = policy
        self._lock = threading.Lock()
        self._cooldowns: dict[str, tuple[float, str]] = {}
        self._breakers: dict[str, breaker.BreakerState] = {}
        self._latency: dict[str, LatencyStats] = {}
        self._stats: dict[str, _Stats] = {}

    def snapshot(
        self, keys: Sequence[str], now: float, *, stats: bool = False
    ) -> dict[str, KeyHealth]:
        out: dict[str, KeyHealth] = {}
        with self._lock:
            for key in keys:
                cooldown = self._cooldowns.get(key)
                if cooldown is not None and cooldown[0] <= now:
                    del self._cooldowns[key]
                    cooldown = None
                state = self._breakers.get(key)
                latency = self._latency.get(key)
                counted = self._stats.get(key) if stats else None
                if counted is not None and now >= counted.written + STATS_TTL:
                    del self._stats[key]
                    counted = None
                if cooldown is None and counted is None and (
                    state is None or state.state == breaker.CLOSED
                ):  # the common case: a closed breaker and no cooldown
                    if state is not None or latency is not None:
                        out[key] = KeyHealth(None, None, breaker.CLOSED, None, latency)
                    continue
                health = KeyHealth(
                    cooldown[0] if cooldown else None,
                    cooldown[1] if cooldown else None,
                    _visible_state(state, now, self.policy),
                    breaker.open_until(state, self.policy) if state else None,
                    latency,
                )
                if counted is not None:
                    health = counted.into(health, now)
                out[key] = health
        return out

    def record(
        self, keys: Sequence[str], ok: bool, now: float, ttfb: float | None = None,
        total: float | None = None, kind: str | None = None, status: int | None = None,
    ) -> list[CircuitChanged]:
        changes: list[CircuitChanged] = []
        with self._lock:
            for key in dict.fromkeys(keys):  # statistics count a result once per key
                counted = self._stats.get(key)
                if counted is None:
                    counted = self._stats[key] = _Stats()
                counted.add(ok, now, kind, status)
            for key in keys:
                state = self._breakers.get(key, breaker.FRESH)
                state, transition = breaker.record(state, ok, now, self.policy)
                if state is breaker.FRESH:
                    self._breakers.pop(key, None)
                else:
                    self._breakers[key] = state
                if transition is not None:
                    changes.append(_change(key, transition, state, self.policy))
            if ttfb is not None or total is not None:
                # latency is about the target: the first key
                self._latency[keys[0]] = update(self._latency.get(keys[0]), ttfb, total)
        return changes

    def cooldown(self, key: str, until: float, kind: str) -> None:
        with self._lock:
            current = self._cooldowns.get(key)
            if current is None or current[0] < until:
                self._cooldowns[key] = (until, kind)

    def admit(self, key: str, now: float) -> tuple[bool, list[CircuitChanged]]:
        with self._lock:
            state = self._breakers.get(key)
            if state is None:
                return True, []
            state, admitted, transition = breaker.admit(state, now, self.policy)
            self._breakers[key] = state
        changes = [_change(key, transition, state, self.policy)] if transition else []
        return admitted, changes

    def clear(self) -> None:
        with self._lock:
            self._cooldowns.clear()
            self._breakers.clear()
            self._latency.clear()
            self._stats.clear()

    # -- official status pages (a process polls for itself) --------------------------------------

    def official_lease(self, owner: str, seconds: float) -> bool:
        """Whether ``owner`` should poll the official status pages now: always, in-process."""
        return True

    def set_official(self, data: str, seconds: float) -> None:
        self._official = data

    def get_official(self) -> str | None:
        return getattr(self, "_official", None)

    async def asnapshot(
        self, keys: Sequence[str], now: float, *, stats: bool = False
    ) -> dict[str, KeyHealth]:
        return self.snapshot(keys, now, stats=stats)

    async def arecord(
        self, keys: Sequence[str], ok: bool, now: float, ttfb: float | None = None,
        total: float | None = None, kind: str | None = None, status: int | None = None,
    ) -> list[CircuitChanged]:
        return self.record(keys, ok, now, ttfb, total, kind, status)

    async def acooldown(self, key: str, until: float, kind: str) -> None:
        self.cooldown(key, until, kind)

    async def aadmit(self, key: str, now: float) -> tuple[bool, list[CircuitChanged]]:
        return self.admit(key, now)


class _Stats:
    """Request statistics of one key: totals, per-minute counts and the last error."""

    __slots__ = ("buckets", "failed", "last_error", "served", "written")

    def __init__(self) -> None:
        self.buckets: dict[int, list[int]] = {}  # minute -> [successes, failures]
        self.served = 0
        self.failed = 0
        self.last_error: ErrorInfo | None = None
        self.written = -STATS_TTL

    def add(self, ok: bool, now: float, kind: str | None, status: int | None) -> None:
        if now >= self.written + STATS_TTL:  # expired, as a Redis key would have
            self.buckets.clear()
            self.served = self.failed = 0
            self.last_error = None
        minute = int(now // 60)
        bucket = self.buckets.get(minute)
        if bucket is None:  # a new minute: drop those that fell out of the history
            for old in [m for m in self.buckets if m <= minute - HISTORY_MINUTES]:
                del self.buckets[old]
            bucket = self.buckets[minute] = [0, 0]
        bucket[0 if ok else 1] += 1
        if ok:
            self.served += 1
        else:
            self.failed += 1
            self.last_error = ErrorInfo(kind or "failure", status, now)
        self.written = now

    def into(self, health: KeyHealth, now: float) -> KeyHealth:
        minute = int(now // 60)
        history = tuple(
            tuple(self.buckets.get(m, (0, 0))) for m in range(minute - HISTORY_MINUTES + 1,
                                                              minute + 1)
        )
        return KeyHealth(
            health.cooldown_until, health.cooldown_kind, health.breaker, health.open_until,
            health.latency, self.served, self.failed,
            history,  # type: ignore[arg-type]
            self.last_error,
        )


def _visible_state(state: breaker.BreakerState | None, now: float, policy: BreakerPolicy) -> str:
    if state is None:
        return breaker.CLOSED
    if state.state == breaker.OPEN and now >= state.opened_at + policy.open_for:
        return breaker.HALF_OPEN  # due for probes; admit() makes it so
    return state.state


def _change(key: str, transition: str, state: breaker.BreakerState,
            policy: BreakerPolicy) -> CircuitChanged:
    until = breaker.open_until(state, policy)
    return CircuitChanged(key, transition, "failures" if transition == "open" else "probe", until)
