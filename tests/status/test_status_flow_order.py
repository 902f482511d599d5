"""Sans-IO: the flow takes the deprioritised providers as input and tries them last."""

from __future__ import annotations

import random

from badgr_middleware.config import Cooldowns, RetryPolicy
from badgr_middleware.routing.flow import Attempt, Fail, Flow, Record, Respond
from badgr_middleware.routing.outcomes import Delivered, Failure, FailureKind
from badgr_middleware.routing.plan import Plan, RoutedRequest, Target


def attempts(deprioritised: frozenset[str], fail: set[str], routing: str = "ordered") -> list[
    str
]:
    targets = (Target("a", "x"), Target("b", "x"), Target("c", "x"))
    request = RoutedRequest("chat/completions", {}, Plan(targets, routing=routing), "req_1")
    flow = Flow(request, retry=RetryPolicy(attempts_per_target=1), cooldowns=Cooldowns(),
                budget=60.0, unavailable={}, clock=lambda: 1000.0, rng=random.Random(1),
                deprioritised=deprioritised).run()
    tried: list[str] = []
    result = None
    while True:
        try:
            action = flow.send(result)
        except StopIteration:
            return tried
        result = None
        if isinstance(action, Attempt):
            tried.append(action.target.provider)
            if action.target.provider in fail:
                result = Failure(FailureKind.SERVER, 503)
        elif isinstance(action, Respond):
            result = Delivered()
        elif isinstance(action, Fail):
            return tried


def test_deprioritised_providers_go_last_in_order() -> None:
    assert attempts(frozenset(), set()) == ["a"]
    assert attempts(frozenset({"a"}), set()) == ["b"]
    assert attempts(frozenset({"a", "b"}), set()) == ["c"]


def test_deprioritised_is_not_excluded() -> None:
    assert attempts(frozenset({"a"}), {"b", "c"}) == ["b", "c", "a"]
    assert attempts(frozenset({"a", "b"}), {"c", "a"}) == ["c", "a", "b"]


def test_failures_record_their_kind_and_status() -> None:
    targets = (Target("a", "x"), Target("b", "x"))
    request = RoutedRequest("chat/completions", {}, Plan(targets), "req_1")
    flow = Flow(request, retry=RetryPolicy(attempts_per_target=1), cooldowns=Cooldowns(),
                budget=60.0, unavailable={}, clock=lambda: 1000.0, rng=random.Random(1)).run()
    records: list[Record] = []
    result = None
    while True:
        try:
            action = flow.send(result)
        except StopIteration:
            break
        result = None
        if isinstance(action, Attempt) and action.target.provider == "a":
            result = Failure(FailureKind.SERVER, 502)
        elif isinstance(action, Respond):
            result = Delivered()
        elif isinstance(action, Record):
            records.append(action)
    assert [(r.keys, r.ok, r.kind, r.status) for r in records] == [
        (("a/x", "a"), False, "server_error", 502),
        (("b/x", "b"), True, None, None),
    ]
