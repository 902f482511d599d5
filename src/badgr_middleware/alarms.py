"""Coarse alarms for the async hot path: one event-loop timer per loop, not one per use.

Every request arms two time limits that almost never fire: its upstream attempt's first-byte
limit and the delay before its disconnect watcher starts. An asyncio timer (or an
``asyncio.timeout``) lives in the loop's heap, whose ordering runs Python code on every push,
and costs a few microseconds to arm and cancel; at thousands of requests a second that was a
measurable share of badgr's CPU (docs/performance.md). Here an alarm is an entry in a bucket of
``GRAIN`` seconds (arming and cancelling are a dict insert and delete), and one loop timer
ticks every ``GRAIN`` while any alarm is pending, running the callbacks that are due.

An alarm runs at most about ``GRAIN`` late, never early. No timer is armed while nothing is
pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from .loop_local import LoopLocal

__all__ = ["GRAIN", "Alarm", "alarm_at"]

GRAIN = 0.02  # seconds: the buckets' width, and how late an alarm may run


class Alarm:
    """A callback due at a loop time; :meth:`cancel` it when it is no longer needed."""

    __slots__ = ("_clock", "_index", "callback", "fired")

    def __init__(self, clock: _AlarmClock, index: int, callback: Callable[[], object]) -> None:
        self._clock: _AlarmClock | None = clock
        self._index = index
        self.callback: Callable[[], object] | None = callback
        self.fired = False  # the callback has run

    def cancel(self) -> None:
        """Do not run the callback (nothing happens once it has run)."""
        clock = self._clock
        if clock is not None:
            self._clock = None
            # let go of the callback, as asyncio's handles do: it often holds the owner of
            # the alarm, and the cycle would otherwise wait for the garbage collector
            self.callback = None
            clock.remove(self, self._index)


class _AlarmClock:
    """The alarms of one event loop. It holds no reference to its loop while nothing is
    pending (only the scheduled tick does), so the loop and its clock go away together."""

    def __init__(self) -> None:
        self._buckets: dict[int, dict[Alarm, None]] = {}
        self._done = 0  # every bucket up to this index has run
        self._ticking = False

    def at(self, loop: asyncio.AbstractEventLoop, when: float,
           callback: Callable[[], object]) -> Alarm:
        if not self._ticking:  # nothing is pending: start ticking from now
            self._ticking = True
            self._done = max(self._done, int(loop.time() / GRAIN))
            loop.call_at((self._done + 1) * GRAIN, self._tick, loop)
        # the first bucket that starts after ``when``, and never one that has already run
        index = max(int(when / GRAIN) + 1, self._done + 1)
        alarm = Alarm(self, index, callback)
        bucket = self._buckets.get(index)
        if bucket is None:
            self._buckets[index] = {alarm: None}
        else:
            bucket[alarm] = None
        return alarm

    def remove(self, alarm: Alarm, index: int) -> None:
        bucket = self._buckets.get(index)
        if bucket is not None:  # else its bucket is running now, and skips it
            del bucket[alarm]
            if not bucket:
                del self._buckets[index]

    def _tick(self, loop: asyncio.AbstractEventLoop) -> None:
        now = int(loop.time() / GRAIN)
        buckets = self._buckets
        while self._done < now:
            self._done += 1  # first: an alarm a callback arms goes to a later bucket
            bucket = buckets.pop(self._done, None)
            if bucket is None:
                continue
            for alarm in bucket:
                if alarm._clock is None:  # cancelled by a callback run before it
                    continue
                alarm._clock = None
                alarm.fired = True
                callback, alarm.callback = alarm.callback, None
                try:
                    callback()  # type: ignore[misc]
                except Exception as exc:  # one callback's bug must not stop the others
                    loop.call_exception_handler(
                        {"message": "badgr alarm callback failed", "exception": exc})
        if buckets:
            loop.call_at((self._done + 1) * GRAIN, self._tick, loop)
        else:
            self._ticking = False


_clocks = LoopLocal(_AlarmClock)


def alarm_at(when: float, callback: Callable[[], object]) -> Alarm:
    """Run ``callback`` on the running loop at loop time ``when`` (up to ``GRAIN`` later)."""
    return _clocks.get().at(asyncio.get_running_loop(), when, callback)
