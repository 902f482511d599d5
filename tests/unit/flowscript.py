"""A scripted driver for :class:`badgr_middleware.routing.flow.Flow`.

It plays the part of the sync/async drivers without any I/O: every ``Attempt`` is answered from
a script, ``Sleep`` advances a fake clock by exactly the slept seconds, an attempt may also take
a scripted latency, and every action is recorded. Tests then assert the exact action sequence in
a compact rendering such as::

    ["start", "attempt a/x", "failed a/x server_error", "failover a/x->b/y", "attempt b/y",
     "respond b/y", "finished"]
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from badgr_middleware import signals
from badgr_middleware.config import Cooldowns, RetryPolicy
from badgr_middleware.health.latency import LatencyStats
from badgr_middleware.routing.flow import (
    Admit,
    Attempt,
    Cooldown,
    Emit,
    Fail,
    Flow,
    Record,
    Respond,
    Sleep,
    Unavailable,
)
from badgr_middleware.routing.outcomes import Delivered, Failure, FailureKind
from badgr_middleware.routing.plan import Plan, RoutedRequest, Target

T0 = 1000.0
SEED = 7
MAX_ACTIONS = 500


class FakeClock:
    """A clock that only moves when told to."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        assert seconds >= 0, f"time must not go backwards ({seconds})"
        self.now += seconds


@dataclass(frozen=True)
class Step:
    """One scripted attempt: its outcome and how long it took on the fake clock."""

    outcome: Failure | None
    latency: float = 0.0


def target(spec: str, context_window: int | None = None) -> Target:
    provider, _, model = spec.partition("/")
    return Target(provider, model, context_window)


def fail(kind: FailureKind, status: int | None = None, **kwargs: Any) -> Failure:
    return Failure(kind, status, **kwargs)


# short constructors for the failures of the policy table
def server(status: int = 500, retry_after: float | None = None) -> Failure:
    return Failure(FailureKind.SERVER, status, "upstream broke", retry_after=retry_after)


def rate_limited(retry_after: float | None = None) -> Failure:
    return Failure(FailureKind.RATE_LIMITED, 429, "slow down", retry_after=retry_after)


def quota() -> Failure:
    return Failure(FailureKind.QUOTA, 402, "no credits", "insufficient_quota")


def auth(status: int = 401) -> Failure:
    return Failure(FailureKind.AUTH, status, "bad key", "invalid_api_key")


def not_found() -> Failure:
    return Failure(FailureKind.NOT_FOUND, 404, "no such model", "model_not_found")


def context_length(message: str = "maximum context length is 8000 tokens") -> Failure:
    return Failure(FailureKind.CONTEXT_LENGTH, 400, message, "context_length_exceeded",
                   param="messages")


def client(status: int = 400) -> Failure:
    return Failure(FailureKind.CLIENT, status, "temperature is wrong", "invalid_value",
                   param="temperature")


def connect() -> Failure:
    return Failure(FailureKind.CONNECT, None, "refused", "connect_error")


def timeout() -> Failure:
    return Failure(FailureKind.TIMEOUT, None, "too slow", "upstream_timeout")


def bad_response() -> Failure:
    return Failure(FailureKind.BAD_RESPONSE, 200, "error body", "bad_response")


def stream_broken() -> Failure:
    return Failure(FailureKind.STREAM_BROKEN, None, "broke", "stream_interrupted")


def make_flow(
    targets: Sequence[str | Target],
    *,
    clock: FakeClock | None = None,
    retry: RetryPolicy | None = None,
    cooldowns: Cooldowns | None = None,
    budget: float = 60.0,
    unavailable: Mapping[str, Unavailable] | None = None,
    seed: int = SEED,
    stream: bool = False,
    route: str = "chat/completions",
    request_id: str = "req_1",
    half_open: frozenset[str] = frozenset(),
    latency: Mapping[str, LatencyStats] | None = None,
    routing: str = "ordered",
    hedge_after: float | str | None = None,
) -> Flow:
    resolved = tuple(t if isinstance(t, Target) else target(t) for t in targets)
    plan = Plan(resolved, None, routing, hedge_after)
    request = RoutedRequest(route, {"model": "m"}, plan, request_id, stream, "m", hedge_after)
    return Flow(
        request,
        retry=retry or RetryPolicy(),
        cooldowns=cooldowns or Cooldowns(),
        budget=budget,
        unavailable=unavailable or {},
        half_open=half_open,
        latency=latency,
        clock=clock or FakeClock(),
        rng=random.Random(seed),
    )


