"""Inbound limits per client: requests and tokens per minute, and concurrent streams.

The :class:`Limiter` sits in the :class:`~badgr_middleware.engine.Engine` between parsing and
routing, so every adapter gets it. A client is named by a short stable id that never holds its
key: ``key:<first 8 hex of sha256(key)>`` for a configured client key, ``principal:<...>`` for a
principal from an ``authenticate`` callable or a framework, ``anonymous`` otherwise (one shared
bucket). Over a limit the request gets a 429 ``rate_limit_error`` and never reaches a provider.

Counting: requests and tokens in fixed 60 s windows (aligned to the clock's minute); tokens
are the ``usage.total_tokens`` of each finished request (``request_finished``), so a client
over its budget is refused from its next request on. A stream holds a slot from the moment it
is admitted until it ends, breaks, is closed by a disconnect, or fails.

With ``state.backend = "redis"`` the counts are shared: one ``EVALSHA`` per check, keys
expiring on their own; when Redis is unreachable the limiter counts locally (and retries Redis
every ``state.retry_interval`` seconds) and never fails a request because of Redis.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import secrets
import threading
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from . import signals
from .errors import ApiError
from .messages import HttpRequest, HttpResponse

if TYPE_CHECKING:
    from .config import ClientLimits, Config
    from .routing.plan import RoutedRequest

__all__ = ["Limiter", "MemoryCounter", "RedisCounter", "client_id"]

logger = logging.getLogger("badgr_middleware")

WINDOW = 60.0
# how long a stream slot may be held in Redis before it is presumed lost (a crashed worker)
MIN_STREAM_LEASE = 600.0

REQUESTS = "requests"
TOKENS = "tokens"
STREAMS = "streams"


def client_id(principal: Any, request: HttpRequest) -> str:
    """The client's id: never its key, only a short stable hash of it."""
    if principal == "anonymous" and request.principal is None:
        return "anonymous"
    if principal == "client_key" and request.principal is None:
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        digest = hashlib.sha256(token.strip().encode()).hexdigest()[:8]
        return f"key:{digest}"
    return "principal:" + hashlib.sha256(str(principal).encode()).hexdigest()[:8]


@dataclass(frozen=True, slots=True)
class Refusal:
    kind: str  # REQUESTS, TOKENS or STREAMS
    retry_after: float | None


# -------------------------------------------------------------------------- counters


class MemoryCounter:
    """Counts in this process; thread- and task-safe (one lock, no awaits inside)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[str, tuple[int, int]] = {}  # client -> (window index, count)
        self._tokens: dict[str, tuple[int, int]] = {}
        self._streams: dict[str, set[str]] = {}

    def check(self, client: str, limits: ClientLimits, slot: str | None,
              now: float) -> Refusal | None:
        window = int(now // WINDOW)
        with self._lock:
            if limits.tokens_per_minute is not None:
                index, used = self._tokens.get(client, (window, 0))
                if index == window and used >= limits.tokens_per_minute:
                    return Refusal(TOKENS, _window_left(now))
            if limits.requests_per_minute is not None:
                index, count = self._requests.get(client, (window, 0))
                count = count if index == window else 0
                if count >= limits.requests_per_minute:
                    return Refusal(REQUESTS, _window_left(now))
            if slot is not None and limits.concurrent_streams is not None:
                held = self._streams.setdefault(client, set())
                if len(held) >= limits.concurrent_streams:
                    return Refusal(STREAMS, None)
                held.add(slot)
            if limits.requests_per_minute is not None:
                self._requests[client] = (window, count + 1)
            self._prune(window)
        return None

    def release(self, client: str, slot: str) -> None:
        with self._lock:
            held = self._streams.get(client)
            if held is not None:
                held.discard(slot)
                if not held:
                    del self._streams[client]

    def add_tokens(self, client: str, tokens: int, now: float) -> None:
        window = int(now // WINDOW)
        with self._lock:
            index, used = self._tokens.get(client, (window, 0))
            self._tokens[client] = (window, (used if index == window else 0) + tokens)

    def clear(self) -> None:
        with self._lock:
            self._requests.clear()
            self._tokens.clear()
            self._streams.clear()

    def _prune(self, window: int) -> None:
        """Forget old windows now and then, so idle clients cost no memory."""
        if len(self._requests) + len(self._tokens) < 1024:
            return
        for table in (self._requests, self._tokens):
            for client in [c for c, (index, _) in table.items() if index < window]:
                del table[client]


_CHECK = """
local rpm, tpm, streams = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local now, slot, lease = tonumber(ARGV[4]), ARGV[5], tonumber(ARGV[6])
if tpm > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') >= tpm then return 'tokens' end
if rpm > 0 and tonumber(redis.call('GET', KEYS[1]) or '0') >= rpm then return 'requests' end
if slot ~= '' and streams > 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - lease)
  if redis.call('ZCARD', KEYS[3]) >= streams then return 'streams' end
  redis.call('ZADD', KEYS[3], now, slot)
  redis.call('PEXPIRE', KEYS[3], math.ceil(lease * 1000))
