"""The circuit breaker's pure transitions, driven with injected time."""

from __future__ import annotations

import pytest

from badgr_middleware.config import BreakerPolicy
from badgr_middleware.health import breaker
from badgr_middleware.health.breaker import BreakerState, admit, open_until, record
from badgr_middleware.health.latency import LatencyStats, update

POLICY = BreakerPolicy(consecutive_failures=3, failure_rate=0.5, min_requests=4, window=10.0,
                       open_for=5.0, half_open_probes=1)


def run(results: list[tuple[float, bool]], state: BreakerState | None = None
        ) -> tuple[BreakerState, list[str | None]]:
    state = state or BreakerState()
    transitions = []
    for now, ok in results:
        state, transition = record(state, ok, now, POLICY)
        transitions.append(transition)
    return state, transitions


def test_consecutive_failures_open_the_breaker() -> None:
    state, transitions = run([(0, False), (1, False), (2, False)])
    assert transitions == [None, None, "open"]
    assert state.state == "open" and open_until(state, POLICY) == 7.0


def test_a_success_resets_the_consecutive_count() -> None:
    policy = BreakerPolicy(consecutive_failures=3, min_requests=100)
    state = BreakerState()
    for now, ok in [(0, False), (1, False), (2, True), (3, False), (4, False)]:
        state, transition = record(state, ok, now, policy)
        assert transition is None
    assert state.state == "closed" and state.consecutive == 2


def test_failure_rate_opens_once_enough_results_are_in_the_window() -> None:
    # alternate: never 3 in a row, but 2 of 4 failed -> rate 0.5 at the 4th result
    state, transitions = run([(0, True), (1, False), (2, True), (3, False)])
    assert transitions == [None, None, None, "open"]


def test_failure_rate_needs_min_requests() -> None:
    state, transitions = run([(0, True), (1, False), (2, False)][:2])
    assert transitions == [None, None] and state.state == "closed"


def test_results_older_than_the_window_slide_out() -> None:
    state, _ = run([(0, True), (1, False), (2, True)])
    # 20 s later the old results are gone: one failure among one result is below min_requests
    state, transition = record(state, False, 20.0, POLICY)
    assert transition is None
    assert sum(b[1] + b[2] for b in state.buckets) == 1


def test_open_refuses_until_open_for_passes_then_half_opens_with_one_probe() -> None:
    state, _ = run([(0, False), (0, False), (0, False)])
    assert admit(state, 4.9, POLICY)[1:] == (False, None)
    state, admitted, transition = admit(state, 5.0, POLICY)
    assert (admitted, transition, state.state) == (True, "half_open", "half_open")
    state, admitted, transition = admit(state, 5.1, POLICY)
    assert (admitted, transition) == (False, None)  # the one probe slot is taken


def test_a_stuck_probe_expires_after_open_for() -> None:
    state, _ = run([(0, False), (0, False), (0, False)])
    state, admitted, _ = admit(state, 5.0, POLICY)
    assert admitted
    state, admitted, _ = admit(state, 10.0, POLICY)
    assert admitted and state.probes == 1


@pytest.mark.parametrize(("ok", "after", "transition"), [(True, "closed", "closed"),
                                                          (False, "open", "open")])
def test_the_probe_result_closes_or_reopens(ok: bool, after: str, transition: str) -> None:
    state, _ = run([(0, False), (0, False), (0, False)])
    state, _, _ = admit(state, 6.0, POLICY)
    state, got = record(state, ok, 6.5, POLICY)
    assert (state.state, got) == (after, transition)
    if ok:
        assert state == BreakerState()
    else:
        assert open_until(state, POLICY) == 11.5


def test_late_results_while_open_are_ignored() -> None:
    state, _ = run([(0, False), (0, False), (0, False)])
    assert record(state, True, 1.0, POLICY) == (state, None)


def test_closed_always_admits() -> None:
    assert admit(BreakerState(), 0.0, POLICY) == (BreakerState(), True, None)


def test_buckets_are_the_configured_number() -> None:
    state, _ = run([(float(t), True) for t in range(30)])
    assert len(state.buckets) <= breaker.BUCKETS


def test_latency_ewma() -> None:
    stats = update(None, 1.0, 2.0)
    assert stats == LatencyStats(1.0, 0.0, 2.0, 1)
    stats = update(stats, 2.0, 4.0)
    assert stats.ttfb == pytest.approx(1.2)
    assert stats.ttfb_var == pytest.approx(0.8 * 0.2 * 1.0)
    assert stats.total == pytest.approx(2.4)
    assert stats.ttfb_p95 == pytest.approx(1.2 + 1.645 * (0.16 ** 0.5))
    assert update(stats, None, None).samples == 3
