"""The failover flow: a pure state machine that I/O code drives.

Theory of operation
-------------------
One :class:`Flow` serves one client request. :meth:`Flow.run` is a generator: it yields
*actions* and receives the *outcome* of each, like httpx's ``Auth.auth_flow``. A driver loops::

    gen = flow.run()
    action = next(gen)
    while True:
        result = perform(action)        # the only place with sockets, sleeps and signals
        action = gen.send(result)       # StopIteration ends the loop

==========================================  =============================================
action                                      what the driver sends back
==========================================  =============================================
``Emit(signal, event)``                     ``None`` after sending the signal
``Cooldown(key, until, kind)``              ``None`` after recording it in the health store
``Sleep(seconds)``                          ``None`` after sleeping
``Admit(key)``                              whether a half-open breaker admits a probe
``Record(keys, ok, ttfb, total,            ``None`` after counting the result (breakers,
kind, status)``                             latency, request statistics) and emitting any
                                            circuit signals
``Attempt(target, number, time_left,        a :class:`Failure`, or ``None`` when the upstream
hedge, hedge_after, resuming,               answered well (for a stream: its first event); a
first_byte)``                               :class:`Hedged` when the driver started ``hedge``
``Respond(target, attempts, detail)``       :class:`Delivered` once the client has the body,
                                            or :class:`Interrupted` when a stream broke after
                                            content and may resume on another target
``Fail(error, attempts)``                   nothing: the flow is over
==========================================  =============================================

After :class:`Interrupted` the flow goes on choosing targets as before, with ``resuming`` set
on each ``Attempt`` (the driver sends the partial answer along) and the same model at another
provider tried first; its ``Respond`` or ``Fail`` then continues or ends the client's stream.

A driver whose client disconnects before the response began throws
:class:`ClientDisconnected` into the generator; the flow then reports ``request_failed``
(``client_disconnected``) and ends.

The flow reads time only through the ``clock`` it is given and randomness only through
``rng``, so every retry, backoff and deadline decision is exactly testable. The failure
policy it implements is the table in DESIGN.md; each :class:`FailureKind` is one row.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Generator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from blinker import Signal

from .. import signals
from ..errors import ApiError
from ..pricing import Price, estimate_prompt_tokens, usage_cost
from ..signals import AttemptRecord
from .outcomes import Delivered, Failure, FailureKind
from .plan import RoutedRequest, Target
from .policy import backoff_delay

if TYPE_CHECKING:
    from ..config import Cooldowns, RetryPolicy
    from ..health.latency import LatencyStats

__all__ = [
    "Action",
    "Admit",
    "Attempt",
    "Hedged",
    "Interrupted",
    "Record",
    "ClientDisconnected",
    "Cooldown",
    "Emit",
    "Fail",
    "Flow",
    "Respond",
    "Sleep",
    "Unavailable",
]

# Failures that count against circuit breakers: of the target and its provider, or the target.
_PROVIDER_FAILURES = frozenset({FailureKind.CONNECT, FailureKind.TIMEOUT, FailureKind.SERVER})
_TARGET_FAILURES = frozenset({
    FailureKind.BAD_RESPONSE, FailureKind.STREAM_BROKEN, FailureKind.STREAM_INCOMPLETE,
    FailureKind.STREAM_IDLE, FailureKind.STREAM_MALFORMED, FailureKind.STREAM_ERROR,
})

# A Retry-After longer than this makes the official SDKs give up rather than wait.
SDK_MAX_RETRY_AFTER = 120.0


class ClientDisconnected(Exception):
    """Thrown into a running flow when the client went away before the response began."""


@dataclass(frozen=True, slots=True)
class Unavailable:
    """A health-store entry: ``key`` (a provider, or ``provider/model``) is out until ``until``."""

    until: float
    kind: FailureKind


@dataclass(frozen=True, slots=True)
class Emit:
    signal: Signal
    event: object


@dataclass(frozen=True, slots=True)
class Cooldown:
    key: str
    until: float
    kind: FailureKind


@dataclass(frozen=True, slots=True)
class Sleep:
    seconds: float


@dataclass(slots=True)  # not frozen: built per request, and frozen ones cost 5x to build
class Attempt:
    """Send the request to ``target``; if ``hedge`` is set and ``target`` has not produced
    its first byte after ``hedge_after`` seconds, also send it to ``hedge`` and keep the
    first to answer (drivers that cannot run two at once ignore the hedge)."""

    target: Target
    number: int
    time_left: float
    hedge: Target | None = None
    hedge_after: float | None = None
    resuming: bool = False  # continue the broken stream: send the answer so far along
    first_byte: float | None = None  # at most this long to the first byte (a split deadline)


@dataclass(frozen=True, slots=True)
class Hedged:
    """The outcome of an attempt whose hedge was started: who won, who failed."""

    winner: Target | None
    failures: tuple[tuple[Target, Failure], ...] = ()


@dataclass(frozen=True, slots=True)
class Admit:
    key: str


@dataclass(slots=True)  # not frozen: built per request, and frozen ones cost 5x to build
class Record:
    keys: tuple[str, ...]
    ok: bool
    ttfb: float | None = None
    total: float | None = None
    kind: str | None = None  # a failure's kind (FailureKind value), for the status page
    status: int | None = None  # a failure's upstream HTTP status, when it had one


@dataclass(frozen=True, slots=True)
class Interrupted:
    """Sent back for a :class:`Respond` whose stream broke after content reached the client,
    when the request allows a resume and the answer so far can be continued."""

    failure: Failure
    sent_tokens: int  # an estimate of all the completion tokens the client already has


@dataclass(slots=True)  # not frozen: built per request, and frozen ones cost 5x to build
class Respond:
    target: Target
    attempts: int
    detail: tuple[AttemptRecord, ...] = ()  # the attempts before this one
    latency: float = 0.0  # this attempt's time to its answer (a stream: its first event)


@dataclass(frozen=True, slots=True)
class Fail:
    error: ApiError
    attempts: int


Action = Emit | Cooldown | Sleep | Admit | Record | Attempt | Respond | Fail
FlowGenerator = Generator[Action, Any, None]


class Flow:
    """Decides, attempt by attempt, where one request goes next."""

    __slots__ = (
        "_prompt_tokens", "attempts", "budget", "clock", "cooldowns", "deprioritised",
        "failures", "half_open", "latency", "listening", "low_quota", "min_context", "queue",
        "records", "refused", "request", "resumed_from", "retry", "retryable", "rng",
        "sent_tokens", "skipped", "tries", "unavailable", "waited", "waits",
    )

    def __init__(
        self,
        request: RoutedRequest,
        *,
        retry: RetryPolicy,
        cooldowns: Cooldowns,
        budget: float,
        unavailable: Mapping[str, Unavailable],
        clock: Callable[[], float],
        rng: random.Random,
        half_open: frozenset[str] = frozenset(),
        latency: Mapping[str, LatencyStats] | None = None,
        deprioritised: frozenset[str] = frozenset(),
        listening: Callable[[Signal], bool] = lambda signal: True,
        low_quota: frozenset[str] = frozenset(),
    ) -> None:
        self.request = request
        # whether a signal has receivers: the payloads of every request's start and finish
        # are only built when somebody listens (failure paths always report)
        self.listening = listening
        # providers whose official status page reports a major outage: tried last, not skipped
        self.deprioritised = deprioritised
        self.retry = retry
        self.cooldowns = cooldowns
        self.budget = budget
        self.unavailable = dict(unavailable)
        self.half_open = set(half_open)  # breakers that must admit us before an attempt
        self.latency = latency or {}
        self.clock = clock
        self.rng = rng
        self.attempts = 0
        self.failures: list[tuple[Target, Failure]] = []
        self.skipped: dict[str, Unavailable] = {}
        # rate-limited targets this request could wait for: key -> (target, accepts again at)
        self.waits: dict[str, tuple[Target, float]] = {}
        self.queue: list[Target] = []  # untried targets, in the order they will be tried
        self.tries: dict[str, int] = {}
        # retryable (5xx) targets with tries left: retried once no untried target is left
        self.retryable: dict[str, tuple[Target, Failure]] = {}
        self.waited: set[str] = set()
        self.min_context: int | None = None  # after a context-length failure: windows above
        # targets reporting nearly no quota left: tried last, like deprioritised providers
        self.low_quota = low_quota
        self.records: list[AttemptRecord] = []
        self.refused: dict[str, str] = {}  # targets a price limit ruled out: key -> why
        self.sent_tokens = 0  # completion tokens of broken parts the client already has
        self.resumed_from: tuple[Target, Failure] | None = None
        self._prompt_tokens: int | None = None

    def run(self) -> FlowGenerator:
        started = self.clock()
        try:
            yield from self._run(started)
        except ClientDisconnected:
            req = self.request
            yield Emit(
                signals.request_failed,
                signals.RequestFailed(
                    req.request_id, req.route, 499, FailureKind.CLIENT_DISCONNECTED.value,
                    self.attempts, self.clock() - started, req.stream,
                ),
            )

    def _run(self, started: float) -> FlowGenerator:
        req = self.request
        deadline = started + self.budget
        if self.listening(signals.request_started):
            yield Emit(
                signals.request_started,
                signals.RequestStarted(
                    req.request_id, req.route, req.model, req.stream,
                    tuple(t.key for t in req.plan.targets),
                ),
            )
        self.queue = self._ordered(list(req.plan.targets))
        if self.deprioritised or self.low_quota:
            self.queue.sort(key=self._lateness)  # stable
        if req.max_price_ratio is not None:
            self.queue = [t for t in self.queue if self._within_ratio(t)]
        previous: Target | None = None
        while True:
            target = yield from self._choose(deadline)
            if target is None:
                yield from self._give_up(started, deadline_hit=False)
                return
            began = self.clock()
            if began >= deadline:
                yield from self._give_up(started, deadline_hit=True)
                return
            if previous is not None and previous != target:
                yield self._failover_event(previous, target, self.failures[-1][1].kind.value)
            self.tries[target.key] = self.tries.get(target.key, 0) + 1
            self.attempts += 1
            resuming = self.resumed_from is not None
            hedge, hedge_after = (None, None) if resuming else self._hedge_for(
                target, deadline - began)
            if hedge is not None and not self._affordable(target, hedge, note=False):
                self.queue.insert(0, hedge)
                hedge = hedge_after = None
            result = yield Attempt(target, self.attempts, deadline - began, hedge, hedge_after,
                                   resuming, self._first_byte_share(deadline - began))
            ended = self.clock()
            winner: Target | None = target
            if isinstance(result, Hedged):
                assert hedge is not None and hedge_after is not None
                yield self._failover_event(target, hedge, "hedged")
                self.attempts += 1
                self.tries[hedge.key] = self.tries.get(hedge.key, 0) + 1
                for failed, failure in result.failures:
                    if (yield from self._failed(failed, failure, ended - began, ended)):
                        yield from self._give_up(started, deadline_hit=False)
                        return
                winner = result.winner
                failed_keys = {t.key for t, _ in result.failures}
                for raced in (target, hedge):
                    if raced != winner and raced.key not in failed_keys:  # cancelled
                        self.records.append(AttemptRecord(raced.key, "cancelled", None,
                                                          ended - began))
                previous = hedge
            else:
                if hedge is not None:
                    self.queue.insert(0, hedge)  # never started: back to its place
                if result is not None:
                    winner = None
                    if (yield from self._failed(target, result, ended - began, ended)):
                        yield from self._give_up(started, deadline_hit=False)
                        return
                previous = target
            if winner is not None:
                ttfb = ended - began
                if winner == hedge and hedge_after is not None:
                    ttfb = max(0.0, ttfb - hedge_after)
                if resuming:
                    yield self._resumed_event(winner)
                delivered = yield Respond(winner, self.attempts, tuple(self.records), ttfb)
                if isinstance(delivered, Interrupted):  # go on choosing, to continue it
                    yield from self._interrupted(winner, delivered, ended - ttfb, ttfb)
                    previous = winner
                    continue
                yield from self._finish(winner, delivered, started, ttfb, ended - ttfb)
                return

    def _failed(
        self, target: Target, failure: Failure, latency: float, now: float
    ) -> Generator[Action, Any, bool]:
        """Report one failed attempt and decide its consequences; True means stop here."""
        self.records.append(AttemptRecord(target.key, failure.kind.value, failure.status,
                                          latency, _zero_cost(target.price)))
        yield self._attempt_failed_event(target, failure, latency)
        yield from self._health(target, failure, now)
        self.failures.append((target, failure))
        kind = failure.kind
        if kind is FailureKind.CLIENT:
            return True
        if kind is FailureKind.CONTEXT_LENGTH:
            self.min_context = max(self.min_context or 0, target.context_window or 0)
        elif kind is FailureKind.RATE_LIMITED and failure.retry_after is not None:
            self.waits[target.key] = (target, now + failure.retry_after)
        elif (
            kind is FailureKind.SERVER
            and self.tries.get(target.key, 0) < self.retry.attempts_per_target
        ):
            self.retryable[target.key] = (target, failure)
        return False

    # -- choosing targets -------------------------------------------------------------------

    def _choose(self, deadline: float) -> Generator[Action, Any, Target | None]:
        """The next target: an untried one, else a 5xx retry, else a rate limit to wait out."""
        while True:
            target = self._next_target(self.queue, self.min_context)
            if target is not None:
                if not self._affordable(target):
                    continue
                if not self.half_open or (yield from self._admitted(target)):
                    return target
                continue
            if self.retryable:
                key = next(iter(self.retryable))
                target, last = self.retryable.pop(key)
                delay = self._retry_delay(last, self.tries[key])
                if not self._eligible(target, self.min_context) or (
                    self.clock() + delay >= deadline
                ):
                    continue
                yield self._retry_event(target, delay, last.kind)
            else:
                target = self._worth_waiting_for(self.waited, deadline, self.min_context)
                if target is None:
                    return None
                self.waited.add(target.key)
                delay = max(0.0, self.waits[target.key][1] - self.clock())
                yield self._retry_event(target, delay, FailureKind.RATE_LIMITED)
            if delay > 0:
                yield Sleep(delay)
            return target

    def _lateness(self, target: Target) -> tuple[bool, bool]:
        """Sort key: providers in a major outage last, before them targets low on quota."""
        return target.provider in self.deprioritised, target.key in self.low_quota

    # -- prices -----------------------------------------------------------------------------

    def _within_ratio(self, target: Target) -> bool:
        """``max_price_ratio``: no fallback may cost more than that many times the primary."""
        ratio = self.request.max_price_ratio
        primary = self.request.plan.targets[0]
        if ratio is None or target.key == primary.key or primary.price is None:
            return True
        if target.price is None:
            self.refused[target.key] = (
                f"no price is known for it, so max_price_ratio {ratio:g} cannot allow it "
                "(give the target a price)")
            return False
        times = _price_ratio(target.price, primary.price)
        if times <= ratio:
            return True
        self.refused[target.key] = (
            f"it costs {times:.1f}x the primary {primary.key}, over max_price_ratio {ratio:g}")
        return False

    def _prompt_estimate(self) -> int:
        if self._prompt_tokens is None:
            self._prompt_tokens = estimate_prompt_tokens(self.request.body)
        return self._prompt_tokens + self.sent_tokens

    def _estimate(self, target: Target) -> float:
        """The least an attempt at ``target`` costs: its prompt, and ``max_tokens`` out."""
        assert target.price is not None
        body = self.request.body
        limit = body.get("max_completion_tokens", body.get("max_tokens"))
        out = limit if isinstance(limit, int) and not isinstance(limit, bool) else 0
        if out and self.sent_tokens:  # a continuation is asked only for the rest
            out = max(1, out - self.sent_tokens)
        return target.price.cost(self._prompt_estimate(), out)

    def _affordable(self, *targets: Target, note: bool = True) -> bool:
        """``max_cost``: may these attempts start (together, for a hedge) within the cap?
        ``note``: remember a refusal for the final error message."""
        cap = self.request.max_cost
        if cap is None:
            return True
        spent = sum(r.cost or 0.0 for r in self.records)
        needed = 0.0
        for target in targets:
            if target.price is None:
                if note:
                    self.refused[target.key] = (
                        f"no price is known for it, so it cannot be held to max_cost ${cap:g}")
                return False
            needed += self._estimate(target)
        if spent + needed <= cap:
            return True
        if note:
            self.refused[targets[-1].key] = (
                f"at least ${needed:.6f} more would exceed max_cost ${cap:g} "
                f"(${spent:.6f} spent)")
        return False

    def _first_byte_share(self, time_left: float) -> float | None:
        """With a client deadline, one attempt may spend at most half of the time left
        waiting for its first byte while other targets remain, so a failover still fits."""
        if self.request.deadline is None or not (self.retryable or any(
            self._eligible(t, self.min_context) for t in self.queue
        )):
            return None
        return time_left / 2

    # -- resuming a broken stream -----------------------------------------------------------

    def _interrupted(
        self, target: Target, interrupted: Interrupted, began: float, ttfb: float
    ) -> FlowGenerator:
        """A stream broke after content: record it, and put the same model first in the
        queue of targets that may continue it."""
        failure = interrupted.failure
        now = self.clock()
        part = interrupted.sent_tokens - self.sent_tokens  # this target's share of the text
        prompt = self._prompt_estimate()
        resumed = self.resumed_from is not None  # this attempt was itself a continuation
        self.sent_tokens = interrupted.sent_tokens
        self.resumed_from = (target, failure)
        yield self._attempt_failed_event(target, failure, now - began)
        yield Record((target.key,), False, ttfb, now - began, failure.kind.value, failure.status)
        cost = None if target.price is None else target.price.cost(prompt, part)
        self.records.append(AttemptRecord(target.key, failure.kind.value, failure.status,
                                          now - began, cost, resumed))
        self.failures.append((target, failure))
        same = _base_model(target.model)
        self.queue.sort(key=lambda t: _base_model(t.model) != same)  # stable

    def _resumed_event(self, target: Target) -> Emit:
        req = self.request
        assert self.resumed_from is not None
        old, failure = self.resumed_from
        return Emit(
            signals.stream_resumed,
            signals.StreamResumed(
                req.request_id, req.route, old.provider, old.model, target.provider,
                target.model, failure.kind.value, self.sent_tokens, self.attempts,
            ),
        )

    def _admitted(self, target: Target) -> Generator[Action, Any, bool]:
        """A half-open breaker (the provider's or the target's) must admit a probe first."""
        for key in (target.provider, target.key):
            if key in self.half_open:
                if not (yield Admit(key)):
                    now = self.clock()
                    self.skipped[target.key] = Unavailable(now, FailureKind.CIRCUIT_OPEN)
                    return False
                self.half_open.discard(key)
        return True

    def _ordered(self, targets: list[Target]) -> list[Target]:
        """Apply the plan's routing strategy: as given, fastest first, or weighted random."""
        routing = self.request.plan.routing
        if routing == "latency":
            def speed(target: Target) -> tuple[bool, float]:
                stats = self.latency.get(target.key)
                return (stats is None, stats.ttfb if stats else 0.0)

            return sorted(targets, key=speed)
        if routing == "weighted":
            ordered: list[Target] = []
            pool = list(targets)
            while pool:
                weights = [t.weight or 1.0 for t in pool]
                pick = self.rng.choices(range(len(pool)), weights=weights)[0]
                ordered.append(pool.pop(pick))
            return ordered
        return targets

    def _hedge_for(self, target: Target, time_left: float) -> tuple[Target | None, float | None]:
        """The target to start in parallel if ``target`` is slow, and after how long."""
        setting = self.request.hedge_after
        if setting is None:
            return None, None
        if setting == "p95":
            stats = self.latency.get(target.key)
            if stats is None or stats.samples < 2:
                return None, None
            after = stats.ttfb_p95
        else:
            after = float(setting)
        if after >= time_left:
            return None, None
        now = self.clock()
        for i, candidate in enumerate(self.queue):
            if candidate.key == target.key:
                continue
            if (
                _fits_context(candidate, self.min_context)
                and self._out_until(candidate, now) is None
                and candidate.provider not in self.half_open
                and candidate.key not in self.half_open
            ):
                return self.queue.pop(i), after
        return None, None

    def _next_target(self, queue: list[Target], min_context: int | None) -> Target | None:
        now = self.clock()
        while queue:
            target = queue.pop(0)
            if not _fits_context(target, min_context):
                continue
            out = self._out_until(target, now)
            if out is None:
                return target
            self.skipped[target.key] = out
            if out.kind is FailureKind.RATE_LIMITED and target.key not in self.waits:
                self.waits[target.key] = (target, out.until)
        return None

    def _eligible(self, target: Target, min_context: int | None) -> bool:
        """May ``target`` be tried again now (no cooldown, a large enough context)?"""
        return _fits_context(target, min_context) and (
            self._out_until(target, self.clock()) is None
        )

    def _out_until(self, target: Target, now: float) -> Unavailable | None:
        for key in (target.provider, target.key):
            entry = self.unavailable.get(key)
            if entry is not None and entry.until > now:
                return entry
        return None

    def _worth_waiting_for(
        self, waited: set[str], deadline: float, min_context: int | None
    ) -> Target | None:
        """The rate-limited target to wait for when no other target is left, if any fits."""
        now = self.clock()
        candidates = sorted(
            (until, target) for key, (target, until) in self.waits.items() if key not in waited
        )
        for until, target in candidates:
            if until - now > self.retry.max_retry_after or until >= deadline:
                return None  # later candidates accept even later
            if not _fits_context(target, min_context):
                continue
            # the wait must not be spent on a target that is out for another reason too
            other = self.unavailable.get(target.provider)
            if other is not None and other.until > until:
                continue
            return target
        return None

    def _retry_delay(self, failure: Failure, tries: int) -> float:
        hint = failure.retry_after
        if hint is not None and hint <= self.retry.max_retry_after:
            return hint
        return backoff_delay(tries - 1, self.retry.backoff_base, self.retry.backoff_max, self.rng)

    # -- health -----------------------------------------------------------------------------

    def _health(self, target: Target, failure: Failure, now: float) -> list[Cooldown | Record]:
        kind = failure.kind
        if kind in _PROVIDER_FAILURES:
            return [Record((target.key, target.provider), False, None, None, kind.value,
                           failure.status)]
        if kind in _TARGET_FAILURES:
            return [Record((target.key,), False, None, None, kind.value, failure.status)]
        c = self.cooldowns
        if kind is FailureKind.RATE_LIMITED:
            key, seconds = target.key, failure.retry_after or c.rate_limited
        elif kind is FailureKind.QUOTA:
            key, seconds = target.provider, c.quota
        elif kind is FailureKind.AUTH:
            key, seconds = target.provider, c.auth
        elif kind is FailureKind.NOT_FOUND:
            key, seconds = target.key, c.not_found
        else:
            return []
        entry = Unavailable(now + seconds, kind)
        self.unavailable[key] = entry
        return [Cooldown(key, entry.until, kind)]

    # -- endings ----------------------------------------------------------------------------

    def _finish(
        self, target: Target, delivered: Delivered, started: float, ttfb: float, began: float
    ) -> FlowGenerator:
        req = self.request
        now = self.clock()
        latency = now - started
        failure = delivered.failure
        usage = delivered.usage
        resumed = self.resumed_from is not None
        if failure is None:
            yield Record((target.key, target.provider), True, ttfb, now - began)
            if not (self.listening(signals.request_finished) or self.records):
                return  # nothing to report, and nobody to report it to
            self.records.append(AttemptRecord(target.key, "ok", 200, now - began,
                                              usage_cost(target.price, usage), resumed))
            if not self.listening(signals.request_finished):
                return
            yield Emit(
                signals.request_finished,
                signals.RequestFinished(
                    req.request_id, req.route, target.provider, target.model, self.attempts,
                    latency, req.stream, 200, merge_usage(usage, self.sent_tokens),
                    self.cost, tuple(self.records),
                ),
            )
            return
        self.records.append(AttemptRecord(target.key, failure.kind.value, failure.status,
                                          now - began, usage_cost(target.price, usage), resumed))
        if failure.kind is not FailureKind.CLIENT_DISCONNECTED:
            yield self._attempt_failed_event(target, failure, now - began)
            yield Record((target.key,), False, ttfb, now - began, failure.kind.value,
                         failure.status)
        yield Emit(
            signals.request_failed,
            signals.RequestFailed(
                req.request_id, req.route, failure.status or 200, failure.kind.value,
                self.attempts, latency, req.stream, target.provider, target.model,
                self.cost, tuple(self.records),
            ),
        )

    @property
    def cost(self) -> float | None:
        """US dollars over every attempt so far; None when no attempt's cost is known."""
        known = [r.cost for r in self.records if r.cost is not None]
        return sum(known) if known else None

    def _give_up(self, started: float, *, deadline_hit: bool) -> FlowGenerator:
        error = self._final_error(deadline_hit)
        req = self.request
        kind = self.failures[-1][1].kind.value if self.failures else "unavailable"
        yield Emit(
            signals.request_failed,
            signals.RequestFailed(
                req.request_id, req.route, error.status, "deadline" if deadline_hit else kind,
                self.attempts, self.clock() - started, req.stream, None, None,
                self.cost, tuple(self.records),
            ),
        )
        yield Fail(error, self.attempts)

    def _final_error(self, deadline_hit: bool) -> ApiError:
        now = self.clock()
        kinds = {f.kind for _, f in self.failures} | {u.kind for u in self.skipped.values()}
        summary = self._summary(now)
        if deadline_hit:
            return ApiError(504, f"The request deadline passed. {summary}", type="timeout_error",
                            code="deadline_exceeded", headers=[("x-should-retry", "false")])
        if self.failures and self.failures[-1][1].kind in (
            FailureKind.CLIENT, FailureKind.CONTEXT_LENGTH
        ):
            failure = self.failures[-1][1]
            code = failure.code
            if failure.kind is FailureKind.CONTEXT_LENGTH:
                code = code or failure.kind.value
            return ApiError(
                failure.status or 400, failure.message or "The upstream rejected the request.",
                param=failure.param, code=code,
                headers=[("x-should-retry", "false")],
            )
        if self.refused:
            status = 503 if not self.failures else 502
            return ApiError(status, f"No target within the request's price limits could serve "
                            f"it. {summary}", type="upstream_error" if self.failures else
                            "service_unavailable", code="price_limit",
                            headers=[("x-should-retry", "false")])
        earliest = self._earliest_retry(now)
        if kinds == {FailureKind.RATE_LIMITED}:
            return ApiError(429, f"Every target is rate limited. {summary}",
                            type="rate_limit_error", code="rate_limit_exceeded",
                            headers=_retry_headers(earliest))
        if not self.failures:
            return ApiError(503, f"Every target is cooling down. {summary}",
                            type="service_unavailable", code="all_targets_unavailable",
                            headers=_retry_headers(earliest))
        if kinds == {FailureKind.UNSUPPORTED}:
            failure = self.failures[-1][1]
            return ApiError(400, failure.message, param=failure.param, code=failure.code,
                            headers=[("x-should-retry", "false")])
        if kinds == {FailureKind.NOT_FOUND}:
            return ApiError(404, f"No target has this model. {summary}",
                            code="model_not_found", headers=[("x-should-retry", "false")])
        if kinds == {FailureKind.TIMEOUT}:
            return ApiError(504, f"Every target timed out. {summary}", type="timeout_error",
                            code="upstream_timeout", headers=[("x-should-retry", "false")])
        return ApiError(502, f"Every target failed. {summary}", type="upstream_error",
                        code="all_targets_failed", headers=[("x-should-retry", "false")])

    def _earliest_retry(self, now: float) -> float | None:
        """Seconds until the first target that failed or was skipped accepts requests again."""
        times = [until for _, until in self.waits.values()]
        times += [u.until for u in self.skipped.values()]
        for target, _ in self.failures:
            out = self._out_until(target, now)
            if out is not None:
                times.append(out.until)
        future = [t - now for t in times if t > now]
        return min(future) if future else None

    def _summary(self, now: float) -> str:
        parts = [
            f"{t.key}: {f.kind.value}" + (f" ({f.status})" if f.status else "")
            for t, f in self.failures
        ]
        parts += [
            f"{key}: skipped, {u.kind.value} for {math.ceil(u.until - now)}s"
            for key, u in self.skipped.items()
        ]
        parts += [f"{key}: not tried, {why}" for key, why in self.refused.items()]
        return f"Attempts: {'; '.join(parts)}." if parts else "No target was available."

    # -- events -----------------------------------------------------------------------------

    def _attempt_failed_event(self, target: Target, failure: Failure, latency: float) -> Emit:
        req = self.request
        return Emit(
            signals.attempt_failed,
            signals.AttemptFailed(
                req.request_id, req.route, target.provider, target.model, self.attempts,
                failure.kind.value, failure.status, latency, failure.retry_after,
            ),
        )

    def _retry_event(self, target: Target, delay: float, kind: FailureKind) -> Emit:
        req = self.request
        return Emit(
            signals.retry_scheduled,
            signals.RetryScheduled(
                req.request_id, req.route, target.provider, target.model, self.attempts + 1,
                delay, kind.value,
            ),
        )

    def _failover_event(self, old: Target, target: Target, reason: str) -> Emit:
        req = self.request
        return Emit(
            signals.failover,
            signals.Failover(
                req.request_id, req.route, old.provider, old.model, target.provider,
                target.model, reason, self.attempts,
            ),
        )


