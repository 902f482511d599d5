"""One table of scripted scenarios, run against every health store, sync and async.

Each scenario is a policy and a sequence of calls with explicit times (seconds after a base
time) and the results they must give. The Redis store must also give exactly (bit for bit) what
the in-memory reference gives for the same calls.

Times are offsets from a wall-clock base in the near future, a multiple of 60 000 s, so bucket
boundaries fall on whole offsets and Redis' own expiry (PEXPIREAT at a cooldown's end) never
removes a key before the scenario's clock says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from badgr_middleware import signals
from badgr_middleware.health import MemoryHealthStore
from badgr_middleware.health.redis import RedisHealthStore

# -- the table ----------------------------------------------------------------------------------

Change = tuple[str, str, str, float | None]  # key, state, reason, until (offset)


@dataclass(frozen=True)
class Step:
    op: str  # record | admit | cooldown | snapshot
    args: tuple[Any, ...]
    expect: Any


def rec(keys: str | list[str], ok: bool, t: float, changes: list[Change] | None = None, *,
        ttfb: float | None = None, total: float | None = None, kind: str | None = None,
        status: int | None = None) -> Step:
    keys = [keys] if isinstance(keys, str) else keys
    return Step("record", (keys, ok, t, ttfb, total, kind, status), changes or [])


def stats(keys: str | list[str], t: float, expect: dict[str, tuple[Any, ...]]) -> Step:
    """A snapshot with request statistics: key -> (breaker, served, failed, {minute offset:
    (successes, failures)} for the non-empty minutes of the history, last error as (kind,
    status, at) or None)."""
    keys = [keys] if isinstance(keys, str) else keys
    return Step("stats", (keys, t), expect)


def adm(key: str, t: float, admitted: bool, changes: list[Change] | None = None) -> Step:
    return Step("admit", (key, t), (admitted, changes or []))


def cool(key: str, until: float, kind: str) -> Step:
    return Step("cooldown", (key, until, kind), None)


def snap(keys: str | list[str], t: float, expect: dict[str, tuple[Any, ...]]) -> Step:
    keys = [keys] if isinstance(keys, str) else keys
    return Step("snapshot", (keys, t), expect)


def health(breaker: str = "closed", *, open_until: float | None = None,
           cooldown: tuple[float, str] | None = None,
           latency: tuple[float, float, float, int] | None = None) -> tuple[Any, ...]:
    """A KeyHealth in comparable form: (cooldown until, kind, breaker, open_until, latency)."""
    until, kind = cooldown if cooldown else (None, None)
    return (until, kind, breaker, open_until, latency)


@dataclass(frozen=True)
class Scenario:
    name: str
    policy: dict[str, Any]
    steps: list[Step] = field(default_factory=list)


T, P = "openrouter/openai/gpt-4o", "openrouter"  # a target and its provider
T2 = "openrouter/anthropic/claude"
ODD = "odd:key with spaces/ü*?[x]"  # separators and glob characters are just characters

SCENARIOS = [
    Scenario("consecutive failures open",
             {"consecutive_failures": 3, "window": 10, "open_for": 5}, [
        rec(T, False, 0),
        rec(T, False, 1),
        snap(T, 1.5, {T: health()}),
        rec(T, False, 2, [(T, "open", "failures", 7)]),
        snap(T, 2, {T: health("open", open_until=7)}),
        snap(T, 6.9, {T: health("open", open_until=7)}),
        # due for probes: reported half_open, still open underneath (open_until kept)
        snap(T, 7, {T: health("half_open", open_until=7)}),
        snap(T, 8, {T: health("half_open", open_until=7)}),
    ]),
    Scenario("success resets the consecutive count",
             {"consecutive_failures": 3, "min_requests": 100, "window": 10, "open_for": 5}, [
        rec(T, False, 0),
        rec(T, False, 1),
        rec(T, True, 2),
        rec(T, False, 3),
        rec(T, False, 4),
        snap(T, 4, {T: health()}),
        rec(T, False, 5, [(T, "open", "failures", 10)]),
    ]),
    Scenario("failure rate opens once min_requests results are in",
             {"consecutive_failures": 100, "failure_rate": 0.5, "min_requests": 4, "window": 10,
              "open_for": 5}, [
        rec(T, True, 0),
        rec(T, False, 1),  # 1 of 2 failed: rate reached, too few results
        rec(T, True, 2),
        rec(T, False, 3, [(T, "open", "failures", 8)]),  # 2 of 4
    ]),
    Scenario("failure rate below min_requests never opens",
             {"consecutive_failures": 100, "failure_rate": 0.5, "min_requests": 10, "window": 10},
             [*(rec(T, False, t) for t in range(9)),
              snap(T, 9, {T: health()}),
              rec(T, False, 9, [(T, "open", "failures", 39)])]),  # the 10th result; open_for 30
    Scenario("failure rate with min_requests of one",
             {"consecutive_failures": 100, "failure_rate": 0.5, "min_requests": 1, "window": 10,
              "open_for": 5}, [
        rec(T, True, 0),
        rec(T, True, 0.5),
        rec(T, False, 1),  # 1 of 3
        rec(T, False, 2, [(T, "open", "failures", 7)]),  # 2 of 4
    ]),
    Scenario("failure rate below the threshold stays closed",
             {"consecutive_failures": 100, "failure_rate": 0.6, "min_requests": 4, "window": 10}, [
        rec(T, True, 0), rec(T, False, 1), rec(T, True, 2), rec(T, False, 3),  # 0.5 < 0.6
        rec(T, True, 4), rec(T, False, 5),
        snap(T, 5, {T: health()}),
        rec(T, False, 6),  # 4 of 7 < 0.6
        rec(T, False, 7, [(T, "open", "failures", 37)]),  # 5 of 8; open_for 30
    ]),
    Scenario("old buckets slide out of the window",
             {"consecutive_failures": 100, "failure_rate": 0.5, "min_requests": 4, "window": 10,
              "open_for": 5}, [
        rec(T, False, 0), rec(T, False, 1), rec(T, False, 2.5),
        # at 12 the window holds buckets 3..12: the three failures are gone
        rec(T, False, 12),
        rec(T, True, 12.2),
        rec(T, True, 12.4),
        snap(T, 12.4, {T: health()}),
        rec(T, False, 12.6, [(T, "open", "failures", 17.6)]),  # 2 of 4
    ]),
    Scenario("bucket boundary: the window is the last BUCKETS buckets",
             {"consecutive_failures": 100, "failure_rate": 0.5, "min_requests": 3, "window": 10,
              "open_for": 5}, [
        rec(T, False, 1.5),  # bucket 1
        rec(T, False, 2.5),  # bucket 2
        rec(T, False, 11.5),  # bucket 11: keeps 2..11, so 2 results
        rec(T, False, 11.6, [(T, "open", "failures", 16.6)]),
    ]),
    Scenario("open -> half_open on admit after open_for; probe limit",
             {"consecutive_failures": 1, "open_for": 5, "half_open_probes": 2}, [
        rec(T, False, 0, [(T, "open", "failures", 5)]),
        adm(T, 4.9, False),
        snap(T, 4.9, {T: health("open", open_until=5)}),
        adm(T, 5, True, [(T, "half_open", "probe", None)]),
        snap(T, 5, {T: health("half_open")}),
        adm(T, 5.1, True),
        adm(T, 5.2, False),
        adm(T, 9, False),
        snap(T, 9, {T: health("half_open")}),
    ]),
    Scenario("stuck probes expire after open_for",
             {"consecutive_failures": 1, "open_for": 5, "half_open_probes": 1}, [
        rec(T, False, 0, [(T, "open", "failures", 5)]),
        adm(T, 5, True, [(T, "half_open", "probe", None)]),
        adm(T, 6, False),
        adm(T, 9.99, False),
        adm(T, 10, True),  # the probe of 5 never reported: its slot is free again
        adm(T, 10.5, False),
    ]),
    Scenario("stuck probes free their slots one by one",
             {"consecutive_failures": 1, "open_for": 5, "half_open_probes": 2}, [
        rec(T, False, 0, [(T, "open", "failures", 5)]),
        adm(T, 5, True, [(T, "half_open", "probe", None)]),
        adm(T, 6, True),
        adm(T, 10.5, False),  # both slots still taken
        adm(T, 11, True),  # open_for after the last probe: every slot is free again
        adm(T, 11.5, True),
        adm(T, 12, False),
    ]),
    Scenario("half-open success closes and clears the counters",
             {"consecutive_failures": 2, "window": 10, "open_for": 5}, [
        rec(T, False, 0),
        rec(T, False, 0.5, [(T, "open", "failures", 5.5)]),
        adm(T, 5.5, True, [(T, "half_open", "probe", None)]),
        rec(T, True, 6, [(T, "closed", "probe", None)]),
        snap(T, 6, {}),  # nothing left to report
        adm(T, 6, True),
        rec(T, False, 7),  # one failure: the old count is gone
        snap(T, 7, {T: health()}),
    ]),
    Scenario("half-open failure reopens",
             {"consecutive_failures": 1, "open_for": 5}, [
        rec(T, False, 0, [(T, "open", "failures", 5)]),
        adm(T, 5, True, [(T, "half_open", "probe", None)]),
        rec(T, False, 6, [(T, "open", "failures", 11)]),
        snap(T, 6, {T: health("open", open_until=11)}),
        adm(T, 10.9, False),
        adm(T, 11, True, [(T, "half_open", "probe", None)]),
    ]),
    Scenario("late results while open are ignored",
             {"consecutive_failures": 1, "open_for": 5}, [
        rec(T, False, 0, [(T, "open", "failures", 5)]),
        rec(T, True, 1),
        rec(T, False, 2),
        snap(T, 2, {T: health("open", open_until=5)}),
        adm(T, 4, False),
    ]),
    Scenario("cooldowns: later wins, kinds, expiry", {}, [
        cool(P, 30, "rate_limit"),
        cool(P, 20, "auth"),  # earlier: ignored
        snap(P, 10, {P: health(cooldown=(30, "rate_limit"))}),
        cool(P, 40, "payment"),  # later: wins, with its kind
        cool(P, 40, "not_found"),  # same end: the first one stays
        cool(T, 15, "not_found"),
        snap([P, T], 10, {P: health(cooldown=(40, "payment")),
                          T: health(cooldown=(15, "not_found"))}),
        snap([P, T], 15, {P: health(cooldown=(40, "payment"))}),  # T's ended at 15
        snap(P, 39.9, {P: health(cooldown=(40, "payment"))}),
        snap([P, T], 40, {}),
    ]),
    Scenario("cooldown alongside a breaker", {"consecutive_failures": 1, "open_for": 5}, [
        cool(P, 60, "rate_limit"),
        rec(P, False, 1, [(P, "open", "failures", 6)]),
        snap(P, 2, {P: health("open", open_until=6, cooldown=(60, "rate_limit"))}),
        snap(P, 7, {P: health("half_open", open_until=6, cooldown=(60, "rate_limit"))}),
    ]),
    Scenario("latency EWMA", {"consecutive_failures": 100}, [
        rec(T, True, 0, ttfb=1.0, total=4.0),  # first sample taken as is
        snap(T, 0, {T: health(latency=(1.0, 0.0, 4.0, 1))}),
        rec(T, True, 1, ttfb=2.0, total=6.0),  # mean 1 + .2*1; var .8*(0 + .2*1*1)
        snap(T, 1, {T: health(latency=(1.2, 0.16, 4.4, 2))}),
        rec(T, True, 2, total=5.4),  # ttfb missing: only the total moves
        snap(T, 2, {T: health(latency=(1.2, 0.16, 4.6, 3))}),
        rec(T, False, 3, ttfb=0.2),  # failures count too; delta -1
        snap(T, 3, {T: health(latency=(1.0, 0.288, 4.6, 4))}),
        rec(T, True, 4),  # nothing measured: latency untouched
        snap(T, 4, {T: health(latency=(1.0, 0.288, 4.6, 4))}),
    ]),
    Scenario("latency: a total-only first sample", {}, [
        # the reference (latency.update) then blends the first ttfb with 0: mean .2*2, var
        # .8*(.2*4); reproduced as is
        rec(T2, True, 0, total=3.0),
        snap(T2, 0, {T2: health(latency=(0.0, 0.0, 3.0, 1))}),
        rec(T2, True, 1, ttfb=2.0, total=5.0),
        snap(T2, 1, {T2: health(latency=(0.4, 0.64, 3.4, 2))}),
    ]),
    Scenario("unknown keys", {}, [
        snap([T, P, ODD], 0, {}),
        adm(ODD, 0, True),
        rec(ODD, True, 1),
        snap([T, ODD], 1, {ODD: health()}),
    ]),
    Scenario("one record for target and provider",
             {"consecutive_failures": 2, "window": 10, "open_for": 5}, [
        rec([T, P], False, 0, ttfb=0.5),
        rec([T2, P], False, 1, [(P, "open", "failures", 6)], ttfb=0.7, total=1.5),
        snap([T, T2, P], 1, {T: health(latency=(0.5, 0.0, 0.0, 1)),
                             T2: health(latency=(0.7, 0.0, 1.5, 1)),
                             P: health("open", open_until=6)}),
        rec([T, P], False, 2, [(T, "open", "failures", 7)]),  # P: open, result ignored
        adm(P, 6, True, [(P, "half_open", "probe", None)]),
        adm(T, 7, True, [(T, "half_open", "probe", None)]),
        rec([T, P], True, 7.5, [(T, "closed", "probe", None), (P, "closed", "probe", None)]),
        snap([T, T2, P], 7.5, {T: health(latency=(0.5, 0.0, 0.0, 1)),
                               T2: health(latency=(0.7, 0.0, 1.5, 1))}),
    ]),
    Scenario("the same key twice in one record", {"consecutive_failures": 2, "open_for": 5}, [
        rec([T, T], False, 0, [(T, "open", "failures", 5)]),
        stats(T, 0, {T: ("open", 0, 1, {0: (0, 1)}, ("failure", None, 0))}),  # counted once
    ]),
    Scenario("request statistics: totals, minutes, last error", {"consecutive_failures": 100}, [
        stats([T, P], 0, {}),
        rec([T, P], True, 1, ttfb=0.5, total=1.0),
        rec([T, P], True, 2),
        rec([T, P], False, 3.25, kind="server_error", status=503),
        rec(T, False, 61, kind="bad_response"),  # the next minute; status unknown
        snap([T, P], 61, {T: health(latency=(0.5, 0.0, 1.0, 1)), P: health()}),  # no stats
        stats([T, P, T2], 61, {
            T: ("closed", 2, 2, {-1: (2, 1), 0: (0, 1)}, ("bad_response", None, 61)),
            P: ("closed", 2, 1, {-1: (2, 1)}, ("server_error", 503, 3.25)),
        }),
        rec(P, True, 119.9),
        stats(P, 119.9, {P: ("closed", 3, 1, {-1: (2, 1), 0: (1, 0)},
                             ("server_error", 503, 3.25))}),
        # an hour later the old minutes are out of the history, the totals stay
        rec(P, False, 3600 + 30, kind="timeout"),
        stats(P, 3600 + 59, {P: ("closed", 3, 2, {-59: (1, 0), 0: (0, 1)},
                                 ("timeout", None, 3630))}),
        stats(P, 3600 + 120 + 59, {P: ("closed", 3, 2, {-2: (0, 1)}, ("timeout", None, 3630))}),
    ]),
    Scenario("request statistics beside cooldowns and open breakers",
             {"consecutive_failures": 1, "open_for": 5}, [
        cool(T2, 30, "rate_limited"),
        stats(T2, 1, {T2: ("closed", 0, 0, {}, None)}),
        rec(T2, False, 2, [(T2, "open", "failures", 7)], kind="connect_error"),
        rec(T2, True, 3),  # ignored by the open breaker, still a result served
        stats(T2, 3, {T2: ("open", 1, 1, {0: (1, 1)}, ("connect_error", None, 2))}),
    ]),
]

# -- running ------------------------------------------------------------------------------------


def _base() -> float:
    return float((int(time.time()) // 60_000 + 1) * 60_000)


def _rel(value: float | None, base: float) -> float | None:
    return None if value is None else round(value - base, 5)


def _changes(changes: list[Any], base: float) -> list[Change]:
    return [(c.key, c.state, c.reason, _rel(c.until, base)) for c in changes]


def _comparable(op: str, result: Any, base: float) -> Any:
    if op == "record":
        return _changes(result, base)
    if op == "admit":
        return (result[0], _changes(result[1], base))
    if op == "stats":
        minute = None
        out = {}
        for key, h in result.items():
            minute = len(h.history) - 1
            minutes = {m - minute: tuple(c) for m, c in enumerate(h.history) if c != (0, 0)}
            error = None
            if h.last_error is not None:
                e = h.last_error
                error = (e.kind, e.status, _rel(e.at, base))
            out[key] = (h.breaker, h.served, h.failed, minutes, error)
        return out
    if op == "snapshot":
        out = {}
        for key, h in result.items():
            latency = None
            if h.latency is not None:
                lat = h.latency
                latency = (round(lat.ttfb, 9), round(lat.ttfb_var, 9), round(lat.total, 9),
                           lat.samples)
            out[key] = (_rel(h.cooldown_until, base), h.cooldown_kind, h.breaker,
                        _rel(h.open_until, base), latency)
        return out
    return result


def _absolute(step: Step, base: float) -> tuple[Any, ...]:
    if step.op == "record":
        keys, ok, t, ttfb, total, kind, status = step.args
        return (keys, ok, base + t, ttfb, total, kind, status)
    if step.op == "cooldown":
        key, until, kind = step.args
        return (key, base + until, kind)
    *head, t = step.args
    return (*head, base + t)


def run_sync(store: Any, scenario: Scenario, base: float) -> list[Any]:
    results = []
    for number, step in enumerate(scenario.steps):
        if step.op == "stats":
            result = store.snapshot(*_absolute(step, base), stats=True)
        else:
            result = getattr(store, step.op)(*_absolute(step, base))
        results.append(result)
        assert _comparable(step.op, result, base) == step.expect, f"step {number}: {step}"
    return results


async def run_async(store: Any, scenario: Scenario, base: float) -> list[Any]:
    results = []
    for number, step in enumerate(scenario.steps):
        if step.op == "stats":
            result = await store.asnapshot(*_absolute(step, base), stats=True)
        else:
            result = await getattr(store, "a" + step.op)(*_absolute(step, base))
        results.append(result)
        assert _comparable(step.op, result, base) == step.expect, f"step {number}: {step}"
    return results


@pytest.fixture
def degradations() -> Any:
    """Every store_degraded event while the test runs: a conformance run must see none."""
    events: list[Any] = []

    def receiver(sender: Any, event: Any) -> None:
        events.append(event)

    with signals.store_degraded.connected_to(receiver):
        yield events


@pytest.fixture
def new_store(request: pytest.FixtureRequest, make_policy: Callable[..., Any]) -> Any:
    made: list[Any] = []

    def new(backend: str, scenario: Scenario) -> Any:
        policy = make_policy(**scenario.policy)
        if backend == "memory":
            return MemoryHealthStore(policy)
        url = request.getfixturevalue("redis_url")
        prefix = request.getfixturevalue("key_prefix")
        store = RedisHealthStore(url, policy=policy, key_prefix=prefix, timeout=1.0)
        made.append(store)
        return store

    yield new
    for store in made:
        store.close()


IDS = [s.name.replace(" ", "-") for s in SCENARIOS]


@pytest.mark.parametrize("backend", ["memory", "redis"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
def test_scenario_sync(backend: str, scenario: Scenario, new_store: Any, degradations: list[Any],
                       make_policy: Callable[..., Any]) -> None:
    base = _base()
    results = run_sync(new_store(backend, scenario), scenario, base)
    if backend == "redis":
        reference = run_sync(MemoryHealthStore(make_policy(**scenario.policy)), scenario, base)
        assert results == reference  # exactly: same floats, bit for bit
        assert degradations == []


@pytest.mark.anyio
@pytest.mark.parametrize("backend", ["memory", "redis"])
@pytest.mark.parametrize("scenario", SCENARIOS, ids=IDS)
async def test_scenario_async(backend: str, scenario: Scenario, new_store: Any,
                              degradations: list[Any], make_policy: Callable[..., Any]) -> None:
    base = _base()
    store = new_store(backend, scenario)
    try:
        results = await run_async(store, scenario, base)
    finally:
        if backend == "redis":
            await store.aclose()
    if backend == "redis":
        reference = run_sync(MemoryHealthStore(make_policy(**scenario.policy)), scenario, base)
        assert results == reference
        assert degradations == []


def test_table_covers_every_operation() -> None:
    ops = {step.op for scenario in SCENARIOS for step in scenario.steps}
    assert ops == {"record", "admit", "cooldown", "snapshot", "stats"}
