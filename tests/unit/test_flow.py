"""The failover flow, driven by a scripted driver: one test (or table row) per policy rule."""

from __future__ import annotations

import random

import pytest
from flowscript import (
    SEED,
    T0,
    FakeClock,
    Step,
    auth,
    bad_response,
    client,
    connect,
    context_length,
    drive,
    make_flow,
    not_found,
    num,
    quota,
    rate_limited,
    server,
    stream_broken,
    target,
    timeout,
)

from badgr_middleware import signals
from badgr_middleware.config import Cooldowns, RetryPolicy
from badgr_middleware.routing.flow import (
    Attempt,
    ClientDisconnected,
    Cooldown,
    Respond,
    Sleep,
    Unavailable,
)
from badgr_middleware.routing.outcomes import Delivered, Failure, FailureKind


def draws(*caps: float, seed: int = SEED) -> list[float]:
    """The full-jitter delays a flow seeded with ``seed`` draws, in order."""
    rng = random.Random(seed)
    return [rng.uniform(0.0, cap) for cap in caps]


def retry(**kwargs: float) -> RetryPolicy:
    return RetryPolicy(**kwargs)  # type: ignore[arg-type]


# -- success and plan order -----------------------------------------------------------------


def test_success_on_the_first_target() -> None:
    run = drive(make_flow(["a/x", "b/y"]), [None])
    assert run.log == ["start", "attempt a/x", "respond a/x", "finished"]
    assert run.clock.now == T0


def test_targets_are_tried_in_plan_order() -> None:
    run = drive(make_flow(["c/z", "a/x", "b/y"]), [connect(), connect(), None])
    assert [a.target.key for a in run.of(Attempt)] == ["c/z", "a/x", "b/y"]


# -- connect error, timeout, bad response, broken stream: next target at once -----------------

NO_RETRY_KINDS = [
    pytest.param(connect(), id="connect"),
    pytest.param(timeout(), id="timeout"),
    pytest.param(bad_response(), id="bad_response"),
    pytest.param(stream_broken(), id="stream_broken"),
]


@pytest.mark.parametrize("failure", NO_RETRY_KINDS)
def test_no_retry_kinds_fail_over_at_once(failure: Failure) -> None:
    run = drive(make_flow(["a/x", "b/y"]), [failure, None])
    kind = failure.kind.value
    assert run.log == [
        "start", "attempt a/x", f"failed a/x {kind}", "failover a/x->b/y", "attempt b/y",
        "respond b/y", "finished",
    ]
    assert run.sleeps == []
    assert run.clock.now == T0


@pytest.mark.parametrize("failure", NO_RETRY_KINDS)
def test_no_retry_kinds_never_retry_the_same_target(failure: Failure) -> None:
    run = drive(make_flow(["a/x"], retry=retry(attempts_per_target=5)), [failure])
    kind = failure.kind.value
    status, code = (504, "upstream_timeout") if kind == "timeout" else (502, "all_targets_failed")
    assert run.log == [
        "start", "attempt a/x", f"failed a/x {kind}", f"request_failed {kind}",
        f"fail {status} {code}",
    ]
    assert run.header("x-should-retry") == "false"


# -- server errors: fail over first, retry with backoff once no untried target is left --------


def test_server_error_fails_over_at_once_then_retries_after_backoff() -> None:
    run = drive(make_flow(["a/x", "b/y"]), [server(), server(), None])
    (d1,) = draws(0.25)
    assert run.log == [
        "start",
        "attempt a/x", "failed a/x server_error", "failover a/x->b/y",
        "attempt b/y", "failed b/y server_error",
        f"retry a/x in {num(d1)}", f"sleep {num(d1)}", "failover b/y->a/x",
        "attempt a/x", "respond a/x", "finished",
    ]
    assert run.sleeps == [d1]
    (scheduled,) = run.events(signals.retry_scheduled)
    assert (scheduled.provider, scheduled.model, scheduled.attempt) == ("a", "x", 3)
    assert scheduled.delay == d1
    assert scheduled.error_kind == "server_error"


