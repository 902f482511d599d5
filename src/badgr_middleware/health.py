"""Health state shared by every request of a process: who is cooling down, and until when.

Keys are provider names (``openrouter``: a 402 or 401 takes out the whole provider) or target
keys (``openrouter/anthropic/claude-sonnet-4.5``: a 429 or 404 takes out one model).
"""

from __future__ import annotations

import threading
from typing import Protocol

from .routing.flow import Unavailable
from .routing.outcomes import FailureKind

__all__ = ["HealthStore", "MemoryHealthStore"]


class HealthStore(Protocol):
    def cooldown(self, key: str, until: float, kind: FailureKind) -> None: ...

    def unavailable(self, now: float) -> dict[str, Unavailable]: ...


class MemoryHealthStore:
    """The per-process store; safe to share between threads and event loops."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, Unavailable] = {}

    def cooldown(self, key: str, until: float, kind: FailureKind) -> None:
        with self._lock:
            current = self._entries.get(key)
            if current is None or current.until < until:
                self._entries[key] = Unavailable(until, kind)

    def unavailable(self, now: float) -> dict[str, Unavailable]:
        """The entries still in force at ``now`` (expired ones are dropped)."""
        if not self._entries:
            return {}
        with self._lock:
            expired = [k for k, v in self._entries.items() if v.until <= now]
            for key in expired:
                del self._entries[key]
            return dict(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
