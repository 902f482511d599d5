"""The circuit breaker as pure functions over a small state record.

closed --(``consecutive_failures`` in a row, or a failure rate >= ``failure_rate`` over
``window`` seconds with at least ``min_requests`` results)--> open
open --(``open_for`` seconds pass; the next admission check)--> half_open
half_open admits at most ``half_open_probes`` requests at once;
a probe's success --> closed (counters cleared); its failure --> open again.

The in-memory store applies these functions under a lock; the Redis store implements the same
transitions in one Lua script, and a shared test suite holds both to the same behaviour.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..config import BreakerPolicy

__all__ = ["BUCKETS", "FRESH", "BreakerState", "admit", "open_until", "record"]

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"
BUCKETS = 10  # the window is kept as this many equal time buckets of (successes, failures)


@dataclass(slots=True)  # not frozen: built per request, and frozen ones cost 5x to build
class BreakerState:
    state: str = CLOSED
    consecutive: int = 0
    opened_at: float = 0.0
    probes: int = 0  # probes admitted and not yet reported while half-open
    probe_at: float = 0.0  # when the last probe was admitted (stuck probes expire)
    # bucket index (int(now / bucket length)) -> (successes, failures)
    buckets: tuple[tuple[int, int, int], ...] = field(default=())


FRESH = BreakerState()  # a key with nothing counted (what a probe's success returns to)


def open_until(state: BreakerState, policy: BreakerPolicy) -> float | None:
    """When an open breaker starts admitting probes; None unless open."""
    return state.opened_at + policy.open_for if state.state == OPEN else None


def admit(
    state: BreakerState, now: float, policy: BreakerPolicy
) -> tuple[BreakerState, bool, str | None]:
    """May a request go to this key now? Returns (new state, admitted, transition)."""
    if state.state == CLOSED:
        return state, True, None
    transition = None
    if state.state == OPEN:
        if now < state.opened_at + policy.open_for:
            return state, False, None
        state = replace(state, state=HALF_OPEN, probes=0)
        transition = HALF_OPEN
    if state.probes >= policy.half_open_probes and now < state.probe_at + policy.open_for:
        return state, False, transition
    probes = 0 if now >= state.probe_at + policy.open_for else state.probes
    return replace(state, probes=probes + 1, probe_at=now), True, transition


def record(
    state: BreakerState, ok: bool, now: float, policy: BreakerPolicy
) -> tuple[BreakerState, str | None]:
    """Count one result. Returns (new state, transition: "open", "closed" or None)."""
    if state.state == HALF_OPEN:
        if ok:
            return FRESH, CLOSED
        return BreakerState(state=OPEN, opened_at=now), OPEN
    if state.state == OPEN:
        return state, None  # a late result from before the breaker opened
    buckets = _add(state.buckets, ok, now, policy.window)
    if ok:  # built directly: this runs for every answer, and replace() is slow
        return BreakerState(CLOSED, 0, state.opened_at, state.probes, state.probe_at,
                            buckets), None
    consecutive = state.consecutive + 1
    successes = sum(b[1] for b in buckets)
    failures = sum(b[2] for b in buckets)
    total = successes + failures
    if consecutive >= policy.consecutive_failures or (
        total >= policy.min_requests and failures / total >= policy.failure_rate
    ):
        return BreakerState(state=OPEN, opened_at=now), OPEN
    return replace(state, consecutive=consecutive, buckets=buckets), None


def _add(
    buckets: tuple[tuple[int, int, int], ...], ok: bool, now: float, window: float
) -> tuple[tuple[int, int, int], ...]:
    width = window / BUCKETS
    index = int(now // width)
    if buckets and buckets[-1][0] == index and buckets[0][0] > index - BUCKETS:
        _, successes, failures = buckets[-1]  # the common case: the current bucket, none stale
        return (*buckets[:-1], (index, successes + ok, failures + (not ok)))
    kept = [b for b in buckets if b[0] > index - BUCKETS]
    if kept and kept[-1][0] == index:
        _, successes, failures = kept[-1]
        kept[-1] = (index, successes + ok, failures + (not ok))
    else:
        kept.append((index, int(ok), int(not ok)))
    return tuple(kept)
