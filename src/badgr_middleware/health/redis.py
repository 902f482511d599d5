"""The shared health store: every worker and host reads and writes the same state in Redis.

Each store call is exactly one ``EVALSHA`` of a Lua script, so every read-modify-write is atomic
and costs one round trip. Layout, per key ``K`` under ``key_prefix`` ``P`` (all numbers are
stored as decimal strings that round-trip exactly to Python floats):

``P cd:K``  hash ``until``, ``kind``; ``PEXPIREAT`` at ``until``.
``P br:K``  hash ``state``, ``consecutive``, ``opened_at``, ``probes``, ``probe_at`` and one
            field per window bucket and outcome, ``s:<index>`` / ``f:<index>`` (successes /
            failures); expires ``max(window, open_for) * 2`` seconds after its last write.
``P lat:K`` hash ``ttfb``, ``ttfb_var``, ``total``, ``samples``; expires an hour after its last
            write.

When Redis cannot be reached the store answers from a private :class:`MemoryHealthStore`, emits
``store_degraded`` once, and tries Redis again only every ``retry_interval`` seconds; the first
success emits ``store_recovered``. The URL (which may hold a password) is kept in a
:class:`~badgr_middleware.secret.Secret` and never appears in a repr, a log line or a signal.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import redis
import redis.asyncio
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.retry import Retry

from .. import signals
from ..secret import Secret
from ..signals import CircuitChanged, StoreChanged
from . import breaker
from .latency import ALPHA, LatencyStats
from .memory import MemoryHealthStore
from .store import HISTORY_MINUTES, STATS_TTL, ErrorInfo, KeyHealth

if TYPE_CHECKING:
    from ..config import BreakerPolicy

__all__ = ["RedisHealthStore"]

_Call = tuple[list[str], tuple[Any, ...]]  # (KEYS, ARGV) of one script call

logger = logging.getLogger("badgr_middleware.health")

LATENCY_TTL = 3600.0  # seconds a latency hash lives after its last write

# Anything that means "Redis is not answering properly": fall back to local state.
_ERRORS: tuple[type[BaseException], ...] = (redis.RedisError, OSError)

_HELPERS = """
local function num(x) return string.format('%.17g', x) end
local function hash(key)
  local flat = redis.call('HGETALL', key)
  local h = {}
  for i = 1, #flat, 2 do h[flat[i]] = flat[i + 1] end
  return h
end
-- Python's float floor division (float_floor_div), so bucket indexes agree bit for bit.
local function floordiv(v, w)
  local mod = math.fmod(v, w)
  local div = (v - mod) / w
  if mod ~= 0 and ((w < 0) ~= (mod < 0)) then div = div - 1 end
  local fd = math.floor(div)
  if div - fd > 0.5 then fd = fd + 1 end
  return fd