def test_server_retries_are_bounded_per_target_with_growing_jitter_caps() -> None:
    policy = retry(attempts_per_target=3, backoff_base=0.25, backoff_max=4.0)
    run = drive(make_flow(["a/x"], retry=policy), [server(), server(), server()])
    d1, d2 = draws(0.25, 0.5)  # n = tries so far - 1: base * 2**0, then base * 2**1
    assert run.log == [
        "start",
        "attempt a/x", "failed a/x server_error", f"retry a/x in {num(d1)}", f"sleep {num(d1)}",
        "attempt a/x", "failed a/x server_error", f"retry a/x in {num(d2)}", f"sleep {num(d2)}",
        "attempt a/x", "failed a/x server_error",
        "request_failed server_error", "fail 502 all_targets_failed",
    ]
    assert run.sleeps == [d1, d2]
    assert run.events(signals.failover) == []  # the same target again is no failover


def test_backoff_is_capped_by_backoff_max() -> None:
    policy = retry(attempts_per_target=4, backoff_base=1.0, backoff_max=1.5)
    run = drive(make_flow(["a/x"], retry=policy), [server()] * 4)
    assert run.sleeps == draws(1.0, 1.5, 1.5)


def test_each_target_is_retried_once_its_turn_comes_in_plan_order() -> None:
    run = drive(make_flow(["a/x", "b/y"]), [server()] * 4)
    d1, d2 = draws(0.25, 0.25)  # each target's first retry: n = 0
    assert run.log == [
        "start",
        "attempt a/x", "failed a/x server_error", "failover a/x->b/y",
        "attempt b/y", "failed b/y server_error",
        f"retry a/x in {num(d1)}", f"sleep {num(d1)}", "failover b/y->a/x",
        "attempt a/x", "failed a/x server_error",
        f"retry b/y in {num(d2)}", f"sleep {num(d2)}", "failover a/x->b/y",
        "attempt b/y", "failed b/y server_error",
        "request_failed server_error", "fail 502 all_targets_failed",
    ]


def test_one_attempt_per_target_means_no_retry() -> None:
    run = drive(make_flow(["a/x"], retry=retry(attempts_per_target=1)), [server()])
    assert run.log == [
        "start", "attempt a/x", "failed a/x server_error", "request_failed server_error",
        "fail 502 all_targets_failed",
    ]


@pytest.mark.parametrize(
    ("retry_after", "expected"),
    [
        pytest.param(2.0, 2.0, id="hint"),
        pytest.param(0.5, 0.5, id="fractional-hint"),
        pytest.param(30.0, 30.0, id="hint-equal-to-max"),
        pytest.param(30.5, draws(0.25)[0], id="hint-over-max-uses-backoff"),
        pytest.param(None, draws(0.25)[0], id="no-hint-uses-backoff"),
    ],
)
def test_server_retry_delay_honours_retry_after_up_to_the_maximum(
    retry_after: float | None, expected: float
) -> None:
    run = drive(make_flow(["a/x"]), [server(503, retry_after=retry_after), None])
    assert run.sleeps == [expected]
    assert run.log[-5:] == [
        f"retry a/x in {num(expected)}", f"sleep {num(expected)}", "attempt a/x", "respond a/x",
        "finished",
    ]


@pytest.mark.parametrize(
    ("retry_after", "latency", "retried"),
    [
        (0.5, 0.0, True),
        (0.99, 0.0, True),
        (1.0, 0.0, False),  # would begin exactly at the deadline
        (0.5, 0.6, False),  # the attempt itself ate the time
        (3.0, 0.0, False),
    ],
)
def test_server_retry_only_when_it_fits_the_deadline(
    retry_after: float, latency: float, retried: bool
) -> None:
    flow = make_flow(["a/x"], budget=1.0)
    script = [Step(server(retry_after=retry_after), latency)]
    if retried:
        script.append(Step(None))
    run = drive(flow, script)
    if retried:
        assert run.sleeps == [retry_after]
        assert run.log[-3:] == ["attempt a/x", "respond a/x", "finished"]
    else:
        assert run.log == [
            "start", "attempt a/x", "failed a/x server_error", "request_failed server_error",
            "fail 502 all_targets_failed",
        ]


