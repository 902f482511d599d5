"""The flow's issue-10 duties: price limits, quota-aware order, the client deadline split,
stream resume, and the attempts record, driven by a local scripted driver."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from blinker import Signal
from flowscript import (
    T0,
    FakeClock,
    Run,
    Step,
    connect,
    render,
    server,
    stream_broken,
)

from badgr_middleware import signals
from badgr_middleware.config import Cooldowns, ResumePolicy, RetryPolicy
from badgr_middleware.pricing import Price, estimate_prompt_tokens
from badgr_middleware.routing.flow import (
    Attempt,
    Emit,
    Fail,
    Flow,
    Interrupted,
    Record,
    Respond,
    Sleep,
    Unavailable,
    merge_usage,
)
from badgr_middleware.routing.outcomes import Delivered, Failure, FailureKind
from badgr_middleware.routing.plan import Plan, RoutedRequest, Target
from badgr_middleware.signals import AttemptRecord, StreamResumed

# -- a driver that can answer a Respond with Interrupted, then later with Delivered ----------


@dataclass(frozen=True)
class Reply:
    """The answer to one ``Respond``, after the stream ran for ``duration`` seconds."""

    outcome: Delivered | Interrupted
    duration: float = 0.0


def t(spec: str, price: tuple[float, float] | None = None) -> Target:
    provider, _, model = spec.partition("/")
    return Target(provider, model, price=None if price is None else Price(*price))


PROMPT = "x" * 400  # one message: 4 + 100 = 104 estimated prompt tokens
BODY = {"model": "chat", "messages": [{"role": "user", "content": PROMPT}]}


def make(
    targets: Sequence[Target],
    *,
    body: dict[str, Any] | None = None,
    stream: bool = True,
    resume: ResumePolicy | None = None,
    max_price_ratio: float | None = None,
    max_cost: float | None = None,
    deadline: float | None = None,
    hedge_after: float | str | None = None,
    budget: float = 60.0,
    unavailable: dict[str, Unavailable] | None = None,
    low_quota: frozenset[str] = frozenset(),
    deprioritised: frozenset[str] = frozenset(),
    listening: Callable[[Signal], bool] = lambda signal: True,
    retry: RetryPolicy | None = None,
) -> Flow:
    plan = Plan(tuple(targets), None, "ordered", hedge_after)
    request = RoutedRequest(
        "chat/completions", dict(body if body is not None else BODY), plan, "req_1", stream,
        "chat", hedge_after, resume=resume, max_price_ratio=max_price_ratio,
        max_cost=max_cost, deadline=deadline)
    return Flow(
        request, retry=retry or RetryPolicy(), cooldowns=Cooldowns(), budget=budget,
        unavailable=unavailable or {}, clock=FakeClock(), rng=random.Random(7),
        deprioritised=deprioritised, listening=listening, low_quota=low_quota)


def play(
    flow: Flow,
    attempts: Iterable[Failure | Step | None],
    replies: Iterable[Reply | Delivered | Interrupted] = (),
) -> Run:
    """Run ``flow`` to its end: each ``Attempt`` gets the next scripted outcome, each
    ``Respond`` the next reply (default: delivered with no usage). Every scripted outcome
    must be used."""
    steps = [s if isinstance(s, Step) else Step(s) for s in attempts]
    answers = [r if isinstance(r, Reply) else Reply(r) for r in replies]
    clock = flow.clock
    assert isinstance(clock, FakeClock)
    gen = flow.run()
    actions: list[object] = []
    reply: object = None
    while True:
        try:
            action = gen.send(reply) if actions else next(gen)
        except StopIteration:
            break
        actions.append(action)
        assert len(actions) < 200, "the flow does not end"
        reply = None
        if isinstance(action, Sleep):
            clock.advance(action.seconds)
        elif isinstance(action, Attempt):
            assert steps, f"unscripted attempt: {[render(a) for a in actions]}"
            step = steps.pop(0)
            clock.advance(step.latency)
            reply = step.outcome
        elif isinstance(action, Respond):
            answer = answers.pop(0) if answers else Reply(Delivered(None))
            clock.advance(answer.duration)
            reply = answer.outcome
        elif isinstance(action, Fail):
            with pytest.raises(StopIteration):
                gen.send(None)  # nothing may follow a Fail
            break
    run = Run(actions, clock, flow)
    assert not steps and not answers, f"script left over: {steps} {answers}; {run.log}"
    return run


def keys(run: Run) -> list[str]:
    return [a.target.key for a in run.of(Attempt)]


def only(items: list[Any]) -> Any:
    assert len(items) == 1, items
    return items[0]


PRICE_LIMIT = "No target within the request's price limits could serve it."

# -- max_price_ratio --------------------------------------------------------------------------

CHEAP = t("a/x", (1.0, 2.0))
PRICEY = t("b/y", (3.0, 10.0))  # 3x the input, 5x the output price of CHEAP
NEAR = t("c/z", (1.5, 3.0))  # 1.5x both


def test_a_pricier_fallback_is_never_attempted_and_the_error_says_why() -> None:
    run = play(make([CHEAP, PRICEY, NEAR], max_price_ratio=2), [connect(), connect()])
    assert keys(run) == ["a/x", "c/z"]
    assert run.log == [
        "start", "attempt a/x", "failed a/x connect_error", "failover a/x->c/z",
        "attempt c/z", "failed c/z connect_error", "request_failed connect_error",
        "fail 502 price_limit",
    ]
    error = run.of(Fail)[0].error
    assert (error.status, error.type, error.code) == (502, "upstream_error", "price_limit")
    assert error.message == (
        f"{PRICE_LIMIT} Attempts: a/x: connect_error; c/z: connect_error; b/y: not tried, "
        "it costs 5.0x the primary a/x, over max_price_ratio 2.")
    assert error.headers == [("x-should-retry", "false")]
    failed = only(run.events(signals.request_failed))
    assert (failed.status, failed.error_kind, failed.attempts) == (502, "connect_error", 2)


def test_a_fallback_within_the_ratio_is_tried() -> None:
    run = play(make([CHEAP, PRICEY, NEAR], max_price_ratio=2), [server(503), None])
    assert keys(run) == ["a/x", "c/z"]
    assert run.log[-3:] == ["attempt c/z", "respond c/z", "finished"]


def test_the_ratio_is_inclusive_and_takes_the_larger_of_input_and_output() -> None:
    exact = t("b/y", (2.0, 1.0))  # input 2x, output 0.5x: 2x
    run = play(make([CHEAP, exact], max_price_ratio=2), [connect(), None])
    assert keys(run) == ["a/x", "b/y"]
    run = play(make([CHEAP, exact], max_price_ratio=1.9), [connect()])
    assert run.of(Fail)[0].error.message == (
        f"{PRICE_LIMIT} Attempts: a/x: connect_error; b/y: not tried, it costs 2.0x the "
        "primary a/x, over max_price_ratio 1.9.")


def test_an_unknown_fallback_price_is_refused_when_the_primary_has_one() -> None:
    run = play(make([CHEAP, t("b/y")], max_price_ratio=10), [connect()])
    assert keys(run) == ["a/x"]
    error = run.of(Fail)[0].error
    assert (error.status, error.code) == (502, "price_limit")
    assert error.message == (
        f"{PRICE_LIMIT} Attempts: a/x: connect_error; b/y: not tried, no price is known for "
        "it, so max_price_ratio 10 cannot allow it (give the target a price).")


def test_an_unknown_primary_price_sets_no_limit() -> None:
    run = play(make([t("a/x"), t("b/y", (100.0, 100.0)), t("c/z")], max_price_ratio=1),
               [connect(), connect(), None])
    assert keys(run) == ["a/x", "b/y", "c/z"]
    assert run.flow.refused == {}


def test_only_refused_fallbacks_and_a_cooling_primary_is_a_503_price_limit() -> None:
    unavailable = {"a": Unavailable(T0 + 30, FailureKind.QUOTA)}
    run = play(make([CHEAP, PRICEY], max_price_ratio=2, unavailable=unavailable), [])
    assert run.log == ["start", "request_failed unavailable", "fail 503 price_limit"]
    error = run.of(Fail)[0].error
    assert error.type == "service_unavailable"
    assert error.message == (
        f"{PRICE_LIMIT} Attempts: a/x: skipped, quota_exhausted for 30s; b/y: not tried, it "
        "costs 5.0x the primary a/x, over max_price_ratio 2.")


# -- max_cost ---------------------------------------------------------------------------------

HALF = (0.5, 1.0)  # 104 prompt tokens and 1000 out: $0.001052


def capped(max_tokens: dict[str, int]) -> dict[str, Any]:
    return {**BODY, **max_tokens}


def test_an_attempt_whose_estimate_exceeds_the_cap_is_not_started() -> None:
    body = capped({"max_tokens": 1000})
    assert estimate_prompt_tokens(body) == 104
    run = play(make([CHEAP, t("b/y", HALF)], body=body, max_cost=0.002), [None])
    assert run.log == ["start", "attempt b/y", "respond b/y", "finished"]
    assert run.flow.refused == {
        "a/x": "at least $0.002104 more would exceed max_cost $0.002 ($0.000000 spent)"}


def test_nothing_affordable_is_a_503_price_limit() -> None:
    run = play(make([CHEAP], body=capped({"max_tokens": 1000}), max_cost=0.002), [])
    assert run.log == ["start", "request_failed unavailable", "fail 503 price_limit"]
    assert run.of(Fail)[0].error.message == (
        f"{PRICE_LIMIT} Attempts: a/x: not tried, at least $0.002104 more would exceed "
        "max_cost $0.002 ($0.000000 spent).")


@pytest.mark.parametrize(("limits", "tried"), [
    ({"max_tokens": 949}, []),  # 104 + 2 * 949 = 2002 millionths: over
    ({"max_tokens": 948}, ["a/x"]),  # 104 + 2 * 948 = 2000: exactly the cap
    ({"max_tokens": 10, "max_completion_tokens": 1000}, []),  # max_completion_tokens wins
    ({"max_completion_tokens": 948, "max_tokens": 5000}, ["a/x"]),
    ({}, ["a/x"]),  # no limit: the prompt only
])
def test_the_estimate_uses_max_tokens(limits: dict[str, int], tried: list[str]) -> None:
    run = play(make([CHEAP], body=capped(limits), max_cost=0.002), [None] * len(tried))
    assert keys(run) == tried


def test_a_target_without_a_price_cannot_be_held_to_max_cost() -> None:
    run = play(make([t("a/x"), t("b/y", HALF)], body=capped({"max_tokens": 10}),
                    max_cost=1.0), [None])
    assert keys(run) == ["b/y"]
    assert run.flow.refused == {
        "a/x": "no price is known for it, so it cannot be held to max_cost $1"}


def test_a_hedge_is_not_started_when_the_pair_would_exceed_the_cap() -> None:
    targets = [t("a/x", HALF), t("b/y", HALF)]
    body = capped({"max_tokens": 1000})
    run = play(make(targets, body=body, max_cost=0.002, hedge_after=1.0),
               [connect(), None])
    first, second = run.of(Attempt)
    assert (first.target.key, first.hedge, first.hedge_after) == ("a/x", None, None)
    assert (second.target.key, second.hedge, second.hedge_after) == ("b/y", None, None)
    assert run.flow.refused == {}  # the hedge was not refused: it was tried later alone
    run = play(make(targets, body=body, max_cost=0.0022, hedge_after=1.0), [None])
    attempt = only(run.of(Attempt))
    assert (attempt.hedge, attempt.hedge_after) == (t("b/y"), 1.0)


# -- quota-aware order ------------------------------------------------------------------------


def test_low_quota_targets_are_tried_after_the_others() -> None:
    targets = [t("a/x"), t("b/y"), t("c/z")]
    run = play(make(targets, low_quota=frozenset({"a/x"})), [connect(), connect(), None])
    assert keys(run) == ["b/y", "c/z", "a/x"]


def test_a_low_quota_target_alone_is_still_tried() -> None:
    run = play(make([t("a/x")], low_quota=frozenset({"a/x"})), [None])
    assert run.log == ["start", "attempt a/x", "respond a/x", "finished"]


def test_low_quota_is_a_target_key_not_a_provider() -> None:
    run = play(make([t("a/x"), t("b/y")], low_quota=frozenset({"a"})), [None])
    assert keys(run) == ["a/x"]


def test_outage_providers_go_last_and_low_quota_targets_before_them() -> None:
    targets = [t("a/x"), t("b/y"), t("c/z"), t("d/w"), t("a/v")]
    flow = make(targets, deprioritised=frozenset({"a"}), low_quota=frozenset({"b/y", "a/v"}))
    run = play(flow, [connect()] * 4 + [None])
    assert keys(run) == ["c/z", "d/w", "b/y", "a/x", "a/v"]


# -- the client deadline split ----------------------------------------------------------------


def test_first_byte_is_half_the_time_left_while_other_targets_remain() -> None:
    flow = make([t("a/x"), t("b/y"), t("c/z")], deadline=10.0, budget=10.0)
    run = play(flow, [Step(connect(), 5.0), Step(connect(), 1.0), None])
    assert [(a.time_left, a.first_byte) for a in run.of(Attempt)] == [
        (10.0, 5.0), (5.0, 2.5), (4.0, None)]


def test_without_a_client_deadline_there_is_no_first_byte_limit() -> None:
    run = play(make([t("a/x"), t("b/y")], budget=10.0), [connect(), None])
    assert [a.first_byte for a in run.of(Attempt)] == [None, None]


def test_a_target_left_to_retry_counts_as_remaining() -> None:
    flow = make([t("a/x"), t("b/y")], deadline=8.0, budget=8.0)
    run = play(flow, [server(503), connect(), None])
    (delay,) = run.sleeps
    attempts = run.of(Attempt)
    assert keys(run) == ["a/x", "b/y", "a/x"]
    assert [a.first_byte for a in attempts] == [4.0, 4.0, None]
    assert attempts[2].time_left == (T0 + 8.0) - (T0 + delay)


def test_a_target_cooling_down_past_the_deadline_does_not_halve_the_last_usable_one() -> None:
    """SRC BUG: ``_first_byte_share`` counts any target left in the queue, even one that is
    out until long after the deadline, so the only usable target gets half the time and the
    request fails although that target would have answered within the client's deadline."""
    unavailable = {"b": Unavailable(T0 + 300, FailureKind.QUOTA)}
    flow = make([t("a/x"), t("b/y")], deadline=10.0, budget=10.0, unavailable=unavailable)
    run = play(flow, [None])
    assert only(run.of(Attempt)).first_byte is None


