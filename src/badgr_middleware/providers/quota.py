"""Read how much of a provider's rate limit is left from its response headers.

Pure: headers and the current time in, a :class:`QuotaReading` (or None) out. Understood:

- OpenAI, Groq, Cerebras, Together and other OpenAI-compatible APIs:
  ``x-ratelimit-limit-<name>``, ``x-ratelimit-remaining-<name>``, ``x-ratelimit-reset-<name>``
  for any ``<name>`` (``requests``, ``tokens``, ``requests-day``, ...); resets are durations
  (``1s``, ``6m0s``, ``1h2m3.5s``, ``250ms``) or seconds;
- Anthropic: ``anthropic-ratelimit-<name>-limit``, ``-remaining``, ``-reset`` for ``requests``,
  ``tokens``, ``input-tokens``, ``output-tokens`` (any name), resets as RFC 3339 timestamps;
- OpenRouter and many others: ``x-ratelimit-limit``, ``x-ratelimit-remaining``,
  ``x-ratelimit-reset``, and the IETF draft's ``ratelimit-limit``, ``ratelimit-remaining``,
  ``ratelimit-reset``.

A reset may be a duration, a number of seconds, a Unix time in seconds or milliseconds
(OpenRouter), an RFC 3339 timestamp or an HTTP date. A value that does not parse is ignored;
reading never raises.
"""

from __future__ import annotations

import email.utils
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

__all__ = ["QuotaReading", "read_quota"]


@dataclass(frozen=True, slots=True)
class QuotaReading:
    """The tightest of a response's rate limits."""

    remaining: float  # fraction 0..1 of the tightest limit
    reset_after: float | None  # seconds until that limit resets; None: not said


_OPENAI = re.compile(r"x-ratelimit-(limit|remaining|reset)-(.+)")
_ANTHROPIC = re.compile(r"anthropic-ratelimit-(.+)-(limit|remaining|reset)")
_PLAIN = re.compile(r"(x-ratelimit|ratelimit)-(limit|remaining|reset)")
_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(h|ms|m|s|us|µs|ns)")
_DURATION_UNITS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 1e-3, "us": 1e-6, "µs": 1e-6,
                   "ns": 1e-9}
# A plain number this large is a Unix time, not a number of seconds to wait.
_UNIX_SECONDS = 1e9
_UNIX_MILLISECONDS = 1e12


def read_quota(headers: Mapping[str, str] | Iterable[tuple[str, str]],
               now: float) -> QuotaReading | None:
    """The limit with the smallest share left (``remaining / limit``), or None.

    *headers* may be any mapping (names in any case; a multidict's first value wins) or
    ``(name, value)`` pairs; *now* is the current Unix time, used for resets given as a time.
    A limit with ``remaining`` but no usable ``limit`` counts only when ``remaining`` is 0
    (share 0). Of limits with the same share, the one that resets last is reported.
    """
    families: dict[tuple[str, str], dict[str, str]] = {}
    for name, value in _pairs(headers):
        key, part = _classify(name)
        if key is not None:
            families.setdefault(key, {}).setdefault(part, value)
    best: tuple[float, float] | None = None
    reading: QuotaReading | None = None
    for family in families.values():
        share = _share(family)
        if share is None:
            continue
        reset = _reset_after(family.get("reset"), now)
        rank = (share, -(reset if reset is not None else -1.0))
        if best is None or rank < best:
            best, reading = rank, QuotaReading(share, reset)
    return reading


def _pairs(headers: Mapping[str, str] | Iterable[tuple[str, str]]) -> Iterable[tuple[str, str]]:
    try:
        items: Iterable[Any] = headers.items() if isinstance(headers, Mapping) else headers
        for item in items:
            try:
                name, value = item
            except (TypeError, ValueError):
                continue
            name, value = _text(name), _text(value)
            if name is not None and value is not None:
                yield name.strip().lower(), value.strip()
    except TypeError:  # not iterable: no headers
        return


def _text(value: object) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("latin-1")
    return None


def _classify(name: str) -> tuple[tuple[str, str] | None, str]:
    """``((dialect, limit name), part)`` of a rate-limit header, or ``(None, "")``."""
    if match := _OPENAI.fullmatch(name):
        return ("openai", match[2]), match[1]
    if match := _ANTHROPIC.fullmatch(name):
        return ("anthropic", match[1]), match[2]
    if match := _PLAIN.fullmatch(name):
        return ("plain", match[1]), match[2]
    return None, ""


def _share(family: Mapping[str, str]) -> float | None:
    remaining = _number(family.get("remaining"))
    if remaining is None:
        return None
    remaining = max(0.0, remaining)
    limit = _number(family.get("limit"))
    if limit is None or limit <= 0:
        return 0.0 if remaining == 0 else None
    return min(1.0, remaining / limit)


def _number(raw: str | None) -> float | None:
    if raw is None:
        return None
    # "100, 100;window=60" (a policy after the number) counts as its first number
    text = raw.split(",", 1)[0].split(";", 1)[0].strip()
    if not text or len(text) > 32:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _reset_after(raw: str | None, now: float) -> float | None:
    """Seconds from *now* until a reset given in any of the forms above; never negative."""
    if raw is None or not raw or len(raw) > 64:
        return None
    seconds = _seconds(raw, now)
    if seconds is None or not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def _seconds(raw: str, now: float) -> float | None:
    number = _number(raw)
    if number is not None:
        if number >= _UNIX_MILLISECONDS:
            return number / 1000.0 - now
        if number >= _UNIX_SECONDS:
            return number - now
        return number
    duration = _duration(raw)
    if duration is not None:
        return duration
    moment = _timestamp(raw)
    return None if moment is None else moment - now


def _duration(raw: str) -> float | None:
    """A Go duration: ``6m0s``, ``1h2m3.5s``, ``250ms``, ``1.5µs``."""
    position, total = 0, 0.0
    for match in _DURATION_PART.finditer(raw):
        if match.start() != position:
            return None
        total += float(match[1]) * _DURATION_UNITS[match[2]]
        position = match.end()
    return total if position and position == len(raw) else None


def _timestamp(raw: str) -> float | None:
    """An RFC 3339 timestamp (no zone means UTC) or an HTTP date, as a Unix time."""
    try:
        moment = datetime.fromisoformat(raw)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError, OSError):
        pass
    try:
        parsed = email.utils.parsedate_tz(raw)
        return None if parsed is None else float(email.utils.mktime_tz(parsed))
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
