"""Latency statistics per target: exponentially weighted mean and deviation.

Small enough to keep in a Redis hash and update atomically; the 95th percentile is estimated
as mean + 1.645 standard deviations, which is what hedging needs (a threshold, not a report).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

__all__ = ["ALPHA", "LatencyStats", "update"]

ALPHA = 0.2  # weight of the newest sample


@dataclass(slots=True)  # not frozen: built per request, and frozen ones cost 5x to build
class LatencyStats:
    """Time to first byte and total time, in seconds."""

    ttfb: float = 0.0
    ttfb_var: float = 0.0
    total: float = 0.0
    samples: int = 0

    @property
    def ttfb_p95(self) -> float:
        return self.ttfb + 1.645 * math.sqrt(self.ttfb_var)


def update(stats: LatencyStats | None, ttfb: float | None, total: float | None) -> LatencyStats:
    """Fold one observation into ``stats`` (either figure may be missing)."""
    stats = stats or LatencyStats()
    mean, var, whole = stats.ttfb, stats.ttfb_var, stats.total
    first = stats.samples == 0
    if ttfb is not None:
        if first:
            mean, var = ttfb, 0.0
        else:
            delta = ttfb - mean
            mean += ALPHA * delta
            var = (1 - ALPHA) * (var + ALPHA * delta * delta)
    if total is not None:
        whole = total if first or whole == 0.0 else whole + ALPHA * (total - whole)
    return LatencyStats(mean, var, whole, stats.samples + 1)
