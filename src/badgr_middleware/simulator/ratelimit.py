"""Request quotas for the simulators: a fixed window, and the headers providers report it in.

Pure: the caller passes the time and holds its simulator's lock. A window opens at the first
request after a reset and counts requests (and, for the headers only, tokens) until ``window``
seconds have passed; the next request then opens a new window. A request that would exceed
the limit is refused and counts for nothing. See docs/simulator.md, "Rate limits".
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from datetime import UTC, datetime

from .payloads import Headers

__all__ = [
    "RateLimited",
    "ANTHROPIC_INPUT_TOKENS_PER_REQUEST",
    "ANTHROPIC_OUTPUT_TOKENS_PER_REQUEST",
    "OPENAI_TOKENS_PER_REQUEST",
    "RateState",
    "RateWindow",
    "anthropic_headers",
    "go_duration",
    "openai_headers",
    "rfc3339",
]

# Token limits are the request limit times these; they are reported, never enforced.
OPENAI_TOKENS_PER_REQUEST = 1000
ANTHROPIC_INPUT_TOKENS_PER_REQUEST = 1000
ANTHROPIC_OUTPUT_TOKENS_PER_REQUEST = 200


@dataclass(frozen=True)
class RateState:
    """The window as one request left it."""

    allowed: bool
    limit: int
    window: float  # seconds
    remaining: int  # requests left in the window, this one already counted
    reset_in: float  # seconds until the window resets
    input_tokens: int  # counted in the window so far (this request too, if allowed)
    output_tokens: int

    @property
    def retry_after(self) -> int:
        """Whole seconds until the reset, rounded up so a client never retries too early."""
        return max(1, math.ceil(self.reset_in))


class RateWindow:
    """``limit`` requests per fixed window of ``window`` seconds, opened by the first request."""

    def __init__(self, limit: int, window: float) -> None:
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise ValueError("rate_limit must be a whole number of requests, at least 1")
        if not (math.isfinite(window) and window > 0):
            raise ValueError("rate_limit_window must be a positive number of seconds")
        self.limit = limit
        self.window = float(window)
        self._start: float | None = None
        self._count = 0
        self._input = 0
        self._output = 0

    def take(self, now: float, *, input_tokens: int = 0, output_tokens: int = 0) -> RateState:
        """Count one request at monotonic time ``now``, unless the window is used up."""
        if self._start is None or now - self._start >= self.window:
            self._start, self._count, self._input, self._output = now, 0, 0, 0
        allowed = self._count < self.limit
        if allowed:
            self._count += 1
            self._input += input_tokens
            self._output += output_tokens
        return RateState(
            allowed=allowed,
            limit=self.limit,
            window=self.window,
            remaining=self.limit - self._count,
            reset_in=max(0.0, self._start + self.window - now),
            input_tokens=self._input,
            output_tokens=self._output,
        )

    def reset(self) -> None:
        """Forget the current window: the next request opens a fresh one."""
        self._start, self._count, self._input, self._output = None, 0, 0, 0


def go_duration(seconds: float) -> str:
    """A wait as OpenAI writes it (Go's ``time.Duration``): ``250ms``, ``12s``, ``1m30s``,
    ``6m0s``, ``1h0m0s``, ``8.64s``, ``0s``; rounded up to the millisecond."""
    # round() first so float noise such as 12.000000001 s does not become 12.001 s
    ms = max(0, math.ceil(round(seconds * 1000, 3)))
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    whole, fraction = divmod(rest, 1000)
    text = f"{whole}.{fraction:03d}".rstrip("0") + "s" if fraction else f"{whole}s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text


def rfc3339(unix: float) -> str:
    """A UTC RFC 3339 timestamp in whole seconds, rounded up: ``2026-01-02T03:04:05Z``."""
    return datetime.fromtimestamp(math.ceil(unix), UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def openai_headers(state: RateState) -> Headers:
    """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` for one response."""
    tokens = state.limit * OPENAI_TOKENS_PER_REQUEST
    reset = go_duration(state.reset_in).encode()
    return [
        (b"x-ratelimit-limit-requests", str(state.limit).encode()),
        (b"x-ratelimit-limit-tokens", str(tokens).encode()),
        (b"x-ratelimit-remaining-requests", str(state.remaining).encode()),
        (b"x-ratelimit-remaining-tokens", str(max(0, tokens - state.input_tokens)).encode()),
        (b"x-ratelimit-reset-requests", reset),
        (b"x-ratelimit-reset-tokens", reset),
    ]


def anthropic_headers(state: RateState, now: float) -> Headers:
    """``anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-{limit,remaining,
    reset}`` for one response; ``now`` is the Unix time, resets are RFC 3339 timestamps."""
    input_limit = state.limit * ANTHROPIC_INPUT_TOKENS_PER_REQUEST
    output_limit = state.limit * ANTHROPIC_OUTPUT_TOKENS_PER_REQUEST
    families = (
        ("requests", state.limit, state.remaining),
        ("tokens", input_limit + output_limit,
         input_limit + output_limit - state.input_tokens - state.output_tokens),
        ("input-tokens", input_limit, input_limit - state.input_tokens),
        ("output-tokens", output_limit, output_limit - state.output_tokens),
    )
    reset = rfc3339(now + state.reset_in).encode()
    headers: Headers = []
    for family, limit, remaining in families:
        headers += [
            (f"anthropic-ratelimit-{family}-limit".encode(), str(limit).encode()),
            (f"anthropic-ratelimit-{family}-remaining".encode(), str(max(0, remaining)).encode()),
            (f"anthropic-ratelimit-{family}-reset".encode(), reset),
        ]
    return headers


class RateLimited:
    """The rate-limit controls every simulator shares (it holds ``_lock`` and ``_rate``)."""

    _lock: threading.Lock
    _rate: RateWindow | None

    def set_rate_limit(self, limit: int | None, window: float = 60.0) -> None:
        """Serve at most ``limit`` requests per ``window`` seconds (a fresh window); None
        removes the limit and its headers."""
        rate = RateWindow(limit, window) if limit is not None else None
        with self._lock:
            self._rate = rate

    def reset_rate_limit(self) -> None:
        """Start a fresh rate-limit window at the next request (the limit itself stays)."""
        with self._lock:
            if self._rate is not None:
                self._rate.reset()