# -- 429 ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "latency", "cooldowns", "until"),
    [
        pytest.param(rate_limited(5), 0.0, Cooldowns(), 1005, id="retry-after"),
        pytest.param(rate_limited(5), 2.0, Cooldowns(), 1007, id="from-the-answer"),
        pytest.param(rate_limited(), 0.0, Cooldowns(), 1010, id="default"),
        pytest.param(rate_limited(), 0.0, Cooldowns(rate_limited=42), 1042, id="configured"),
    ],
)
def test_rate_limited_cools_the_target_down_and_fails_over_at_once(
    failure: Failure, latency: float, cooldowns: Cooldowns, until: float
) -> None:
    run = drive(make_flow(["a/x", "b/y"], cooldowns=cooldowns), [Step(failure, latency), None])
    assert run.log == [
        "start", "attempt a/x", "failed a/x rate_limited",
        f"cooldown a/x until {num(until)} rate_limited",
        "failover a/x->b/y", "attempt b/y", "respond b/y", "finished",
    ]
    assert run.sleeps == []
    assert run.of(Cooldown) == [Cooldown("a/x", until, FailureKind.RATE_LIMITED)]


def test_rate_limited_last_target_is_waited_for_when_retry_after_fits() -> None:
    run = drive(make_flow(["a/x"]), [rate_limited(5), None])
    assert run.log == [
        "start", "attempt a/x", "failed a/x rate_limited",
        "cooldown a/x until 1005 rate_limited",
        "retry a/x in 5", "sleep 5", "attempt a/x", "respond a/x", "finished",
    ]
    (scheduled,) = run.events(signals.retry_scheduled)
    assert scheduled.error_kind == "rate_limited"
    assert scheduled.attempt == 2


def test_rate_limited_target_is_waited_for_only_once() -> None:
    run = drive(make_flow(["a/x"]), [rate_limited(5), rate_limited(5)])
    assert run.log == [
        "start", "attempt a/x", "failed a/x rate_limited",
        "cooldown a/x until 1005 rate_limited",
        "retry a/x in 5", "sleep 5",
        "attempt a/x", "failed a/x rate_limited", "cooldown a/x until 1010 rate_limited",
        "request_failed rate_limited", "fail 429 rate_limit_exceeded",
    ]
    assert run.header("retry-after") == "5"
    assert run.header("retry-after-ms") == "5000"


@pytest.mark.parametrize(
    ("retry_after", "budget", "headers"),
    [
        pytest.param(31.0, 60.0, {"retry-after": "31", "retry-after-ms": "31000"},
                     id="over-max-retry-after"),
        pytest.param(30.5, 60.0, {"retry-after": "31", "retry-after-ms": "30500"},
                     id="ceil"),
        pytest.param(120.0, 600.0, {"retry-after": "120", "retry-after-ms": "120000"},
                     id="120s-is-still-worth-a-client-retry"),
        pytest.param(120.5, 600.0, {"x-should-retry": "false"}, id="over-120s"),
        pytest.param(2.5, 2.0, {"retry-after": "3", "retry-after-ms": "2500"},
                     id="does-not-fit-the-deadline"),
    ],
)
def test_rate_limited_not_waited_for_ends_in_429(
    retry_after: float, budget: float, headers: dict[str, str]
) -> None:
    run = drive(make_flow(["a/x"], budget=budget), [rate_limited(retry_after)])
    assert run.log == [
        "start", "attempt a/x", "failed a/x rate_limited",
        f"cooldown a/x until {num(T0 + retry_after)} rate_limited",
        "request_failed rate_limited", "fail 429 rate_limit_exceeded",
    ]
    error = run.fail.error
    assert error.type == "rate_limit_error"
    assert dict(error.headers) == headers


def test_rate_limited_without_hint_is_not_waited_for() -> None:
    run = drive(make_flow(["a/x"]), [rate_limited()])
    assert run.sleeps == []
    assert run.log[-2:] == ["request_failed rate_limited", "fail 429 rate_limit_exceeded"]


def test_all_rate_limited_without_hint_says_when_the_cooldown_ends() -> None:
    run = drive(make_flow(["a/x", "b/y"]), [rate_limited(), rate_limited()])
    assert run.fail.error.status == 429
    assert run.header("retry-after") == "10"
    assert run.header("retry-after-ms") == "10000"