def num(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return repr(round(value, 6))


def render(action: object) -> str:
    """The compact, human-readable form of one action."""
    if isinstance(action, Emit):
        event: Any = action.event
        name = action.signal.name
        if name == "request_started":
            return "start"
        if name == "attempt_failed":
            return f"failed {event.provider}/{event.model} {event.error_kind}"
        if name == "failover":
            return (f"failover {event.from_provider}/{event.from_model}"
                    f"->{event.to_provider}/{event.to_model}")
        if name == "retry_scheduled":
            return f"retry {event.provider}/{event.model} in {num(event.delay)}"
        if name == "request_finished":
            return "finished"
        if name == "request_failed":
            return f"request_failed {event.error_kind}"
        return f"emit {name}"
    if isinstance(action, Cooldown):
        return f"cooldown {action.key} until {num(action.until)} {action.kind.value}"
    if isinstance(action, Sleep):
        return f"sleep {num(action.seconds)}"
    if isinstance(action, Attempt):
        return f"attempt {action.target.key}"
    if isinstance(action, Respond):
        return f"respond {action.target.key}"
    if isinstance(action, Fail):
        return f"fail {action.error.status} {action.error.code}"
    if isinstance(action, Record):
        return f"record {','.join(action.keys)} {'ok' if action.ok else 'failed'}"
    if isinstance(action, Admit):
        return f"admit {action.key}"
    raise AssertionError(f"not an action: {action!r}")


@dataclass
class Run:
    """Everything a scripted run did."""

    actions: list[object]
    clock: FakeClock
    flow: Flow
    unused: list[Step] = field(default_factory=list)

    @property
    def log(self) -> list[str]:
        """The actions without breaker bookkeeping (``Record``/``Admit``): see ``full_log``."""
        return [render(a) for a in self.actions if not isinstance(a, Record | Admit)]

    @property
    def full_log(self) -> list[str]:
        return [render(a) for a in self.actions]

    def of(self, kind: type) -> list[Any]:
        return [a for a in self.actions if isinstance(a, kind)]

    def events(self, signal: object) -> list[Any]:
        return [a.event for a in self.actions if isinstance(a, Emit) and a.signal is signal]

    @property
    def fail(self) -> Fail:
        fails = self.of(Fail)
        assert len(fails) == 1, self.log
        return fails[0]

    @property
    def sleeps(self) -> list[float]:
        return [a.seconds for a in self.of(Sleep)]

    def header(self, name: str) -> str | None:
        return dict(self.fail.error.headers).get(name)


def drive(
    flow: Flow,
    script: Iterable[Failure | Step | None],
    *,
    delivered: Delivered | None = None,
    strict: bool = True,
    admit: Mapping[str, bool] | None = None,
) -> Run:
    """Run ``flow`` to its end, answering each ``Attempt`` with the next scripted outcome.

    With ``strict``, an attempt the script did not foresee, or a scripted outcome left over, is
    an error in the test itself.
    """
    steps = [s if isinstance(s, Step) else Step(s) for s in script]
    clock = flow.clock
    assert isinstance(clock, FakeClock)
    gen = flow.run()
    actions: list[object] = []
    reply: object = None
    done = False
    while not done:
        try:
            action = gen.send(reply) if actions else next(gen)
        except StopIteration:
            break
        actions.append(action)
        assert len(actions) < MAX_ACTIONS, "the flow does not end"
        reply = None
        if isinstance(action, Sleep):
            assert action.seconds > 0, action
            clock.advance(action.seconds)
        elif isinstance(action, Attempt):
            assert steps, f"unscripted attempt {action.target.key}: {[render(a) for a in actions]}"
            step = steps.pop(0)
            clock.advance(step.latency)
            reply = step.outcome
        elif isinstance(action, Respond):
            reply = delivered if delivered is not None else Delivered({"total_tokens": 3})
        elif isinstance(action, Admit):
            reply = (admit or {}).get(action.key, True)
        elif isinstance(action, Fail):
            done = True
    if done:  # nothing may follow a Fail
        try:
            extra = gen.send(None)
        except StopIteration:
            pass
        else:
            raise AssertionError(f"the flow went on after Fail: {render(extra)}")
    run = Run(actions, clock, flow, steps)
    if strict:
        assert not steps, f"scripted outcomes left over: {steps}; log: {run.log}"
    _check_invariants(run)
    return run


def _check_invariants(run: Run) -> None:
    """What holds for every run, whatever the script."""
    actions = run.actions
    assert isinstance(actions[0], Emit) and actions[0].signal is signals.request_started
    terminal = [
        i for i, a in enumerate(actions)
        if isinstance(a, Emit) and a.signal in (signals.request_finished, signals.request_failed)
    ]
    assert len(terminal) == 1, f"exactly one terminal signal expected: {run.log}"
    last = actions[-1]
    if isinstance(last, Fail):
        assert terminal[0] == len(actions) - 2
    else:
        assert terminal[0] == len(actions) - 1
    numbers = [a.number for a in run.of(Attempt)]
    assert numbers == sorted(set(numbers)) and (not numbers or numbers[0] == 1)