end
if rpm > 0 then
  redis.call('INCR', KEYS[1])
  redis.call('PEXPIRE', KEYS[1], 120000)
end
return ''
"""

_TOKENS = """
redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], 120000)
return 0
"""


class RedisCounter:
    """Counts in Redis (shared by every worker and host), falling back to a
    :class:`MemoryCounter` while Redis is unreachable, as the Redis health store does."""

    def __init__(self, url: str, *, key_prefix: str = "badgr:", timeout: float = 0.1,
                 retry_interval: float = 5.0, stream_lease: float = MIN_STREAM_LEASE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        import redis
        import redis.asyncio

        self._redis = redis
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.retry_interval = retry_interval
        self.stream_lease = stream_lease
        self._url = url
        self._clock = clock
        self.local = MemoryCounter()
        self._lock = threading.Lock()
        self._retry_at: float | None = None
        self._client = self._connect(redis.Redis)
        self._check = self._client.register_script(_CHECK)
        self._tokens = self._client.register_script(_TOKENS)
        self._aclients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def __repr__(self) -> str:
        return f"RedisCounter(key_prefix={self.key_prefix!r}, degraded={self.degraded})"

    @property
    def degraded(self) -> bool:
        return self._retry_at is not None

    # a slot taken in Redis is released in Redis; one taken locally, locally
    def check(self, client: str, limits: ClientLimits, slot: str | None,
              now: float) -> tuple[Refusal | None, bool]:
        """The refusal (or None) and whether Redis answered."""
        keys, args = self._check_call(client, limits, slot, now)
        probe = self._begin()
        if probe is not None:
            try:
                raw = self._check(keys=keys, args=args)
            except self._errors as exc:
                self._failed(exc)
            else:
                self._succeeded(probe)
                return _refusal(raw, now), True
        return self.local.check(client, limits, slot, now), False

    async def acheck(self, client: str, limits: ClientLimits, slot: str | None,
                     now: float) -> tuple[Refusal | None, bool]:
        keys, args = self._check_call(client, limits, slot, now)
        probe = self._begin()
        if probe is not None:
            try:
                raw = await self._ascripts()[0](keys=keys, args=args)
            except self._errors as exc:
                self._failed(exc)
            else:
                self._succeeded(probe)
                return _refusal(raw, now), True
        return self.local.check(client, limits, slot, now), False

    def release(self, client: str, slot: str, shared: bool) -> None:
        if not shared:
            self.local.release(client, slot)
            return
        with contextlib.suppress(*self._errors):  # else the slot expires with its lease
            self._client.zrem(self._key("st", client), slot)

    async def arelease(self, client: str, slot: str, shared: bool) -> None:
        if not shared:
            self.local.release(client, slot)
            return
        with contextlib.suppress(*self._errors):
            await self._ascripts()[2].zrem(self._key("st", client), slot)

    def add_tokens(self, client: str, tokens: int, now: float) -> None:
        if self._begin() is None:
            self.local.add_tokens(client, tokens, now)
            return
        try:
            self._tokens(keys=[self._window_key("tk", client, now)], args=[tokens])
        except self._errors as exc:
            self._failed(exc)
            self.local.add_tokens(client, tokens, now)

    async def aadd_tokens(self, client: str, tokens: int, now: float) -> None:
        if self._begin() is None:
            self.local.add_tokens(client, tokens, now)
            return
        try:
            await self._ascripts()[1](keys=[self._window_key("tk", client, now)], args=[tokens])
        except self._errors as exc:
            self._failed(exc)
            self.local.add_tokens(client, tokens, now)

    def clear(self) -> None:
        """Delete every limit key under this prefix, and the local counts (for tests)."""
        self.local.clear()
        names = list(self._client.scan_iter(match=_glob_escape(self.key_prefix) + "lim:*"))
        if names:
            self._client.delete(*names)

    def close(self) -> None:
        self._client.close()

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._aclients.pop(loop, None)
        if entry is not None:
            await entry[2].aclose()

    # -- internals

    def _key(self, kind: str, client: str) -> str:
        return f"{self.key_prefix}lim:{kind}:{client}"

    def _window_key(self, kind: str, client: str, now: float) -> str:
        return f"{self._key(kind, client)}:{int(now // WINDOW)}"

    def _check_call(self, client: str, limits: ClientLimits, slot: str | None,
                    now: float) -> tuple[list[str], list[Any]]:
        keys = [self._window_key("rq", client, now), self._window_key("tk", client, now),
                self._key("st", client)]
        args = [limits.requests_per_minute or 0, limits.tokens_per_minute or 0,
                limits.concurrent_streams or 0, repr(now), slot or "", self.stream_lease]
        return keys, args

    def _connect(self, cls: Any) -> Any:
        from redis.asyncio.retry import Retry as AsyncRetry
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        retry_cls = AsyncRetry if cls is self._redis.asyncio.Redis else Retry
        try:
            return cls.from_url(self._url, socket_timeout=self.timeout,
                                socket_connect_timeout=self.timeout,
                                retry=retry_cls(NoBackoff(), 0), decode_responses=True)
        except ValueError:
            raise ValueError("badgr limits: the Redis URL is not valid") from None

    def _ascripts(self) -> tuple[Any, Any, Any]:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._aclients.get(loop)
            if entry is None:
                client = self._connect(self._redis.asyncio.Redis)
                entry = (client.register_script(_CHECK), client.register_script(_TOKENS), client)
                self._aclients[loop] = entry
        return entry  # type: ignore[no-any-return]

    def _begin(self) -> bool | None:
        """None: count locally; False: use Redis; True: use Redis as the retry while degraded."""
        with self._lock:
            if self._retry_at is None:
                return False
            now = self._clock()
            if now < self._retry_at:
                return None
            self._retry_at = now + self.retry_interval
            return True

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            first = self._retry_at is None
            self._retry_at = self._clock() + self.retry_interval
        if first:
            logger.warning("badgr limits: Redis unreachable (%s); counting locally, retrying "
                           "every %.3g s", type(exc).__name__, self.retry_interval)

    def _succeeded(self, retry: bool) -> None:
        if not retry:
            return
        with self._lock:
            self._retry_at = None
        logger.info("badgr limits: Redis reachable again; counting shared")


def _refusal(raw: Any, now: float) -> Refusal | None:
    kind = raw.decode() if isinstance(raw, bytes) else raw
    if not kind:
        return None
    return Refusal(kind, None if kind == STREAMS else _window_left(now))


def _window_left(now: float) -> float:
    return WINDOW - (now % WINDOW)


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


# -------------------------------------------------------------------------- the limiter

_MESSAGES = {
    REQUESTS: ("client_rate_limited",
               "Rate limit reached: this client may send {limit} requests per minute."),
    TOKENS: ("client_tokens_limited",
             "Token limit reached: this client may use {limit} tokens per minute."),
    STREAMS: ("too_many_streams",
              "Too many concurrent streams: this client may hold {limit} at once."),
}
_LIMIT_FIELDS = {REQUESTS: "requests_per_minute", TOKENS: "tokens_per_minute",
                 STREAMS: "concurrent_streams"}

Execute = Callable[["RoutedRequest"], HttpResponse]
AExecute = Callable[["RoutedRequest"], Awaitable[HttpResponse]]


class Limiter:
    """Applies ``config.limits`` around a driver's ``execute``."""

    def __init__(self, config: Config, *, clock: Callable[[], float] = time.time,
                 counter: MemoryCounter | RedisCounter | None = None) -> None:
        self.limits = config.limits
        self.clock = clock
        if counter is None:
            state = config.state
            if state.backend == "redis" and state.url is not None:
                counter = RedisCounter(
                    state.url.reveal(), key_prefix=state.key_prefix, timeout=state.timeout,
                    retry_interval=state.retry_interval,
                    stream_lease=max(MIN_STREAM_LEASE, 2 * config.timeouts.deadline),
                )
            else:
                counter = MemoryCounter()
        self.counter = counter
        self._pending: dict[str, str] = {}  # request id -> client, while tokens are counted
        self._tasks: set[asyncio.Task[None]] = set()
        if any(c.tokens_per_minute is not None
               for c in (self.limits, *self.limits.clients.values())):
            signals.request_finished.connect(self._finished)  # weak: dies with the limiter

    # -- sync

    def run(self, principal: Any, request: HttpRequest, routed: RoutedRequest,
            execute: Execute) -> HttpResponse:
        client, limits, slot = self._admit_args(principal, request, routed)
        now = self.clock()
        refusal, shared = self._check(client, limits, slot, now)
        if refusal is not None:
            raise _refused(refusal, client, limits)
        self._track(routed, client, limits)
        release = _Once(lambda: self._release(routed, client, slot, shared))
        try:
            response = execute(routed)
        except BaseException:
            release()
            raise
        if response.stream is None:
            release()
            return response
        response.stream = _SyncGuard(response.stream, release)  # type: ignore[arg-type]
        return response

    # -- async

    async def arun(self, principal: Any, request: HttpRequest, routed: RoutedRequest,
                   execute: AExecute) -> HttpResponse:
        client, limits, slot = self._admit_args(principal, request, routed)
        now = self.clock()
        counter = self.counter
        if isinstance(counter, RedisCounter):
            refusal, shared = await counter.acheck(client, limits, slot, now)
        else:
            refusal, shared = counter.check(client, limits, slot, now), False
        if refusal is not None:
            raise _refused(refusal, client, limits)
        self._track(routed, client, limits)

        async def arelease() -> None:
            self._untrack(routed, client)
            if slot is not None:
                if isinstance(counter, RedisCounter):
                    await counter.arelease(client, slot, shared)
                else:
                    counter.release(client, slot)

        release = _AsyncOnce(arelease)
        try:
            response = await execute(routed)
        except BaseException:
            await asyncio.shield(release())
            raise
        if response.stream is None:
            await release()
            return response
        sync_release = _Once(lambda: self._release(routed, client, slot, shared))
        response.stream = _AsyncGuard(response.stream, release, sync_release)  # type: ignore[arg-type]
        return response

    def close(self) -> None:
        with contextlib.suppress(AttributeError):
            self.counter.close()  # type: ignore[union-attr]

    async def aclose(self) -> None:
        if isinstance(self.counter, RedisCounter):
            await self.counter.aclose()

    # -- internals

    def _admit_args(self, principal: Any, request: HttpRequest,
                    routed: RoutedRequest) -> tuple[str, ClientLimits, str | None]:
        client = client_id(principal, request)
        limits = self.limits.for_client(client)
        slot = secrets.token_hex(8) if routed.stream and limits.concurrent_streams else None
        return client, limits, slot

    def _check(self, client: str, limits: ClientLimits, slot: str | None,
               now: float) -> tuple[Refusal | None, bool]:
        if isinstance(self.counter, RedisCounter):
            return self.counter.check(client, limits, slot, now)
        return self.counter.check(client, limits, slot, now), False

    def _track(self, routed: RoutedRequest, client: str, limits: ClientLimits) -> None:
        if limits.tokens_per_minute is not None:
            self._pending[routed.request_id] = client

    def _untrack(self, routed: RoutedRequest, client: str) -> None:
        if self._pending.get(routed.request_id) == client:
            self._pending.pop(routed.request_id, None)

    def _release(self, routed: RoutedRequest, client: str, slot: str | None,
                 shared: bool) -> None:
        self._untrack(routed, client)
        if slot is None:
            return
        if isinstance(self.counter, RedisCounter):
            self.counter.release(client, slot, shared)
        else:
            self.counter.release(client, slot)

    def _finished(self, sender: object, event: signals.RequestFinished) -> None:
        client = self._pending.get(event.request_id)
        usage = event.usage
        if client is None or not isinstance(usage, dict):
            return
        tokens = usage.get("total_tokens")
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens <= 0:
            return
        now = self.clock()
        counter = self.counter
        if isinstance(counter, RedisCounter):
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                counter.add_tokens(client, tokens, now)
                return
            task = loop.create_task(counter.aadd_tokens(client, tokens, now))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        else:
            counter.add_tokens(client, tokens, now)