# -- stream resume ----------------------------------------------------------------------------

A = t("a/vendor/m1", (1.0, 2.0))
B = t("b/m2", (0.5, 1.0))
C = t("c/M1", (2.0, 4.0))  # the same base model as A, at another provider
BROKE = stream_broken()
USAGE = {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
PROMPT_TOKENS = 104


def resumed_run(**kwargs: Any) -> Run:
    flow = make([A, B, C], resume=ResumePolicy(), **kwargs)
    return play(flow, [Step(None, 0.5), Step(None, 0.25)],
                [Reply(Interrupted(BROKE, 7), 2.0), Reply(Delivered(USAGE), 1.0)])


def test_a_broken_stream_resumes_on_the_same_model_elsewhere() -> None:
    run = resumed_run()
    assert run.log == [
        "start", "attempt a/vendor/m1", "respond a/vendor/m1", "failed a/vendor/m1 stream_broken",
        "failover a/vendor/m1->c/M1", "attempt c/M1", "emit stream_resumed", "respond c/M1",
        "finished",
    ]
    first, second = run.of(Attempt)
    assert (first.resuming, second.resuming) == (False, True)
    assert (second.number, second.hedge, second.hedge_after) == (2, None, None)
    failed = only(run.events(signals.attempt_failed))
    assert (failed.provider, failed.model, failed.attempt, failed.error_kind, failed.status) == (
        "a", "vendor/m1", 1, "stream_broken", None)
    failover = only(run.events(signals.failover))
    assert (failover.to_provider, failover.error_kind, failover.attempt) == (
        "c", "stream_broken", 1)
    assert only(run.events(signals.stream_resumed)) == StreamResumed(
        "req_1", "chat/completions", "a", "vendor/m1", "c", "M1", "stream_broken", 7, 2)


def test_the_interrupted_attempt_is_recorded_as_failed() -> None:
    run = resumed_run()
    broken, ok = run.of(Record)
    assert (broken.keys, broken.ok, broken.ttfb, broken.kind, broken.status) == (
        ("a/vendor/m1",), False, 0.5, "stream_broken", None)
    assert (ok.keys, ok.ok, ok.ttfb, ok.total) == (("c/M1", "c"), True, 0.25, 1.25)


def test_the_finished_signal_merges_usage_and_lists_every_attempt() -> None:
    run = resumed_run()
    finished = only(run.events(signals.request_finished))
    assert (finished.provider, finished.model, finished.attempts, finished.stream) == (
        "c", "M1", 2, True)
    assert finished.usage == {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}
    broken_cost = Price(1.0, 2.0).cost(PROMPT_TOKENS, 7)
    served_cost = Price(2.0, 4.0).cost(20, 5)
    assert [(r.target, r.outcome, r.status, r.cost, r.resumed)
            for r in finished.attempts_detail] == [
        ("a/vendor/m1", "stream_broken", None, broken_cost, False),
        ("c/M1", "ok", 200, served_cost, True),
    ]
    assert finished.attempts_detail[1].latency == 1.25
    assert finished.cost == broken_cost + served_cost
    assert finished.latency == 3.75
    # the second Respond carries the record of the broken attempt
    second = run.of(Respond)[1]
    assert [r.target for r in second.detail] == ["a/vendor/m1"]
    assert second.latency == 0.25


def test_the_interrupted_attempts_latency_includes_its_time_to_first_byte() -> None:
    """SRC BUG: ``_interrupted`` is called with ``began=ended`` (the first byte's time), so
    the broken attempt's ``AttemptRecord.latency``, ``Record.total`` and ``attempt_failed``
    latency leave out its 0.5 s to the first byte, unlike a broken stream that ends the
    request (``_finish`` gets ``ended - ttfb``)."""
    not_resumed = play(make([A]), [Step(None, 0.5)], [Reply(Delivered(None, BROKE), 2.0)])
    assert not_resumed.flow.records[0].latency == 2.5
    run = resumed_run()
    broken = run.of(Record)[0]
    assert (broken.ttfb, broken.total) == (0.5, 2.5)
    assert run.flow.records[0].latency == 2.5
    assert only(run.events(signals.attempt_failed)).latency == 2.5


def test_without_a_same_model_target_the_next_in_order_continues() -> None:
    flow = make([A, B, t("c/z")], resume=ResumePolicy())
    run = play(flow, [None, None], [Interrupted(BROKE, 3), Delivered(None)])
    assert keys(run) == ["a/vendor/m1", "b/m2"]


def test_a_resumed_attempt_is_never_hedged() -> None:
    flow = make([A, B, t("c/z")], resume=ResumePolicy(), hedge_after=0.5)
    run = play(flow, [None, None], [Interrupted(BROKE, 3), Delivered(None)])
    first, second = run.of(Attempt)
    assert (first.hedge, first.hedge_after) == (B, 0.5)  # not started: back in line
    assert (second.target, second.resuming, second.hedge, second.hedge_after) == (
        B, True, None, None)


def test_a_failed_continuation_moves_on_still_resuming() -> None:
    flow = make([A, B, C], resume=ResumePolicy())
    run = play(flow, [None, connect(), None], [Interrupted(BROKE, 7), Delivered(USAGE)])
    assert run.log == [
        "start", "attempt a/vendor/m1", "respond a/vendor/m1", "failed a/vendor/m1 stream_broken",
        "failover a/vendor/m1->c/M1", "attempt c/M1", "failed c/M1 connect_error",
        "failover c/M1->b/m2", "attempt b/m2", "emit stream_resumed", "respond b/m2",
        "finished",
    ]
    assert [a.resuming for a in run.of(Attempt)] == [False, True, True]
    resumed = only(run.events(signals.stream_resumed))
    assert (resumed.from_provider, resumed.to_provider, resumed.sent_tokens,
            resumed.attempt) == ("a", "b", 7, 3)
    finished = only(run.events(signals.request_finished))
    assert [(r.target, r.outcome, r.cost) for r in finished.attempts_detail] == [
        ("a/vendor/m1", "stream_broken", Price(1.0, 2.0).cost(PROMPT_TOKENS, 7)),
        ("c/M1", "connect_error", 0.0),
        ("b/m2", "ok", Price(0.5, 1.0).cost(20, 5)),
    ]
    assert finished.usage == {"prompt_tokens": 20, "completion_tokens": 12, "total_tokens": 32}


def broken_twice() -> Run:
    flow = make([A, C, B], resume=ResumePolicy())
    return play(flow, [None, None, None],
                [Interrupted(BROKE, 7), Interrupted(BROKE, 12), Delivered(USAGE)])


def test_a_second_break_counts_only_the_new_part() -> None:
    run = broken_twice()
    assert keys(run) == ["a/vendor/m1", "c/M1", "b/m2"]
    first, second = run.events(signals.stream_resumed)
    assert (first.from_provider, first.to_provider, first.sent_tokens) == ("a", "c", 7)
    assert (second.from_provider, second.to_provider, second.sent_tokens) == ("c", "b", 12)
    finished = only(run.events(signals.request_finished))
    assert finished.usage == {"prompt_tokens": 20, "completion_tokens": 17, "total_tokens": 37}
    detail = finished.attempts_detail
    # the second part: 5 new tokens, its prompt including the 7 sent before it
    assert [r.cost for r in detail] == [
        Price(1.0, 2.0).cost(PROMPT_TOKENS, 7), Price(2.0, 4.0).cost(PROMPT_TOKENS + 7, 5),
        Price(0.5, 1.0).cost(20, 5)]
    assert [(r.target, r.outcome) for r in detail] == [
        ("a/vendor/m1", "stream_broken"), ("c/M1", "stream_broken"), ("b/m2", "ok")]
    assert [a.resuming for a in run.of(Attempt)] == [False, True, True]


def test_a_continuation_that_breaks_too_is_marked_resumed() -> None:
    """SRC BUG: c/M1 continued the broken stream (its Attempt had ``resuming=True``) before it
    broke too, but ``_interrupted`` never sets ``resumed`` on the record it writes, unlike
    ``_finish`` (``AttemptRecord.resumed`` marks the attempt that continued a broken stream)."""
    detail = broken_twice().flow.records
    assert [(r.target, r.resumed) for r in detail] == [
        ("a/vendor/m1", False), ("c/M1", True), ("b/m2", True)]


def test_resume_with_no_target_left_fails_after_the_interruption() -> None:
    flow = make([A], resume=ResumePolicy())
    run = play(flow, [Step(None, 0.5)], [Reply(Interrupted(BROKE, 7), 2.0)])
    assert run.log == [
        "start", "attempt a/vendor/m1", "respond a/vendor/m1", "failed a/vendor/m1 stream_broken",
        "request_failed stream_broken", "fail 502 all_targets_failed",
    ]
    error = run.of(Fail)[0].error
    assert error.message == "Every target failed. Attempts: a/vendor/m1: stream_broken."
    failed = only(run.events(signals.request_failed))
    assert (failed.status, failed.error_kind, failed.attempts, failed.provider) == (
        502, "stream_broken", 1, None)
    assert failed.cost == Price(1.0, 2.0).cost(PROMPT_TOKENS, 7)
    assert [(r.target, r.outcome) for r in failed.attempts_detail] == [
        ("a/vendor/m1", "stream_broken")]
    assert run.events(signals.stream_resumed) == []


def test_a_continuation_must_fit_max_cost_with_the_broken_part_spent() -> None:
    flow = make([A, t("c/M1", (1.0, 2.0))], resume=ResumePolicy(), max_cost=0.0015)
    run = play(flow, [None], [Interrupted(BROKE, 500)])
    # spent: 104 in + 500 out at A = $0.001104; next: (104 + 500) in = $0.000604
    error = run.of(Fail)[0].error
    assert (error.status, error.code) == (502, "price_limit")
    assert error.message == (
        f"{PRICE_LIMIT} Attempts: a/vendor/m1: stream_broken; c/M1: not tried, at least "
        "$0.000604 more would exceed max_cost $0.0015 ($0.001104 spent).")


def test_merge_usage() -> None:
    assert merge_usage(None, 5) is None
    assert merge_usage(USAGE, 0) is USAGE
    assert merge_usage(USAGE, 5) == {"prompt_tokens": 20, "completion_tokens": 10,
                                     "total_tokens": 30}
    assert USAGE == {"prompt_tokens": 20, "completion_tokens": 5, "total_tokens": 25}
    assert merge_usage({"prompt_tokens": 3, "total_tokens": 9}, 5) == {
        "prompt_tokens": 3, "total_tokens": 9}
    assert merge_usage({"completion_tokens": 1}, 5) == {"completion_tokens": 6}


# -- the attempts record ----------------------------------------------------------------------


def test_attempt_record_as_json() -> None:
    assert AttemptRecord("a/x", "ok", 200, 0.00123456, 0.000123456789).as_json() == {
        "target": "a/x", "outcome": "ok", "status": 200, "ms": 1.2, "cost": 0.00012346}
    assert AttemptRecord("b/y", "stream_broken", None, 2.5, None, True).as_json() == {
        "target": "b/y", "outcome": "stream_broken", "status": None, "ms": 2500.0,
        "cost": None, "resumed": True}


def test_failed_attempts_cost_nothing_when_the_price_is_known() -> None:
    run = play(make([CHEAP, t("b/y"), NEAR]), [connect(), connect(), None],
               [Delivered({"prompt_tokens": 10, "completion_tokens": 2})])
    finished = only(run.events(signals.request_finished))
    assert [(r.target, r.outcome, r.cost) for r in finished.attempts_detail] == [
        ("a/x", "connect_error", 0.0), ("b/y", "connect_error", None),
        ("c/z", "ok", Price(1.5, 3.0).cost(10, 2))]
    assert finished.cost == Price(1.5, 3.0).cost(10, 2)


def test_no_known_cost_is_none() -> None:
    run = play(make([t("a/x")]), [None], [Delivered(USAGE)])
    finished = only(run.events(signals.request_finished))
    assert (finished.cost, finished.attempts_detail) == (
        None, (AttemptRecord("a/x", "ok", 200, 0.0, None),))


# -- listening --------------------------------------------------------------------------------


def not_start_or_finish(signal: Signal) -> bool:
    return signal not in (signals.request_started, signals.request_finished)


def test_unheard_start_and_finish_are_not_emitted() -> None:
    run = play(make([t("a/x")], listening=not_start_or_finish), [None])
    assert run.full_log == ["attempt a/x", "respond a/x", "record a/x,a ok"]
    assert run.flow.records == []


def test_failures_still_report_when_start_and_finish_are_unheard() -> None:
    run = play(make([t("a/x"), t("b/y")], listening=not_start_or_finish), [connect(), None])
    assert run.log == ["attempt a/x", "failed a/x connect_error", "failover a/x->b/y",
                       "attempt b/y", "respond b/y"]
    run = play(make([t("a/x")], listening=not_start_or_finish), [connect()])
    assert run.log == ["attempt a/x", "failed a/x connect_error",
                       "request_failed connect_error", "fail 502 all_targets_failed"]
    run = play(make([t("a/x")], listening=not_start_or_finish), [None],
               [Delivered(None, BROKE)])
    assert run.log == ["attempt a/x", "respond a/x", "failed a/x stream_broken",
                       "request_failed stream_broken"]


def test_a_resume_still_reports_when_start_and_finish_are_unheard() -> None:
    run = resumed_run(listening=not_start_or_finish)
    assert run.log == [
        "attempt a/vendor/m1", "respond a/vendor/m1", "failed a/vendor/m1 stream_broken",
        "failover a/vendor/m1->c/M1", "attempt c/M1", "emit stream_resumed", "respond c/M1",
    ]
    assert not [a for a in run.actions if isinstance(a, Emit)
                and a.signal in (signals.request_started, signals.request_finished)]