def test_two_rate_limited_targets_are_each_waited_for_once_earliest_first() -> None:
    script = [rate_limited(5), rate_limited(3), rate_limited(3), rate_limited(5)]
    run = drive(make_flow(["a/x", "b/y"]), script)
    assert run.log == [
        "start",
        "attempt a/x", "failed a/x rate_limited", "cooldown a/x until 1005 rate_limited",
        "failover a/x->b/y",
        "attempt b/y", "failed b/y rate_limited", "cooldown b/y until 1003 rate_limited",
        "retry b/y in 3", "sleep 3",
        "attempt b/y", "failed b/y rate_limited", "cooldown b/y until 1006 rate_limited",
        "retry a/x in 2", "sleep 2", "failover b/y->a/x",
        "attempt a/x", "failed a/x rate_limited", "cooldown a/x until 1010 rate_limited",
        "request_failed rate_limited", "fail 429 rate_limit_exceeded",
    ]
    # at 1005 the earliest target to accept again is b/y, at 1006
    assert run.header("retry-after") == "1"
    assert run.header("retry-after-ms") == "1000"


def test_server_retries_come_before_waiting_for_a_rate_limited_target() -> None:
    run = drive(make_flow(["a/x", "b/y"]), [rate_limited(2), server(), server(), None])
    (d1,) = draws(0.25)
    wait = (T0 + 2) - (T0 + d1)
    assert run.log == [
        "start",
        "attempt a/x", "failed a/x rate_limited", "cooldown a/x until 1002 rate_limited",
        "failover a/x->b/y",
        "attempt b/y", "failed b/y server_error",
        f"retry b/y in {num(d1)}", f"sleep {num(d1)}",
        "attempt b/y", "failed b/y server_error",
        f"retry a/x in {num(wait)}", f"sleep {num(wait)}", "failover b/y->a/x",
        "attempt a/x", "respond a/x", "finished",
    ]
    assert run.sleeps == [d1, wait]
    assert run.clock.now == T0 + 2


def test_a_blocked_rate_limited_target_does_not_hide_another_worth_waiting_for() -> None:
    run = drive(make_flow(["a/x", "a/z", "b/y"]),
                [rate_limited(2), auth(), rate_limited(5), None], strict=False)
    assert run.log == [
        "start",
        "attempt a/x", "failed a/x rate_limited", "cooldown a/x until 1002 rate_limited",
        "failover a/x->a/z",
        "attempt a/z", "failed a/z unauthorized", "cooldown a until 1600 unauthorized",
        "failover a/z->b/y",
        "attempt b/y", "failed b/y rate_limited", "cooldown b/y until 1005 rate_limited",
        "retry b/y in 5", "sleep 5",
        "attempt b/y", "respond b/y", "finished",
    ]


# -- 402 / 401 / 403 / 404: cooldowns --------------------------------------------------------


@pytest.mark.parametrize(
    ("failure", "until"),
    [
        pytest.param(quota(), 1300, id="402"),
        pytest.param(auth(401), 1600, id="401"),
        pytest.param(auth(403), 1600, id="403"),
    ],
)
def test_quota_and_auth_cool_the_whole_provider_down(failure: Failure, until: float) -> None:
    run = drive(make_flow(["a/x", "a/y", "b/z"]), [failure, None])
    kind = failure.kind.value
    assert run.log == [
        "start", "attempt a/x", f"failed a/x {kind}", f"cooldown a until {until} {kind}",
        "failover a/x->b/z", "attempt b/z", "respond b/z", "finished",
    ]


def test_configured_provider_cooldowns_are_used() -> None:
    cooldowns = Cooldowns(quota=77, auth=88)
    run = drive(make_flow(["a/x", "b/y", "c/z"], cooldowns=cooldowns), [quota(), auth(), None])
    assert run.of(Cooldown) == [
        Cooldown("a", T0 + 77, FailureKind.QUOTA),
        Cooldown("b", T0 + 88, FailureKind.AUTH),
    ]


def test_quota_on_the_only_provider_skips_its_other_targets_and_says_so() -> None:
    run = drive(make_flow(["a/x", "a/y"]), [quota()])
    assert run.log == [
        "start", "attempt a/x", "failed a/x quota_exhausted",
        "cooldown a until 1300 quota_exhausted",
        "request_failed quota_exhausted", "fail 502 all_targets_failed",
    ]
    message = run.fail.error.message
    assert "a/x: quota_exhausted (402)" in message
    assert "a/y: skipped, quota_exhausted for 300s" in message