def _refused(refusal: Refusal, client: str, limits: ClientLimits) -> ApiError:
    code, template = _MESSAGES[refusal.kind]
    limit = getattr(limits, _LIMIT_FIELDS[refusal.kind])
    headers = [("x-badgr-client", client)]
    if refusal.retry_after is not None:
        wait = max(0.001, refusal.retry_after)
        headers += [("retry-after", str(max(1, math.ceil(wait)))),
                    ("retry-after-ms", str(max(1, math.ceil(wait * 1000))))]
    return ApiError(429, template.format(limit=limit), type="rate_limit_error", code=code,
                    headers=headers)


class _Once:
    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn: Callable[[], None] | None = fn
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            fn, self._fn = self._fn, None
        if fn is not None:
            fn()

    @property
    def done(self) -> bool:
        return self._fn is None


class _AsyncOnce:
    def __init__(self, fn: Callable[[], Awaitable[None]]) -> None:
        self._fn: Callable[[], Awaitable[None]] | None = fn

    async def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            await fn()

    @property
    def done(self) -> bool:
        return self._fn is None


class _SyncGuard:
    """A sync stream that releases its slot when it ends, breaks or is closed."""

    def __init__(self, inner: Iterator[bytes], release: _Once) -> None:
        self._inner = inner
        self._release = release

    def __iter__(self) -> _SyncGuard:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._inner)
        except BaseException:
            self._release()
            raise

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._release()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self._release()


class _AsyncGuard:
    """An async stream that releases its slot when it ends, breaks, is cancelled or closed."""

    def __init__(self, inner: AsyncIterator[bytes], release: _AsyncOnce,
                 fallback: _Once) -> None:
        self._inner = inner
        self._release = release
        self._fallback = fallback  # for a stream dropped without being closed

    def __aiter__(self) -> _AsyncGuard:
        return self

    async def __anext__(self) -> bytes:
        try:
            return await self._inner.__anext__()
        except BaseException:
            await self._finish()
            raise

    async def aclose(self) -> None:
        try:
            aclose = getattr(self._inner, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            await self._finish()

    async def _finish(self) -> None:
        if self._release.done:
            return
        self._fallback._fn = None  # the async release runs; the fallback must not
        await asyncio.shield(self._release())

    def __del__(self) -> None:
        if not self._release.done:
            with contextlib.suppress(Exception):
                self._fallback()
