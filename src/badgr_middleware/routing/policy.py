"""Pure policy helpers: Retry-After parsing, full-jitter backoff, status classification."""

from __future__ import annotations

import email.utils
import math
import random
from collections.abc import Mapping

from .outcomes import FailureKind

__all__ = [
    "RETRYABLE_STATUSES",
    "backoff_delay",
    "classify_status",
    "is_context_length_error",
    "parse_retry_after",
]

RETRYABLE_STATUSES = frozenset({408, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529})
_QUOTA_CODES = frozenset(
    {"insufficient_quota", "credit_balance_exhausted", "enforced_spend_limit_reached",
     "billing_error", "payment_required"}
)
_CONTEXT_MARKERS = (
    "context length",
    "context_length",
    "maximum context",
    "context window",
    "prompt is too long",
    "too many tokens",
    "reduce the length",
)


def parse_retry_after(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds to wait from ``now``, from ``retry-after-ms`` then ``retry-after``.

    ``retry-after`` may be seconds (fractions accepted) or an HTTP date. Missing, negative,
    zero or unparseable values mean "no usable hint" (``None``).
    """
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        value = _finite(raw_ms)
        if value is not None and value > 0:
            return value / 1000.0
    raw = headers.get("retry-after")
    if raw is None:
        return None
    value = _finite(raw)
    if value is None:
        parsed = email.utils.parsedate_tz(raw)
        if parsed is None:
            return None
        value = email.utils.mktime_tz(parsed) - now
    return value if value > 0 else None


def _finite(raw: str) -> float | None:
    try:
        value = float(raw.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def backoff_delay(retry_index: int, base: float, cap: float, rng: random.Random) -> float:
    """Full jitter: uniform in ``[0, min(cap, base * 2**retry_index)]``."""
    return rng.uniform(0.0, min(cap, base * (2 ** min(retry_index, 30))))


def is_context_length_error(code: str | None, message: str) -> bool:
    if code and "context_length" in code:
        return True
    lowered = message.lower()
    return any(marker in lowered for marker in _CONTEXT_MARKERS)


def classify_status(status: int, code: str | None = None, message: str = "") -> FailureKind:
    """Map an upstream error status (and its error code/message) to a policy kind."""
    if code in _QUOTA_CODES or status == 402:
        return FailureKind.QUOTA
    if status in RETRYABLE_STATUSES:
        return FailureKind.SERVER
    if status == 429:
        return FailureKind.RATE_LIMITED
    if status in (401, 403):
        return FailureKind.AUTH
    if status == 404:
        return FailureKind.NOT_FOUND
    if status in (400, 413, 422):
        if is_context_length_error(code, message):
            return FailureKind.CONTEXT_LENGTH
        return FailureKind.CLIENT
    return FailureKind.BAD_RESPONSE