def test_not_found_cools_down_only_that_target() -> None:
    run = drive(make_flow(["a/x", "a/y"], cooldowns=Cooldowns(not_found=50)),
                [not_found(), None])
    assert run.log == [
        "start", "attempt a/x", "failed a/x model_not_found",
        "cooldown a/x until 1050 model_not_found",
        "failover a/x->a/y", "attempt a/y", "respond a/y", "finished",
    ]


@pytest.mark.parametrize(
    ("provider_failure", "until"), [(auth(), 1600), (quota(), 1300)], ids=["401", "402"]
)
def test_server_retry_skips_a_provider_cooled_down_meanwhile(
    provider_failure: Failure, until: float
) -> None:
    run = drive(make_flow(["a/x", "a/y"]), [server(), provider_failure, None], strict=False)
    kind = provider_failure.kind.value
    assert run.log == [
        "start", "attempt a/x", "failed a/x server_error", "failover a/x->a/y",
        "attempt a/y", f"failed a/y {kind}", f"cooldown a until {until} {kind}",
        f"request_failed {kind}", "fail 502 all_targets_failed",
    ]


# -- 400 context length ----------------------------------------------------------------------


def test_context_length_moves_on_only_to_larger_known_windows() -> None:
    plan = [
        target("a/x", 8000), target("b/y", 4000), target("c/z"), target("d/w", 8000),
        target("e/v", 128000),
    ]
    run = drive(make_flow(plan), [context_length(), None])
    assert run.log == [
        "start", "attempt a/x", "failed a/x context_length_exceeded", "failover a/x->e/v",
        "attempt e/v", "respond e/v", "finished",
    ]
    assert run.of(Cooldown) == []  # not the target's fault


def test_context_length_from_a_target_of_unknown_window_needs_a_known_window() -> None:
    plan = [target("a/x"), target("b/y"), target("c/z", 1000)]
    run = drive(make_flow(plan), [context_length(), None])
    assert [a.target.key for a in run.of(Attempt)] == ["a/x", "c/z"]


def test_context_length_keeps_raising_the_bar() -> None:
    plan = [target("a/x", 4000), target("b/y", 8000), target("c/z", 6000), target("d/w", 9000)]
    run = drive(make_flow(plan), [context_length(), context_length(), None])
    assert [a.target.key for a in run.of(Attempt)] == ["a/x", "b/y", "d/w"]


def test_context_length_without_a_larger_target_returns_the_upstream_400() -> None:
    plan = [target("a/x", 8000), target("b/y", 4000), target("c/z")]
    failure = context_length("This model's maximum context length is 8000 tokens.")
    run = drive(make_flow(plan), [failure])
    assert run.log == [
        "start", "attempt a/x", "failed a/x context_length_exceeded",
        "request_failed context_length_exceeded", "fail 400 context_length_exceeded",
    ]
    error = run.fail.error
    assert error.message == "This model's maximum context length is 8000 tokens."
    assert (error.status, error.code, error.param) == (400, "context_length_exceeded", "messages")


@pytest.mark.parametrize("first", [server(), rate_limited(2)], ids=["5xx-retry", "429-wait"])
def test_context_length_also_rules_out_retries_of_smaller_targets(first: Failure) -> None:
    plan = [target("a/x", 4000), target("b/y", 8000)]
    run = drive(make_flow(plan), [first, context_length(), None], strict=False)
    assert [a.target.key for a in run.of(Attempt)] == ["a/x", "b/y"]
    assert (run.fail.error.status, run.fail.error.code) == (400, "context_length_exceeded")


# -- other 400 / 422 -------------------------------------------------------------------------


@pytest.mark.parametrize("status", [400, 422])
def test_client_error_is_returned_without_retry_or_failover(status: int) -> None:
    run = drive(make_flow(["a/x", "b/y"], retry=retry(attempts_per_target=3)), [client(status)])
    assert run.log == [
        "start", "attempt a/x", "failed a/x invalid_request", "request_failed invalid_request",
        f"fail {status} invalid_value",
    ]
    error = run.fail.error
    assert error.status == status
    assert error.message == "temperature is wrong"
    assert error.param == "temperature"
    assert error.code == "invalid_value"


