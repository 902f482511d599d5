"""Retry-After parsing, full-jitter backoff and the status table of the failure policy."""

from __future__ import annotations

import email.utils
import random

import pytest

from badgr_middleware.routing.outcomes import FailureKind
from badgr_middleware.routing.policy import (
    RETRYABLE_STATUSES,
    backoff_delay,
    classify_status,
    is_context_length_error,
    parse_retry_after,
)

NOW = 1_700_000_000.0


def http_date(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


# -- parse_retry_after -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        pytest.param({"retry-after": "5"}, 5.0, id="seconds"),
        pytest.param({"retry-after": "1.5"}, 1.5, id="fractional"),
        pytest.param({"retry-after": " 7 "}, 7.0, id="whitespace"),
        pytest.param({"retry-after": "0.001"}, 0.001, id="tiny"),
        pytest.param({"retry-after-ms": "1500"}, 1.5, id="ms-only"),
        pytest.param({"retry-after-ms": "250.5"}, 0.2505, id="ms-fractional"),
        pytest.param({"retry-after-ms": "1500", "retry-after": "9"}, 1.5, id="ms-wins"),
        pytest.param({"retry-after-ms": "soon", "retry-after": "9"}, 9.0, id="bad-ms-falls-back"),
        pytest.param({"retry-after-ms": "0", "retry-after": "9"}, 9.0, id="zero-ms-falls-back"),
        pytest.param({"retry-after-ms": "-100", "retry-after": "9"}, 9.0,
                     id="negative-ms-falls-back"),
        pytest.param({"retry-after-ms": "nan", "retry-after": "9"}, 9.0, id="nan-ms-falls-back"),
        pytest.param({"retry-after-ms": "inf", "retry-after": "9"}, 9.0, id="inf-ms-falls-back"),
        pytest.param({"retry-after": http_date(NOW + 30)}, 30.0, id="http-date-future"),
        pytest.param({"retry-after": http_date(NOW - 30)}, None, id="http-date-past"),
        pytest.param({"retry-after": http_date(NOW)}, None, id="http-date-now"),
        pytest.param({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}, None, id="long-ago"),
        pytest.param({"retry-after": "soon"}, None, id="garbage"),
        pytest.param({"retry-after": ""}, None, id="empty"),
        pytest.param({"retry-after": "-3"}, None, id="negative"),
        pytest.param({"retry-after": "0"}, None, id="zero"),
        pytest.param({"retry-after": "nan"}, None, id="nan"),
        pytest.param({"retry-after": "inf"}, None, id="inf"),
        pytest.param({"retry-after": "-inf"}, None, id="minus-inf"),
        pytest.param({"retry-after": "1e400"}, None, id="overflows-to-inf"),
        pytest.param({"retry-after-ms": "nan"}, None, id="only-bad-ms"),
        pytest.param({}, None, id="missing"),
        pytest.param({"x-ratelimit-reset": "5"}, None, id="other-headers"),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, NOW) == expected


def test_http_date_is_counted_from_the_given_now() -> None:
    header = {"retry-after": http_date(NOW + 100)}
    assert parse_retry_after(header, NOW + 40) == 60.0


# -- backoff_delay -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("retry_index", "cap"),
    [(0, 0.25), (1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (5, 4.0), (40, 4.0), (10_000, 4.0)],
)
def test_backoff_delay_is_full_jitter_below_the_capped_exponential(
    retry_index: int, cap: float
) -> None:
    rng = random.Random(11)
    delays = [backoff_delay(retry_index, 0.25, 4.0, rng) for _ in range(300)]
    assert all(0.0 <= d <= cap for d in delays)
    assert max(delays) > cap * 0.9  # uniform over the whole range, not a fixed fraction
    assert min(delays) < cap * 0.1


def test_backoff_delay_is_exactly_the_seeded_draw() -> None:
    expected = random.Random(5)
    rng = random.Random(5)
    for index in range(6):
        cap = min(4.0, 0.25 * 2**index)
        assert backoff_delay(index, 0.25, 4.0, rng) == expected.uniform(0.0, cap)


def test_backoff_delay_with_zero_cap_is_zero() -> None:
    assert backoff_delay(3, 0.25, 0.0, random.Random(1)) == 0.0


