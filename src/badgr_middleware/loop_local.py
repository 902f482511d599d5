"""State kept per event loop (an aiohttp session must never cross loops, nor must a timer)."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LoopLocal"]

T = TypeVar("T")


class LoopLocal(Generic[T]):
    """One ``T`` per event loop, made by calling ``factory()`` on the loop's first use.

    Most servers run one loop, so the last loop's value is found without a lookup (a weak
    mapping's lookup makes a weak reference each time). A loop's value goes with the loop,
    unless the value itself refers to the loop (an aiohttp session does): :meth:`pop` that
    one when the loop's work ends.
    """

    __slots__ = ("_factory", "_values", "_last")

    def __init__(self, factory: Callable[[], T]) -> None:
        self._factory = factory
        self._values: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = (
            weakref.WeakKeyDictionary())
        self._last: tuple[weakref.ref[asyncio.AbstractEventLoop], T] | None = None

    def get(self) -> T:
        """The running loop's value."""
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last[0]() is loop:
            return last[1]
        value = self._values.get(loop)
        if value is None:
            value = self._values[loop] = self._factory()
        self._last = (weakref.ref(loop), value)
        return value

    def pop(self) -> T | None:
        """Forget the running loop's value and return it (None if it had none)."""
        self._last = None
        return self._values.pop(asyncio.get_running_loop(), None)