# -- health from the store: skipping ---------------------------------------------------------


@pytest.mark.parametrize(
    ("unavailable", "attempted"),
    [
        pytest.param({"a": Unavailable(1100, FailureKind.AUTH)}, "b/z", id="provider"),
        pytest.param({"a/x": Unavailable(1100, FailureKind.NOT_FOUND)}, "a/y", id="target"),
        pytest.param({"a/x": Unavailable(T0, FailureKind.NOT_FOUND)}, "a/x", id="until-now"),
        pytest.param({"a": Unavailable(999, FailureKind.QUOTA)}, "a/x", id="expired"),
        pytest.param({"b": Unavailable(1100, FailureKind.AUTH)}, "a/x", id="other-provider"),
        pytest.param({"a/y": Unavailable(1100, FailureKind.QUOTA)}, "a/x", id="other-target"),
    ],
)
def test_unavailable_targets_are_skipped_without_an_attempt(
    unavailable: dict[str, Unavailable], attempted: str
) -> None:
    run = drive(make_flow(["a/x", "a/y", "b/z"], unavailable=unavailable), [None])
    assert run.log == ["start", f"attempt {attempted}", f"respond {attempted}", "finished"]


def test_failover_skips_unavailable_targets_between_attempts() -> None:
    unavailable = {"b/y": Unavailable(1100, FailureKind.NOT_FOUND)}
    run = drive(make_flow(["a/x", "b/y", "c/z"], unavailable=unavailable), [connect(), None])
    assert run.log == [
        "start", "attempt a/x", "failed a/x connect_error", "failover a/x->c/z",
        "attempt c/z", "respond c/z", "finished",
    ]


def test_the_callers_unavailable_map_is_not_changed() -> None:
    unavailable = {"z": Unavailable(1100, FailureKind.AUTH)}
    drive(make_flow(["a/x", "b/y"], unavailable=unavailable), [auth(), None])
    assert unavailable == {"z": Unavailable(1100, FailureKind.AUTH)}


def test_a_server_error_next_to_a_skipped_target_is_retried() -> None:
    unavailable = {"b": Unavailable(1100, FailureKind.AUTH)}
    run = drive(make_flow(["a/x", "b/y"], unavailable=unavailable), [server(), server()])
    (d1,) = draws(0.25)
    assert run.log == [
        "start", "attempt a/x", "failed a/x server_error",
        f"retry a/x in {num(d1)}", f"sleep {num(d1)}",
        "attempt a/x", "failed a/x server_error",
        "request_failed server_error", "fail 502 all_targets_failed",
    ]
    assert run.fail.error.message.endswith("b/y: skipped, unauthorized for 100s.")


def test_everything_cooling_down_is_503_without_an_attempt() -> None:
    unavailable = {
        "a": Unavailable(1050, FailureKind.AUTH),
        "b/y": Unavailable(1100.5, FailureKind.QUOTA),
    }
    run = drive(make_flow(["a/x", "b/y"], unavailable=unavailable), [])
    assert run.log == ["start", "request_failed unavailable", "fail 503 all_targets_unavailable"]
    assert run.fail.attempts == 0
    assert run.header("retry-after") == "50"
    assert run.header("retry-after-ms") == "50000"
    assert "a/x: skipped, unauthorized for 50s" in run.fail.error.message
    assert "b/y: skipped, quota_exhausted for 101s" in run.fail.error.message


def test_everything_cooling_down_for_long_says_do_not_retry() -> None:
    unavailable = {"a": Unavailable(1600, FailureKind.AUTH)}
    run = drive(make_flow(["a/x"], unavailable=unavailable), [])
    assert (run.fail.error.status, run.fail.error.code) == (503, "all_targets_unavailable")
    assert dict(run.fail.error.headers) == {"x-should-retry": "false"}


def test_a_target_rate_limited_in_the_store_is_waited_for_when_it_fits() -> None:
    unavailable = {"a/x": Unavailable(1005, FailureKind.RATE_LIMITED)}
    run = drive(make_flow(["a/x"], unavailable=unavailable), [None])
    assert run.log == [
        "start", "retry a/x in 5", "sleep 5", "attempt a/x", "respond a/x", "finished",
    ]


