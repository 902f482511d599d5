"""The coarse alarms behind the async driver's first-byte limit and the disconnect watcher."""

from __future__ import annotations

import asyncio
import threading

import pytest

from badgr_middleware import alarms
from badgr_middleware.alarms import GRAIN, alarm_at


def run(coro):  # type: ignore[no-untyped-def]
    return asyncio.run(coro)


def _clock() -> alarms._AlarmClock:
    return alarms._clocks.get()


def test_an_alarm_runs_after_its_time_and_at_most_about_a_grain_later() -> None:
    async def main() -> list[float]:
        loop = asyncio.get_running_loop()
        ran: list[float] = []
        due = [loop.time() + delay for delay in (0.0, 0.013, 0.05, 0.101)]
        for when in due:
            alarm_at(when, lambda when=when: ran.append(loop.time() - when))
        await asyncio.sleep(0.25)
        return ran

    lateness = run(main())
    assert len(lateness) == 4
    assert all(late >= 0 for late in lateness), lateness  # never early
    assert all(late < GRAIN + 0.05 for late in lateness), lateness  # slack for a busy machine


def test_alarms_run_in_order_of_their_buckets() -> None:
    async def main() -> list[int]:
        now = asyncio.get_running_loop().time()
        order: list[int] = []
        for i in (3, 1, 2):
            alarm_at(now + i * 2 * GRAIN, lambda i=i: order.append(i))
        await asyncio.sleep(8 * GRAIN)
        return order

    assert run(main()) == [1, 2, 3]


def test_a_cancelled_alarm_never_runs_and_fired_says_what_happened() -> None:
    async def main() -> tuple[list[str], bool, bool]:
        now = asyncio.get_running_loop().time()
        ran: list[str] = []
        kept = alarm_at(now, lambda: ran.append("kept"))
        dropped = alarm_at(now, lambda: ran.append("dropped"))
        dropped.cancel()
        dropped.cancel()  # twice is harmless
        await asyncio.sleep(3 * GRAIN)
        kept.cancel()  # after it ran: nothing happens
        return ran, kept.fired, dropped.fired

    assert run(main()) == (["kept"], True, False)


def test_a_callback_may_cancel_an_alarm_of_its_own_bucket() -> None:
    async def main() -> list[str]:
        now = asyncio.get_running_loop().time()
        ran: list[str] = []
        second: list[alarms.Alarm] = []

        def first() -> None:
            ran.append("first")
            second[0].cancel()

        alarm_at(now, first)
        second.append(alarm_at(now, lambda: ran.append("second")))
        await asyncio.sleep(3 * GRAIN)
        return ran

    assert run(main()) == ["first"]


def test_an_alarm_armed_by_a_callback_for_the_past_still_runs() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        ran: list[str] = []
        past = loop.time() - 10.0
        alarm_at(loop.time(), lambda: alarm_at(past, lambda: ran.append("later")))
        await asyncio.sleep(5 * GRAIN)
        return ran

    assert run(main()) == ["later"]


def test_a_failing_callback_is_reported_and_the_others_still_run() -> None:
    async def main() -> tuple[list[str], list[str]]:
        loop = asyncio.get_running_loop()
        reported: list[str] = []
        loop.set_exception_handler(lambda _loop, context: reported.append(context["message"]))
        ran: list[str] = []

        def broken() -> None:
            raise RuntimeError("boom")

        alarm_at(loop.time(), broken)
        alarm_at(loop.time(), lambda: ran.append("ok"))
        await asyncio.sleep(3 * GRAIN)
        return ran, reported

    assert run(main()) == (["ok"], ["badgr alarm callback failed"])


def test_the_clock_stops_ticking_when_nothing_is_pending() -> None:
    async def main() -> tuple[bool, bool, bool, int]:
        loop = asyncio.get_running_loop()
        alarm = alarm_at(loop.time() + 60.0, lambda: None)
        ticking_while_pending = _clock()._ticking
        alarm.cancel()
        await asyncio.sleep(3 * GRAIN)
        stopped = not _clock()._ticking
        ran: list[int] = []
        alarm_at(loop.time(), lambda: ran.append(1))  # ticks again after a quiet spell
        restarted = _clock()._ticking
        await asyncio.sleep(3 * GRAIN)
        return ticking_while_pending, stopped, restarted and not _clock()._ticking, len(ran)

    assert run(main()) == (True, True, True, 1)


def test_a_long_pending_alarm_leaves_no_empty_buckets_behind() -> None:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        keep = alarm_at(loop.time() + 60.0, lambda: None)
        for i in range(1000):  # armed and cancelled, as every request's limit is
            alarm_at(loop.time() + 30.0 + i * GRAIN, lambda: None).cancel()
        buckets = len(_clock()._buckets)
        keep.cancel()
        return buckets

    assert run(main()) == 1


def test_each_event_loop_has_its_own_alarms() -> None:
    ran: dict[str, int] = {}

    def in_thread(name: str) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            done = asyncio.Event()
            alarm_at(loop.time(), done.set)  # set() must run on this loop's own thread
            await asyncio.wait_for(done.wait(), 2.0)
            ran[name] = threading.get_ident()

        asyncio.run(main())

    threads = [threading.Thread(target=in_thread, args=(n,)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(5.0)
    assert sorted(ran) == ["a", "b"]


def test_alarm_at_needs_a_running_loop() -> None:
    with pytest.raises(RuntimeError):
        alarm_at(0.0, lambda: None)


class _Owner:
    """Holds its alarm, whose callback is the owner's own method: a reference cycle."""

    def __init__(self, when: float) -> None:
        self.alarm = alarm_at(when, self.ring)

    def ring(self) -> None:
        pass


@pytest.mark.parametrize("ending", ["cancelled", "fired"])
def test_an_alarm_lets_go_of_its_callback_so_no_cycle_waits_for_the_gc(ending: str) -> None:
    import gc
    import weakref

    async def main() -> bool:
        loop = asyncio.get_running_loop()
        owner = _Owner(loop.time())
        if ending == "cancelled":
            owner.alarm.cancel()
        else:
            await asyncio.sleep(3 * GRAIN)
            assert owner.alarm.fired
        gone = weakref.ref(owner)
        del owner
        return gone() is None  # freed by reference counting alone

    gc.disable()
    try:
        assert run(main())
    finally:
        gc.enable()


def test_a_finished_loop_is_not_kept_alive_by_its_alarms() -> None:
    import gc
    import weakref

    loops: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        loops.append(weakref.ref(loop))
        alarm_at(loop.time(), lambda: None)
        alarm_at(loop.time() + 60.0, lambda: None).cancel()
        await asyncio.sleep(3 * GRAIN)

    run(main())
    run(main())  # another loop becomes the last one used
    gc.collect()
    assert loops[0]() is None
