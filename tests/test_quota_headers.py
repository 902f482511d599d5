"""Reading providers' rate-limit headers into the share of quota left and when it resets."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from badgr_middleware.providers.quota import QuotaReading, read_quota

NOW = 1_755_780_000.0  # 2025-08-21T12:40:00Z


def test_openai_takes_the_tightest_limit() -> None:
    headers = {
        "x-ratelimit-limit-requests": "50",
        "x-ratelimit-remaining-requests": "42",
        "x-ratelimit-reset-requests": "34s",
        "x-ratelimit-limit-tokens": "40000",
        "x-ratelimit-remaining-tokens": "18000",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    assert read_quota(headers, NOW) == QuotaReading(0.45, 360.0)


@pytest.mark.parametrize(("value", "seconds"), [
    ("1s", 1.0), ("6m0s", 360.0), ("1h2m3.5s", 3723.5), ("250ms", 0.25), ("12ms", 0.012),
    ("2m59.56s", 179.56), ("7.66s", 7.66), ("1.5", 1.5), ("0", 0.0), ("33011.382867", 33011.382867),
    ("1h", 3600.0), ("500us", 0.0005),
])
def test_reset_durations(value: str, seconds: float) -> None:
    reading = read_quota({"x-ratelimit-limit-requests": "10",
                          "x-ratelimit-remaining-requests": "1",
                          "x-ratelimit-reset-requests": value}, NOW)
    assert reading is not None
    assert reading.reset_after == pytest.approx(seconds)


def test_anthropic_limits_and_rfc3339_resets() -> None:
    headers = {
        "anthropic-ratelimit-requests-limit": "1000",
        "anthropic-ratelimit-requests-remaining": "999",
        "anthropic-ratelimit-requests-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-tokens-limit": "96000",
        "anthropic-ratelimit-tokens-remaining": "96000",
        "anthropic-ratelimit-tokens-reset": "2025-08-21T12:40:59Z",
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "8000",
        "anthropic-ratelimit-input-tokens-reset": "2025-08-21T12:41:30+00:00",
        "anthropic-ratelimit-output-tokens-limit": "16000",
        "anthropic-ratelimit-output-tokens-remaining": "16000",
        "anthropic-ratelimit-output-tokens-reset": "2025-08-21T12:41:00Z",
    }
    assert read_quota(headers, NOW) == QuotaReading(0.1, 90.0)


def test_a_reset_in_the_past_is_zero() -> None:
    headers = {"anthropic-ratelimit-requests-limit": "10",
               "anthropic-ratelimit-requests-remaining": "0",
               "anthropic-ratelimit-requests-reset": "2025-08-21T12:00:00Z"}
    assert read_quota(headers, NOW) == QuotaReading(0.0, 0.0)


def test_openrouter_style_with_a_unix_millisecond_reset() -> None:
    headers = {"X-RateLimit-Limit": "20", "X-RateLimit-Remaining": "0",
               "X-RateLimit-Reset": str(int((NOW + 30) * 1000))}
    assert read_quota(headers, NOW) == QuotaReading(0.0, 30.0)


@pytest.mark.parametrize(("reset", "seconds"), [
    (str(int(NOW + 45)), 45.0),  # Unix seconds
    ("45", 45.0),  # seconds to wait
    ("Thu, 21 Aug 2025 12:41:00 GMT", 60.0),  # an HTTP date
    ("2025-08-21T12:41:00", 60.0),  # RFC 3339 without a zone: UTC
])
def test_other_reset_forms(reset: str, seconds: float) -> None:
    reading = read_quota({"ratelimit-limit": "100", "ratelimit-remaining": "25",
                          "ratelimit-reset": reset}, NOW)
    assert reading == QuotaReading(0.25, seconds)


def test_cerebras_style_names() -> None:
    headers = {
        "x-ratelimit-limit-requests-day": "14400",
        "x-ratelimit-remaining-requests-day": "14000",
        "x-ratelimit-reset-requests-day": "33011.38",
        "x-ratelimit-limit-tokens-minute": "60000",
        "x-ratelimit-remaining-tokens-minute": "3000",
        "x-ratelimit-reset-tokens-minute": "11.38",
    }
    assert read_quota(headers, NOW) == QuotaReading(0.05, pytest.approx(11.38))


def test_header_names_in_any_case_and_httpx_headers() -> None:
    plain = {"X-RateLimit-Limit-Requests": "4", "X-RATELIMIT-REMAINING-REQUESTS": "1"}
    assert read_quota(plain, NOW) == QuotaReading(0.25, None)
    assert read_quota(httpx.Headers(plain), NOW) == QuotaReading(0.25, None)


def test_pairs_and_a_multidict_take_the_first_value() -> None:
    pairs = [("x-ratelimit-limit-requests", "10"), ("x-ratelimit-remaining-requests", "5"),
             ("x-ratelimit-remaining-requests", "0")]
    assert read_quota(pairs, NOW) == QuotaReading(0.5, None)
    # httpx joins repeated headers with ", ": the first number counts
    assert read_quota(httpx.Headers(pairs), NOW) == QuotaReading(0.5, None)


def test_remaining_without_limit_counts_only_at_zero() -> None:
    assert read_quota({"x-ratelimit-remaining-requests": "0",
                       "x-ratelimit-reset-requests": "20s"}, NOW) == QuotaReading(0.0, 20.0)
    assert read_quota({"x-ratelimit-remaining-requests": "3"}, NOW) is None
    assert read_quota({"x-ratelimit-remaining-tokens": "3",
                       "x-ratelimit-limit-requests": "10",
                       "x-ratelimit-remaining-requests": "8"}, NOW) == QuotaReading(0.8, None)


def test_equal_shares_report_the_later_reset() -> None:
    headers = {
        "x-ratelimit-limit-requests": "10", "x-ratelimit-remaining-requests": "0",
        "x-ratelimit-reset-requests": "5s",
        "x-ratelimit-limit-tokens": "100", "x-ratelimit-remaining-tokens": "0",
        "x-ratelimit-reset-tokens": "50s",
    }
    assert read_quota(headers, NOW) == QuotaReading(0.0, 50.0)


def test_share_is_clamped_to_zero_and_one() -> None:
    assert read_quota({"x-ratelimit-limit": "10", "x-ratelimit-remaining": "-3"}, NOW) == \
        QuotaReading(0.0, None)
    assert read_quota({"x-ratelimit-limit": "10", "x-ratelimit-remaining": "30"}, NOW) == \
        QuotaReading(1.0, None)


@pytest.mark.parametrize("headers", [
    {},
    {"content-type": "application/json", "retry-after": "3"},
    {"x-ratelimit-limit-requests": "10"},
    {"x-ratelimit-limit-requests": "ten", "x-ratelimit-remaining-requests": "one"},
    {"x-ratelimit-limit-requests": "nan", "x-ratelimit-remaining-requests": "inf"},
    {"x-ratelimit-limit-requests": "0", "x-ratelimit-remaining-requests": "5"},
    {"x-ratelimit-remaining-requests": "", "x-ratelimit-limit-requests": ""},
    {"x-ratelimit-remaining-requests": "9" * 5000, "x-ratelimit-limit-requests": "1" * 5000},
])
def test_no_usable_header_is_none(headers: dict[str, str]) -> None:
    assert read_quota(headers, NOW) is None


@pytest.mark.parametrize("reset", [
    "soon", "1x", "m", "1s2", "-", "2025-13-45T99:99:99Z", "Thu, 99 Foo 2025", "1" * 5000,
    "1e400", "µs", "1h-2m", "", " ",
])
def test_garbage_resets_are_ignored(reset: str) -> None:
    reading = read_quota({"x-ratelimit-limit-requests": "10",
                          "x-ratelimit-remaining-requests": "5",
                          "x-ratelimit-reset-requests": reset}, NOW)
    assert reading == QuotaReading(0.5, None)


@pytest.mark.parametrize("headers", [
    None, 5, [("only-one",)], [(1, 2)], {b"x-ratelimit-remaining": b"0"}, [None],
])
def test_garbage_never_raises(headers: Any) -> None:
    result = read_quota(headers, NOW)
    assert result is None or isinstance(result, QuotaReading)


def test_reading_is_frozen() -> None:
    reading = QuotaReading(0.5, None)
    with pytest.raises(AttributeError):
        reading.remaining = 1.0  # type: ignore[misc]