def test_targets_rate_limited_in_the_store_for_long_give_429() -> None:
    # Both "all rate limited -> 429" and "nothing tried -> 503" describe this case; the 429
    # rule comes first.
    unavailable = {"a/x": Unavailable(1040, FailureKind.RATE_LIMITED)}
    run = drive(make_flow(["a/x"], unavailable=unavailable), [])
    assert run.log == ["start", "request_failed unavailable", "fail 429 rate_limit_exceeded"]
    assert run.header("retry-after") == "40"


# -- the deadline ----------------------------------------------------------------------------


@pytest.mark.parametrize("latency", [10.0, 11.0])
def test_no_attempt_begins_after_the_deadline(latency: float) -> None:
    run = drive(make_flow(["a/x", "b/y"], budget=10), [Step(timeout(), latency)])
    assert run.log == [
        "start", "attempt a/x", "failed a/x timeout", "request_failed deadline",
        "fail 504 deadline_exceeded",
    ]
    error = run.fail.error
    assert error.type == "timeout_error"
    assert run.header("x-should-retry") == "false"
    assert "a/x: timeout" in error.message


def test_zero_budget_means_no_attempt_at_all() -> None:
    run = drive(make_flow(["a/x"], budget=0), [])
    assert run.log == ["start", "request_failed deadline", "fail 504 deadline_exceeded"]
    assert run.fail.attempts == 0


def test_attempts_are_told_the_time_left() -> None:
    run = drive(make_flow(["a/x", "b/y"], budget=10), [Step(connect(), 4), Step(None, 1)])
    assert [a.time_left for a in run.of(Attempt)] == [10, 6]


def test_deadline_after_context_length_with_a_larger_target_left_is_504() -> None:
    plan = [target("a/x", 4000), target("b/y", 8000)]
    run = drive(make_flow(plan, budget=10), [Step(context_length(), 11)])
    assert (run.fail.error.status, run.fail.error.code) == (504, "deadline_exceeded")


# -- final errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "status", "code", "headers"),
    [
        pytest.param([not_found(), not_found()], 404, "model_not_found",
                     {"x-should-retry": "false"}, id="all-404"),
        pytest.param([timeout(), timeout()], 504, "upstream_timeout",
                     {"x-should-retry": "false"}, id="all-timeouts"),
        pytest.param([timeout(), connect()], 502, "all_targets_failed",
                     {"x-should-retry": "false"}, id="mixed"),
        pytest.param([not_found(), timeout()], 502, "all_targets_failed",
                     {"x-should-retry": "false"}, id="404-and-timeout"),
        pytest.param([rate_limited(3), rate_limited(4)] * 2, 429, "rate_limit_exceeded",
                     {"retry-after": "2", "retry-after-ms": "2000"}, id="all-429"),
        pytest.param([rate_limited(3), server(), server()], 502, "all_targets_failed",
                     {"x-should-retry": "false"}, id="429-and-5xx"),
    ],
)
def test_final_error_when_everything_failed(
    script: list[Failure], status: int, code: str, headers: dict[str, str]
) -> None:
    run = drive(make_flow(["a/x", "b/y"], retry=retry(attempts_per_target=1)), script)
    error = run.fail.error
    assert (error.status, error.code) == (status, code)
    assert dict(error.headers) == headers


def test_final_error_message_lists_every_attempt() -> None:
    flow = make_flow(["a/x", "b/y"], retry=retry(attempts_per_target=1))
    run = drive(flow, [server(503), connect()])
    assert run.fail.error.message == (
        "Every target failed. Attempts: a/x: server_error (503); b/y: connect_error."
    )
    assert run.fail.attempts == 2


# -- signals ---------------------------------------------------------------------------------


def test_request_started_describes_the_request() -> None:
    run = drive(make_flow(["a/x", "b/y"], stream=True, request_id="req_9"), [None])
    (started,) = run.events(signals.request_started)
    assert started == signals.RequestStarted("req_9", "chat/completions", "m", True,
                                             ("a/x", "b/y"))