def merge_usage(usage: dict[str, Any] | None, sent_tokens: int) -> dict[str, Any] | None:
    """The usage of a resumed answer: the continuation's, plus the completion tokens of the
    broken parts before it (estimated from their text)."""
    if not sent_tokens or usage is None:
        return usage
    merged = dict(usage)
    completion = usage.get("completion_tokens")
    if isinstance(completion, int):
        merged["completion_tokens"] = completion + sent_tokens
        total = usage.get("total_tokens")
        if isinstance(total, int):
            merged["total_tokens"] = total + sent_tokens
    return merged


def _price_ratio(price: Price, primary: Price) -> float:
    """How many times the primary's price ``price`` is: the larger of input and output."""
    ratios = [
        (mine / theirs) if theirs > 0 else (0.0 if mine == 0 else math.inf)
        for mine, theirs in ((price.input, primary.input), (price.output, primary.output))
    ]
    return max(ratios)


def _zero_cost(price: Price | None) -> float | None:
    """A failed attempt's cost: nothing is billed for an error, when the price is known."""
    return None if price is None else 0.0


def _base_model(model: str) -> str:
    """The model without a vendor path: ``anthropic/claude-sonnet-4.5`` -> ``claude-sonnet-4.5``."""
    return model.rsplit("/", 1)[-1].lower()


def _fits_context(target: Target, min_context: int | None) -> bool:
    """After a context-length failure, only targets known to have a larger window qualify."""
    return min_context is None or (
        target.context_window is not None and target.context_window > min_context
    )


def _retry_headers(seconds: float | None) -> list[tuple[str, str]]:
    """Tell the client when a retry could help; if it could not soon, tell it not to retry."""
    if seconds is None or seconds > SDK_MAX_RETRY_AFTER:
        return [("x-should-retry", "false")]
    return [("retry-after", str(max(1, math.ceil(seconds)))),
            ("retry-after-ms", str(max(1, math.ceil(round(seconds * 1000, 3)))))]