end
"""

# KEYS: (cooldown, breaker, latency[, stats]) hash of each key. ARGV: now, open_for, stats
# ('1' to read the statistics hashes too). Returns one row per key: until, kind, visible state,
# open_until, ttfb, ttfb_var, total, samples[, the statistics hash as a flat field/value list].
_SNAPSHOT = _HELPERS + """
local now, open_for = tonumber(ARGV[1]), tonumber(ARGV[2])
local stats = ARGV[3] == '1'
local step = 3
if stats then step = 4 end
local out = {}
for i = 1, #KEYS, step do
  local row = {false, false, false, false, false, false, false, false}
  local cd = redis.call('HMGET', KEYS[i], 'until', 'kind')
  if cd[1] and tonumber(cd[1]) > now then row[1] = cd[1]; row[2] = cd[2] end
  local br = redis.call('HMGET', KEYS[i + 1], 'state', 'opened_at')
  if br[1] then
    local state = br[1]
    if state == 'open' then
      local reopen = tonumber(br[2]) + open_for
      row[4] = num(reopen)
      if now >= reopen then state = 'half_open' end
    end
    row[3] = state
  end
  local lat = redis.call('HMGET', KEYS[i + 2], 'ttfb', 'ttfb_var', 'total', 'samples')
  if lat[4] then row[5] = lat[1]; row[6] = lat[2]; row[7] = lat[3]; row[8] = lat[4] end
  if stats then row[9] = redis.call('HGETALL', KEYS[i + 3]) end
  out[#out + 1] = row
end
return out
"""

# KEYS: breaker hash of each of n keys, then the first key's latency hash, then the statistics
# hash of each of the n keys.
# ARGV: ok, now, consecutive_failures, failure_rate, min_requests, window, buckets, breaker ttl
# (ms), n, ttfb ('' if none), total ('' if none), alpha, latency ttl (ms), failure kind ('' if
# none), failure status ('' if none), statistics ttl (ms), history minutes.
# Returns each key's transition ('open', 'closed' or nil).
_RECORD = _HELPERS + """
local ok, now = ARGV[1] == '1', tonumber(ARGV[2])
local max_consecutive, failure_rate = tonumber(ARGV[3]), tonumber(ARGV[4])
local min_requests, window, nbuckets = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local ttl, n = ARGV[8], tonumber(ARGV[9])
local index = floordiv(now, window / nbuckets)
local out = {}
for i = 1, n do
  local key = KEYS[i]
  local h = hash(key)
  local state = h.state or 'closed'
  local transition = false
  if state == 'half_open' then
    redis.call('DEL', key)
    if ok then
      transition = 'closed'
    else
      redis.call('HSET', key, 'state', 'open', 'opened_at', num(now))
      redis.call('PEXPIRE', key, ttl)
      transition = 'open'
    end
  elseif state == 'closed' then
    local successes, failures, stale = 0, 0, {}
    for field, value in pairs(h) do
      local kind, at = string.match(field, '^([sf]):(%-?%d+)$')
      if kind then
        if tonumber(at) > index - nbuckets then
          if kind == 's' then
            successes = successes + tonumber(value)
          else
            failures = failures + tonumber(value)
          end
        else
          stale[#stale + 1] = field
        end
      end
    end
    if ok then successes = successes + 1 else failures = failures + 1 end
    local consecutive = 0
    if not ok then consecutive = tonumber(h.consecutive or '0') + 1 end
    local total = successes + failures
    if not ok and (consecutive >= max_consecutive or
        (total >= min_requests and failures / total >= failure_rate)) then
      redis.call('DEL', key)
      redis.call('HSET', key, 'state', 'open', 'opened_at', num(now))
      transition = 'open'
    else
      if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
      local bucket = string.format('%.0f', index)
      if ok then bucket = 's:' .. bucket else bucket = 'f:' .. bucket end
      redis.call('HSET', key, 'state', 'closed', 'consecutive', consecutive)
      redis.call('HINCRBY', key, bucket, 1)
    end
    redis.call('PEXPIRE', key, ttl)
  end
  -- 'open': a late result from before the breaker opened; ignored
  out[i] = transition
end
if ARGV[10] ~= '' or ARGV[11] ~= '' then
  local key = KEYS[n + 1]
  local alpha = tonumber(ARGV[12])
  local l = redis.call('HMGET', key, 'ttfb', 'ttfb_var', 'total', 'samples')
  local mean, var = tonumber(l[1] or '0'), tonumber(l[2] or '0')
  local whole, samples = tonumber(l[3] or '0'), tonumber(l[4] or '0')
  local first = samples == 0
  if ARGV[10] ~= '' then
    local ttfb = tonumber(ARGV[10])
    if first then
      mean, var = ttfb, 0
    else
      local delta = ttfb - mean
      mean = mean + alpha * delta
      var = (1 - alpha) * (var + alpha * delta * delta)
    end
  end
  if ARGV[11] ~= '' then
    local total = tonumber(ARGV[11])
    if first or whole == 0 then whole = total else whole = whole + alpha * (total - whole) end
  end
  redis.call('HSET', key, 'ttfb', num(mean), 'ttfb_var', num(var), 'total', num(whole),
             'samples', samples + 1)
  redis.call('PEXPIRE', key, ARGV[13])
end
-- request statistics: totals, per-minute counts (older ones deleted) and the last error
local minute, history = floordiv(now, 60), tonumber(ARGV[17])
local seen = {}
for i = 1, n do
  local key = KEYS[n + 1 + i]
  if not seen[key] then
    seen[key] = true
    local stale = {}
    for _, field in ipairs(redis.call('HKEYS', key)) do
      local at = string.match(field, '^[sf]:(%-?%d+)$')
      if at and tonumber(at) <= minute - history then stale[#stale + 1] = field end
    end
    if #stale > 0 then redis.call('HDEL', key, unpack(stale)) end
    local m = string.format('%.0f', minute)
    if ok then
      redis.call('HINCRBY', key, 'served', 1)
      redis.call('HINCRBY', key, 's:' .. m, 1)
    else
      local kind = ARGV[14]
      if kind == '' then kind = 'failure' end
      redis.call('HINCRBY', key, 'failed', 1)
      redis.call('HINCRBY', key, 'f:' .. m, 1)
      redis.call('HSET', key, 'ek', kind, 'es', ARGV[15], 'ea', num(now))
    end
    redis.call('PEXPIRE', key, ARGV[16])
  end
end
return out
"""

# KEYS: the cooldown hash. ARGV: until, kind, until in unix milliseconds (rounded up).
_COOLDOWN = """
local current = redis.call('HGET', KEYS[1], 'until')
if current and tonumber(current) >= tonumber(ARGV[1]) then return 0 end
redis.call('HSET', KEYS[1], 'until', ARGV[1], 'kind', ARGV[2])
redis.call('PEXPIREAT', KEYS[1], ARGV[3])
return 1
"""

# KEYS: the breaker hash. ARGV: now, open_for, half_open_probes, breaker ttl (ms).
# Returns {admitted (0/1), transition ('half_open' or nil)}.
_ADMIT = _HELPERS + """
local key = KEYS[1]
local h = redis.call('HMGET', key, 'state', 'opened_at', 'probes', 'probe_at')
local state = h[1]
if not state or state == 'closed' then return {1, false} end
local now, open_for, limit = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local probes, probe_at = tonumber(h[3] or '0'), tonumber(h[4] or '0')
local transition = false
if state == 'open' then
  if now < tonumber(h[2]) + open_for then return {0, false} end
  probes = 0
  transition = 'half_open'
  redis.call('HSET', key, 'state', 'half_open', 'probes', 0)
  redis.call('PEXPIRE', key, ARGV[4])
end
if probes >= limit and now < probe_at + open_for then return {0, transition} end
if now >= probe_at + open_for then probes = 0 end
redis.call('HSET', key, 'probes', probes + 1, 'probe_at', num(now))
redis.call('PEXPIRE', key, ARGV[4])
return {1, transition}
"""


class _Scripts:
    """The four scripts registered on one client (sync or asyncio)."""

    __slots__ = ("admit", "cooldown", "record", "snapshot")

    def __init__(self, client: Any) -> None:
        self.snapshot = client.register_script(_SNAPSHOT)
        self.record = client.register_script(_RECORD)
        self.cooldown = client.register_script(_COOLDOWN)
        self.admit = client.register_script(_ADMIT)


class RedisHealthStore:
    """Health shared through Redis; falls back to local state while Redis is unreachable.

    Sync methods use one ``redis.Redis`` client (a connection pool); async methods use one
    ``redis.asyncio.Redis`` client per running event loop. Call :meth:`close` (and
    :meth:`aclose` in each event loop that used the store) when done.
    """

    def __init__(
        self,
        url: str | Secret,
        *,
        policy: BreakerPolicy,
        timeout: float = 0.1,
        retry_interval: float = 5.0,
        key_prefix: str = "badgr:",
        sender: object | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.retry_interval = retry_interval
        self._url = url if isinstance(url, Secret) else Secret(url)
        self._sender = sender
        self._clock = clock
        self._local = MemoryHealthStore(policy)
        self._lock = threading.Lock()
        self._retry_at: float | None = None  # set while degraded: when to try Redis again
        breaker_ttl = max(1, math.ceil(max(policy.window, policy.open_for) * 2 * 1000))
        self._record_args = (
            policy.consecutive_failures, policy.failure_rate, policy.min_requests,
            policy.window, breaker.BUCKETS, breaker_ttl,
        )
        self._admit_args = (policy.open_for, policy.half_open_probes, breaker_ttl)
        self._latency_args = (ALPHA, math.ceil(LATENCY_TTL * 1000))
        self._stats_args = (math.ceil(STATS_TTL * 1000), HISTORY_MINUTES)
        self._client: redis.Redis = self._connect(redis.Redis)
        self._scripts = _Scripts(self._client)
        self._aclients: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[redis.asyncio.Redis, _Scripts]
        ] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        state = "degraded" if self.degraded else "redis"
        return f"RedisHealthStore(key_prefix={self.key_prefix!r}, state={state!r})"

    @property
    def degraded(self) -> bool:
        """True while answering from local state because Redis was unreachable."""
        return self._retry_at is not None

    # -- sync ---------------------------------------------------------------------------------

    def snapshot(
        self, keys: Sequence[str], now: float, *, stats: bool = False
    ) -> dict[str, KeyHealth]:
        """Every key's cooldown, breaker and latency (and statistics), read in one script."""
        keys = list(keys)
        if not keys:
            return {}
        names, args = self._snapshot_call(keys, now, stats)
        return self._run(
            "snapshot", names, args,
            lambda raw: _parse_snapshot(keys, raw, now),
            lambda: self._local.snapshot(keys, now, stats=stats),
        )

    def record(
        self, keys: Sequence[str], ok: bool, now: float, ttfb: float | None = None,
        total: float | None = None, kind: str | None = None, status: int | None = None,
    ) -> list[CircuitChanged]:
        """Count one result on every key's breaker and statistics (and the first key's
        latency) atomically."""
        keys = list(keys)
        if not keys:
            return []
        names, args = self._record_call(keys, ok, now, ttfb, total, kind, status)
        return self._run(
            "record", names, args,
            lambda raw: self._parse_record(keys, now, raw),
            lambda: self._local.record(keys, ok, now, ttfb, total, kind, status),
        )

    def cooldown(self, key: str, until: float, kind: str) -> None:
        """Keep ``key`` out until ``until`` unless a later cooldown is already set."""
        names, args = self._cooldown_call(key, until, kind)
        self._run(
            "cooldown", names, args, lambda raw: None,
            lambda: self._local.cooldown(key, until, kind),
        )

    def admit(self, key: str, now: float) -> tuple[bool, list[CircuitChanged]]:
        """Take a probe slot of a half-open (or due open) breaker; True when closed."""
        names, args = self._admit_call(key, now)
        return self._run(
            "admit", names, args, lambda raw: _parse_admit(key, raw),
            lambda: self._local.admit(key, now),
        )

    def clear(self) -> None:
        """Delete every key under this store's prefix (SCAN + DEL) and the local state.

        Meant for tests; Redis errors propagate.
        """
        self._local.clear()
        batch: list[str] = []
        for name in self._client.scan_iter(match=_glob_escape(self.key_prefix) + "*", count=500):
            batch.append(name)
            if len(batch) >= 500:
                self._client.delete(*batch)
                batch.clear()
        if batch:
            self._client.delete(*batch)

    # -- official status pages: one worker polls for all -----------------------------------------

    def official_lease(self, owner: str, seconds: float) -> bool:
        """Take the poll lease for ``seconds`` (``SET NX PX``): True for the one worker that
        should poll the official status pages now. Without Redis, every worker polls."""
        name = f"{self.key_prefix}official:lease"
        try:
            return bool(self._client.set(name, owner, nx=True, px=max(1, int(seconds * 1000))))
        except _ERRORS:
            return True

    def set_official(self, data: str, seconds: float) -> None:
        """Share the official statuses (JSON) for ``seconds``."""
        self._local.set_official(data, seconds)
        with contextlib.suppress(*_ERRORS):
            self._client.set(f"{self.key_prefix}official", data,
                             px=max(1, int(seconds * 1000)))

    def get_official(self) -> str | None:
        """The official statuses last shared by any worker (or polled here, without Redis)."""
        try:
            value = self._client.get(f"{self.key_prefix}official")
        except _ERRORS:
            return self._local.get_official()
        return None if value is None else str(value)

    def close(self) -> None:
        """Close the sync client's connections (async clients: see :meth:`aclose`)."""
        self._client.close()

    # -- async --------------------------------------------------------------------------------

    async def asnapshot(
        self, keys: Sequence[str], now: float, *, stats: bool = False
    ) -> dict[str, KeyHealth]:
        keys = list(keys)
        if not keys:
            return {}
        names, args = self._snapshot_call(keys, now, stats)
        return await self._arun(
            "snapshot", names, args,
            lambda raw: _parse_snapshot(keys, raw, now),
            lambda: self._local.snapshot(keys, now, stats=stats),
        )

    async def arecord(
        self, keys: Sequence[str], ok: bool, now: float, ttfb: float | None = None,
        total: float | None = None, kind: str | None = None, status: int | None = None,
    ) -> list[CircuitChanged]:
        keys = list(keys)
        if not keys:
            return []
        names, args = self._record_call(keys, ok, now, ttfb, total, kind, status)
        return await self._arun(
            "record", names, args,
            lambda raw: self._parse_record(keys, now, raw),
            lambda: self._local.record(keys, ok, now, ttfb, total, kind, status),
        )

    async def acooldown(self, key: str, until: float, kind: str) -> None:
        names, args = self._cooldown_call(key, until, kind)
        await self._arun(
            "cooldown", names, args, lambda raw: None,
            lambda: self._local.cooldown(key, until, kind),
        )

    async def aadmit(self, key: str, now: float) -> tuple[bool, list[CircuitChanged]]:
        names, args = self._admit_call(key, now)
        return await self._arun(
            "admit", names, args, lambda raw: _parse_admit(key, raw),
            lambda: self._local.admit(key, now),
        )

    async def aclose(self) -> None:
        """Close the asyncio client of the running event loop, if it has one."""
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._aclients.pop(loop, None)
        if entry is not None:
            await entry[0].aclose()

    # -- calls --------------------------------------------------------------------------------

    def _snapshot_call(self, keys: list[str], now: float, stats: bool = False) -> _Call:
        p = self.key_prefix
        kinds = ("cd", "br", "lat", "st") if stats else ("cd", "br", "lat")
        names = [f"{p}{kind}:{key}" for key in keys for kind in kinds]
        return names, (now, self.policy.open_for, "1" if stats else "0")

    def _record_call(
        self, keys: list[str], ok: bool, now: float, ttfb: float | None, total: float | None,
        kind: str | None = None, status: int | None = None,
    ) -> _Call:
        p = self.key_prefix
        names = ([f"{p}br:{key}" for key in keys] + [f"{p}lat:{keys[0]}"]
                 + [f"{p}st:{key}" for key in keys])
        args = (
            int(ok), now, *self._record_args, len(keys),
            "" if ttfb is None else ttfb, "" if total is None else total, *self._latency_args,
            kind or "", "" if status is None else status, *self._stats_args,
        )
        return names, args

    def _cooldown_call(self, key: str, until: float, kind: str) -> _Call:
        return [f"{self.key_prefix}cd:{key}"], (until, kind, math.ceil(until * 1000))

    def _admit_call(self, key: str, now: float) -> _Call:
        return [f"{self.key_prefix}br:{key}"], (now, *self._admit_args)

    def _parse_record(self, keys: list[str], now: float, raw: list[Any]) -> list[CircuitChanged]:
        changes = []
        for key, transition in zip(keys, raw, strict=False):
            if transition == breaker.OPEN:
                until = now + self.policy.open_for
                changes.append(CircuitChanged(key, transition, "failures", until))
            elif transition:
                changes.append(CircuitChanged(key, transition, "probe", None))
        return changes

    def _run(
        self, script: str, keys: list[str], args: tuple[Any, ...],
        parse: Callable[[Any], Any], local: Callable[[], Any],
    ) -> Any:
        probe = self._begin()
        if probe is None:
            return local()
        try:
            raw = getattr(self._scripts, script)(keys=keys, args=args)
        except _ERRORS as exc:
            self._failed(exc)
            return local()
        self._succeeded(probe)
        return parse(raw)

    async def _arun(
        self, script: str, keys: list[str], args: tuple[Any, ...],
        parse: Callable[[Any], Any], local: Callable[[], Any],
    ) -> Any:
        probe = self._begin()
        if probe is None:
            return local()
        try:
            raw = await getattr(self._ascripts(), script)(keys=keys, args=args)
        except _ERRORS as exc:
            self._failed(exc)
            return local()
        self._succeeded(probe)
        return parse(raw)

    # -- clients ------------------------------------------------------------------------------

    def _connect(self, cls: Any) -> Any:
        retry_cls = AsyncRetry if cls is redis.asyncio.Redis else Retry
        try:
            return cls.from_url(
                self._url.reveal(),
                socket_timeout=self.timeout,
                socket_connect_timeout=self.timeout,
                retry=retry_cls(NoBackoff(), 0),  # one attempt: never wait longer than timeout
                decode_responses=True,
            )
        except ValueError:
            raise ValueError("badgr health store: the Redis URL is not valid") from None

    def _ascripts(self) -> _Scripts:
        loop = asyncio.get_running_loop()
        with self._lock:
            entry = self._aclients.get(loop)
            if entry is None:
                client = self._connect(redis.asyncio.Redis)
                entry = self._aclients[loop] = (client, _Scripts(client))
        return entry[1]

    # -- degradation --------------------------------------------------------------------------

    def _begin(self) -> bool | None:
        """None: answer locally; False: use Redis; True: use Redis as the retry while degraded."""
        with self._lock:
            if self._retry_at is None:
                return False
            now = self._clock()
            if now < self._retry_at:
                return None
            self._retry_at = now + self.retry_interval  # one retry at a time
            return True

    def _failed(self, exc: BaseException) -> None:
        with self._lock:
            first = self._retry_at is None
            self._retry_at = self._clock() + self.retry_interval
        if first:
            error = type(exc).__name__
            logger.warning(
                "badgr health store: Redis unreachable (%s); using local state, retrying every "
                "%.3g s", error, self.retry_interval,
            )
            self._emit(signals.store_degraded, StoreChanged("redis", "degraded", error))

    def _succeeded(self, retry: bool) -> None:
        if not retry:
            return
        with self._lock:
            if self._retry_at is None:
                return
            self._retry_at = None
        self._local.clear()  # Redis is the truth again; stale local state must not linger
        logger.info("badgr health store: Redis reachable again; shared state restored")
        self._emit(signals.store_recovered, StoreChanged("redis", "recovered"))

    def _emit(self, signal: Any, event: StoreChanged) -> None:
        signals.emit(signal, self if self._sender is None else self._sender, event)


def _parse_snapshot(keys: list[str], raw: list[Any], now: float) -> dict[str, KeyHealth]:
    out: dict[str, KeyHealth] = {}
    for key, row in zip(keys, raw, strict=False):
        until, kind, state, open_until, ttfb, var, total, samples = row[:8]
        flat = row[8] if len(row) > 8 and row[8] else None
        if until is None and state is None and samples is None and flat is None:
            continue
        health = KeyHealth(
            None if until is None else float(until),
            kind if until is not None else None,
            state or breaker.CLOSED,
            None if open_until is None else float(open_until),
            None if samples is None
            else LatencyStats(float(ttfb), float(var), float(total), int(samples)),
        )
        if flat is not None:
            health = _with_stats(health, dict(zip(flat[::2], flat[1::2], strict=True)), now)
        out[key] = health
    return out


def _with_stats(health: KeyHealth, h: dict[str, str], now: float) -> KeyHealth:
    """``health`` with the request statistics read from a ``st:`` hash."""
    minute = int(now // 60)
    history = tuple(
        (int(h.get(f"s:{m}", 0)), int(h.get(f"f:{m}", 0)))
        for m in range(minute - HISTORY_MINUTES + 1, minute + 1)
    )
    last_error = None
    if "ek" in h:
        status = h.get("es") or None
        last_error = ErrorInfo(h["ek"], None if status is None else int(status), float(h["ea"]))
    return KeyHealth(
        health.cooldown_until, health.cooldown_kind, health.breaker, health.open_until,
        health.latency, int(h.get("served", 0)), int(h.get("failed", 0)), history, last_error,
    )


def _parse_admit(key: str, raw: list[Any]) -> tuple[bool, list[CircuitChanged]]:
    admitted, transition = raw
    changes = [CircuitChanged(key, transition, "probe", None)] if transition else []
    return bool(admitted), changes


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
