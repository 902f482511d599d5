"""LoopLocal: one value per event loop (aiohttp sessions, alarm clocks)."""

from __future__ import annotations

import asyncio
import gc
import weakref

from badgr_middleware.loop_local import LoopLocal


class Value:
    """A value that does not refer to its loop (one that did would keep the loop alive)."""


def test_each_loop_gets_its_own_value_made_once() -> None:
    local: LoopLocal[Value] = LoopLocal(Value)

    async def twice() -> tuple[Value, Value]:
        return local.get(), local.get()

    a1, a2 = asyncio.run(twice())
    b1, b2 = asyncio.run(twice())
    assert a1 is a2 and b1 is b2
    assert a1 is not b1


def test_a_value_lives_as_long_as_its_loop() -> None:
    local: LoopLocal[Value] = LoopLocal(Value)
    made: list[weakref.ref[Value]] = []

    async def use() -> None:
        made.append(weakref.ref(local.get()))

    asyncio.run(use())
    asyncio.run(use())  # the last loop's value is cached: this must not keep the first one
    gc.collect()
    assert made[0]() is None


def test_pop_forgets_the_running_loops_value() -> None:
    local: LoopLocal[Value] = LoopLocal(Value)

    async def main() -> tuple[bool, bool, bool]:
        first = local.get()
        popped = local.pop()
        again = local.get()
        return popped is first, again is not first, local.pop() is again

    assert asyncio.run(main()) == (True, True, True)


def test_pop_without_a_value_is_none() -> None:
    local: LoopLocal[Value] = LoopLocal(Value)

    async def main() -> Value | None:
        return local.pop()

    assert asyncio.run(main()) is None