def test_attempt_failed_and_failover_payloads() -> None:
    run = drive(make_flow(["a/x", "b/y"]), [Step(rate_limited(5), 1.5), None])
    (failed,) = run.events(signals.attempt_failed)
    assert failed == signals.AttemptFailed("req_1", "chat/completions", "a", "x", 1,
                                           "rate_limited", 429, 1.5, 5)
    (failover,) = run.events(signals.failover)
    assert (failover.from_provider, failover.from_model) == ("a", "x")
    assert (failover.to_provider, failover.to_model) == ("b", "y")
    assert failover.error_kind == "rate_limited"


def test_request_finished_carries_usage_attempts_and_latency() -> None:
    usage = {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}
    run = drive(make_flow(["a/x", "b/y"]), [Step(connect(), 1), Step(None, 2)],
                delivered=Delivered(usage))
    (finished,) = run.events(signals.request_finished)
    detail = (signals.AttemptRecord("a/x", "connect_error", None, 1.0),
              signals.AttemptRecord("b/y", "ok", 200, 2.0))
    assert finished == signals.RequestFinished("req_1", "chat/completions", "b", "y", 2, 3.0,
                                               False, 200, usage, None, detail)
    assert [r.attempts for r in run.of(Respond)] == [2]
    assert [r.detail for r in run.of(Respond)] == [detail[:1]]
    assert run.events(signals.request_failed) == []


def test_stream_broken_after_the_first_byte_fails_the_request() -> None:
    broken = Failure(FailureKind.STREAM_BROKEN, None, "broke", "upstream_broken")
    run = drive(make_flow(["a/x", "b/y"], stream=True), [None], delivered=Delivered(None, broken))
    assert run.log == [
        "start", "attempt a/x", "respond a/x", "failed a/x stream_broken",
        "request_failed stream_broken",
    ]
    (failed,) = run.events(signals.request_failed)
    assert (failed.error_kind, failed.provider, failed.model, failed.stream) == (
        "stream_broken", "a", "x", True
    )
    assert run.events(signals.request_finished) == []


def test_client_disconnect_is_not_the_upstreams_fault() -> None:
    gone = Failure(FailureKind.CLIENT_DISCONNECTED, 499, "The client went away.")
    run = drive(make_flow(["a/x"], stream=True), [None], delivered=Delivered(None, gone))
    assert run.log == ["start", "attempt a/x", "respond a/x", "request_failed client_disconnected"]
    assert run.events(signals.attempt_failed) == []


@pytest.mark.parametrize(("at", "attempts"), [(Attempt, 1), (Sleep, 1)])
def test_a_client_gone_before_the_response_ends_the_flow(at: type, attempts: int) -> None:
    clock = FakeClock()
    gen = make_flow(["a/x"], clock=clock, stream=True).run()
    action = next(gen)
    while not isinstance(action, at):
        reply = server() if isinstance(action, Attempt) else None
        if isinstance(action, Sleep):
            clock.advance(action.seconds)
        action = gen.send(reply)
    clock.advance(0.5)
    ended = gen.throw(ClientDisconnected())
    assert ended.signal is signals.request_failed
    assert ended.event.status == 499
    assert ended.event.error_kind == "client_disconnected"
    assert ended.event.attempts == attempts
    assert ended.event.stream is True
    with pytest.raises(StopIteration):
        gen.send(None)


def test_failover_only_when_the_target_changes() -> None:
    run = drive(make_flow(["a/x", "b/y"]), [server(), connect(), None])
    # a/x (5xx) -> b/y (connect) -> a/x again: two changes of target, two failovers
    moves = [(e.from_model, e.to_model) for e in run.events(signals.failover)]
    assert moves == [("x", "y"), ("y", "x")]


def test_the_flow_reads_only_the_clock_it_is_given() -> None:
    clock = FakeClock(5_000_000.0)
    run = drive(make_flow(["a/x"], clock=clock), [rate_limited(4), None])
    assert run.of(Cooldown) == [Cooldown("a/x", 5_000_004.0, FailureKind.RATE_LIMITED)]
    assert clock.now == 5_000_004.0


def test_same_seed_same_decisions() -> None:
    logs = [
        drive(make_flow(["a/x", "b/y"], seed=3), [server()] * 4).log for _ in range(2)
    ]
    assert logs[0] == logs[1]
    other = drive(make_flow(["a/x", "b/y"], seed=4), [server()] * 4).log
    assert other != logs[0]
