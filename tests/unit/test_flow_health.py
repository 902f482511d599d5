"""The flow's health duties: breaker records, probe admission, routing order, hedging."""

from __future__ import annotations

import pytest
from flowscript import (
    FakeClock,
    Step,
    bad_response,
    client,
    connect,
    drive,
    make_flow,
    quota,
    server,
    stream_broken,
    target,
    timeout,
)

from badgr_middleware import signals
from badgr_middleware.health.latency import LatencyStats
from badgr_middleware.routing.flow import Attempt, Cooldown, Hedged, Record
from badgr_middleware.routing.outcomes import Delivered, Failure, FailureKind


def records(run) -> list[str]:
    return [line for line in run.full_log if line.startswith(("record", "admit"))]


@pytest.mark.parametrize(
    ("failure", "keys"),
    [(connect(), "a/x,a"), (timeout(), "a/x,a"), (server(503), "a/x,a"),
     (bad_response(), "a/x"), (stream_broken(), "a/x")],
)
def test_breaker_failures_are_recorded_for_the_right_keys(failure, keys) -> None:
    run = drive(make_flow(["a/x", "b/y"]), [failure, None])
    assert records(run) == [f"record {keys} failed", "record b/y,b ok"]


@pytest.mark.parametrize("failure", [quota(), client(400)])
def test_cooldown_and_client_errors_do_not_count_against_breakers(failure) -> None:
    run = drive(make_flow(["a/x", "b/y"]), [failure] if failure.kind is FailureKind.CLIENT
                else [failure, None])
    assert not any(line.endswith("failed") for line in records(run))


def test_success_records_time_to_first_byte_and_total() -> None:
    clock = FakeClock()
    flow = make_flow(["a/x"], clock=clock, stream=True)
    run = drive(flow, [Step(None, latency=0.25)])
    (record,) = run.of(Record)
    assert (record.keys, record.ok, record.ttfb, record.total) == (("a/x", "a"), True, 0.25,
                                                                   0.25)


def test_a_stream_broken_after_the_first_byte_counts_against_the_target() -> None:
    failure = stream_broken()
    run = drive(make_flow(["a/x"], stream=True), [None], delivered=Delivered(None, failure))
    assert records(run) == ["record a/x failed"]


def test_a_half_open_target_is_tried_only_when_a_probe_is_admitted() -> None:
    flow = make_flow(["a/x", "b/y"], half_open=frozenset({"a/x"}))
    run = drive(flow, [None])
    assert run.full_log[:3] == ["start", "admit a/x", "attempt a/x"]


def test_a_refused_probe_skips_the_target() -> None:
    flow = make_flow(["a/x", "b/y"], half_open=frozenset({"a"}))
    run = drive(flow, [None], admit={"a": False})
    assert run.full_log[:3] == ["start", "admit a", "attempt b/y"]
    assert run.of(Attempt)[0].target == target("b/y")


def test_every_breaker_refusing_fails_fast_with_503() -> None:
    flow = make_flow(["a/x", "b/y"], half_open=frozenset({"a", "b"}))
    run = drive(flow, [], admit={"a": False, "b": False})
    assert run.log[-1] == "fail 503 all_targets_unavailable"


def test_latency_routing_puts_the_fastest_first_and_unknown_last() -> None:
    stats = {"a/x": LatencyStats(0.9, 0, 1, 5), "c/z": LatencyStats(0.1, 0, 1, 5)}
    flow = make_flow(["a/x", "b/y", "c/z"], latency=stats, routing="latency")
    run = drive(flow, [server(), server(), None])
    assert [a.target.key for a in run.of(Attempt)] == ["c/z", "a/x", "b/y"]


def test_weighted_routing_follows_the_weights() -> None:
    heavy, light = target("a/x"), target("b/y")
    heavy = type(heavy)(heavy.provider, heavy.model, None, 9.0)
    light = type(light)(light.provider, light.model, None, 1.0)
    firsts = []
    for seed in range(200):
        run = drive(make_flow([heavy, light], routing="weighted", seed=seed), [None])
        firsts.append(run.of(Attempt)[0].target.key)
    assert 150 <= firsts.count("a/x") <= 195  # 90 % expected


def test_hedged_attempt_names_the_next_target_and_the_delay() -> None:
    run = drive(make_flow(["a/x", "b/y"], hedge_after=0.5), [None])
    (attempt,) = run.of(Attempt)
    assert (attempt.hedge, attempt.hedge_after) == (target("b/y"), 0.5)


def test_hedge_after_p95_needs_latency_statistics() -> None:
    stats = {"a/x": LatencyStats(0.2, 0.01, 1, 10)}
    run = drive(make_flow(["a/x", "b/y"], hedge_after="p95", latency=stats), [None])
    assert run.of(Attempt)[0].hedge_after == pytest.approx(0.2 + 1.645 * 0.1)
    run = drive(make_flow(["a/x", "b/y"], hedge_after="p95"), [None])
    assert run.of(Attempt)[0].hedge is None


def test_the_hedge_winning_is_served_and_counted() -> None:
    flow = make_flow(["a/x", "b/y"], hedge_after=0.5)
    run = drive(flow, [Step(Hedged(target("b/y")), latency=0.8)])  # type: ignore[arg-type]
    assert run.log == ["start", "attempt a/x", "failover a/x->b/y", "respond b/y", "finished"]
    finished = run.events(signals.request_finished)[0]
    assert finished.attempts == 2
    (record,) = run.of(Record)
    assert record.keys == ("b/y", "b") and record.ttfb == pytest.approx(0.3)


def test_both_hedged_attempts_failing_moves_on() -> None:
    flow = make_flow(["a/x", "b/y", "c/z"], hedge_after=0.5)
    hedged = Hedged(None, ((target("a/x"), server(503)), (target("b/y"), connect())))
    run = drive(flow, [Step(hedged), None])  # type: ignore[arg-type]
    assert run.log[:5] == ["start", "attempt a/x", "failover a/x->b/y",
                           "failed a/x server_error", "failed b/y connect_error"]
    assert run.of(Attempt)[-1].target == target("c/z")


def test_a_hedge_never_started_goes_back_in_line() -> None:
    flow = make_flow(["a/x", "b/y"], hedge_after=0.5)
    run = drive(flow, [server(503), None])
    assert [a.target.key for a in run.of(Attempt)] == ["a/x", "b/y"]


def test_a_target_that_cannot_serve_the_request_is_passed_over_without_health_effects() -> None:
    refusal = Failure(FailureKind.UNSUPPORTED, 400, "n > 1 is not supported",
                      "unsupported_parameter", param="n")
    run = drive(make_flow(["a/x", "b/y"]), [refusal, None])
    assert run.log[-2:] == ["respond b/y", "finished"]
    assert records(run) == ["record b/y,b ok"]
    assert not run.of(Cooldown)


def test_every_target_refusing_returns_the_refusal_as_400() -> None:
    refusal = Failure(FailureKind.UNSUPPORTED, 400, "n > 1 is not supported",
                      "unsupported_parameter", param="n")
    run = drive(make_flow(["a/x", "b/y"]), [refusal, refusal])
    error = run.fail.error
    assert (error.status, error.code, error.param) == (400, "unsupported_parameter", "n")
    assert run.header("x-should-retry") == "false"
