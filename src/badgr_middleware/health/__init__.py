"""Health shared by every request: cooldowns, circuit breakers and latency statistics.

Behind one small store interface (:class:`HealthStore`) with an in-memory implementation
(the default) and a Redis one (shared by every worker and host).
"""

from __future__ import annotations

from .latency import LatencyStats
from .memory import MemoryHealthStore
from .store import ErrorInfo, HealthStore, KeyHealth

__all__ = ["ErrorInfo", "HealthStore", "KeyHealth", "LatencyStats", "MemoryHealthStore"]