# -- classify_status ---------------------------------------------------------------------------

STATUS_TABLE = [
    *[(status, None, "", FailureKind.SERVER)
      for status in (408, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529)],
    (429, None, "Rate limit reached", FailureKind.RATE_LIMITED),
    (429, "rate_limit_exceeded", "", FailureKind.RATE_LIMITED),
    (429, "insufficient_quota", "You exceeded your current quota", FailureKind.QUOTA),
    (429, "credit_balance_exhausted", "", FailureKind.QUOTA),
    (429, "enforced_spend_limit_reached", "", FailureKind.QUOTA),
    (429, "billing_error", "", FailureKind.QUOTA),
    (429, "payment_required", "", FailureKind.QUOTA),
    (402, None, "Insufficient credits", FailureKind.QUOTA),
    (401, None, "Incorrect API key", FailureKind.AUTH),
    (403, None, "Forbidden", FailureKind.AUTH),
    (404, None, "The model does not exist", FailureKind.NOT_FOUND),
    (400, None, "temperature must be <= 2", FailureKind.CLIENT),
    (400, "invalid_value", "bad", FailureKind.CLIENT),
    (422, None, "Unprocessable", FailureKind.CLIENT),
    (400, "context_length_exceeded", "too long", FailureKind.CONTEXT_LENGTH),
    (400, "string_above_max_context_length", "", FailureKind.CONTEXT_LENGTH),
    (400, None, "This model's maximum context length is 4096 tokens. However, you requested "
                "5000 tokens.", FailureKind.CONTEXT_LENGTH),
    (400, None, "prompt is too long: 210000 tokens > 200000 maximum",
     FailureKind.CONTEXT_LENGTH),
    (400, None, "Input exceeds the Context Window of this model", FailureKind.CONTEXT_LENGTH),
    (400, None, "Please reduce the length of the messages.", FailureKind.CONTEXT_LENGTH),
    (400, None, "Too many tokens in the request", FailureKind.CONTEXT_LENGTH),
    (413, None, "Request too large", FailureKind.CLIENT),
    (413, None, "maximum context length exceeded", FailureKind.CONTEXT_LENGTH),
    (422, None, "context length of 8192 exceeded", FailureKind.CONTEXT_LENGTH),
    (200, None, "", FailureKind.BAD_RESPONSE),
    (301, None, "", FailureKind.BAD_RESPONSE),
    (405, None, "", FailureKind.BAD_RESPONSE),
    (409, None, "", FailureKind.BAD_RESPONSE),
    (418, None, "", FailureKind.BAD_RESPONSE),
    (501, None, "", FailureKind.BAD_RESPONSE),
    (505, None, "", FailureKind.BAD_RESPONSE),
    (525, None, "", FailureKind.BAD_RESPONSE),
]


@pytest.mark.parametrize(("status", "code", "message", "kind"), STATUS_TABLE)
def test_classify_status(status: int, code: str | None, message: str, kind: FailureKind) -> None:
    assert classify_status(status, code, message) is kind


def test_retryable_statuses_are_exactly_the_server_row() -> None:
    assert frozenset({408, 500, 502, 503, 504, 520, 521, 522, 523, 524, 529}) == (
        RETRYABLE_STATUSES
    )


def test_a_quota_code_wins_over_the_status() -> None:
    assert classify_status(500, "insufficient_quota") is FailureKind.QUOTA
    assert classify_status(400, "insufficient_quota", "context length") is FailureKind.QUOTA


def test_context_length_markers_only_matter_for_client_errors() -> None:
    assert classify_status(500, None, "maximum context length") is FailureKind.SERVER
    assert classify_status(404, "context_length_exceeded") is FailureKind.NOT_FOUND


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("context_length_exceeded", "", True),
        (None, "MAXIMUM CONTEXT LENGTH", True),
        (None, "the context_length is exceeded", True),
        ("invalid_value", "temperature too high", False),
        (None, "", False),
        ("", "length of the name is wrong", False),
    ],
)
def test_is_context_length_error(code: str | None, message: str, expected: bool) -> None:
    assert is_context_length_error(code, message) is expected
