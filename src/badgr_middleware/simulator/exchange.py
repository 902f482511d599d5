"""Sending one HTTP response over ASGI while watching for the client to go away."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, MutableMapping
from types import TracebackType
from typing import Any

Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Scope = MutableMapping[str, Any]


class ClientGone(Exception):
    """The client disconnected before the response finished."""


class SimulatedConnectionAbort(Exception):
    """Raised on purpose so the ASGI server drops the connection mid-response.

    Servers close the socket without finishing the body when an app raises after the response
    started; that is the only portable way for an ASGI app to simulate a broken connection.
    """


class _HideSimulatedAborts(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, SimulatedConnectionAbort)


# uvicorn logs every exception escaping the app with a traceback; ours are intended.
logging.getLogger("uvicorn.error").addFilter(_HideSimulatedAborts())


class Exchange:
    """One response in progress: ``send`` fails with :class:`ClientGone` once the client left.

    Use as ``async with Exchange(receive, send) as ex:`` after the request body was read; a
    background task then watches ``receive()`` for ``http.disconnect``.
    """

    def __init__(self, receive: Receive, send: Send) -> None:
        self._receive = receive
        self._send = send
        self._gone = asyncio.Event()
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Exchange:
        self._watcher = asyncio.create_task(self._watch())
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._stop_watching()

    async def _watch(self) -> None:
        with contextlib.suppress(Exception):
            while (await self._receive())["type"] != "http.disconnect":
                pass
        self._gone.set()

    def _stop_watching(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    async def pause(self, seconds: float) -> None:
        """Sleep ``seconds`` (``math.inf``: until the client leaves), or raise ClientGone."""
        if seconds > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gone.wait(), None if math.isinf(seconds) else seconds)
        if self._gone.is_set():
            raise ClientGone

    async def start(self, status: int, headers: list[tuple[bytes, bytes]]) -> None:
        """Send the status line and headers."""
        await self._deliver({"type": "http.response.start", "status": status, "headers": headers})

    async def body(self, data: bytes, *, more: bool = True) -> None:
        """Send a piece of the body; ``more=False`` ends the response."""
        if not more:
            # Servers report "disconnect" to receive() once the response is complete.
            self._stop_watching()
        await self._deliver({"type": "http.response.body", "body": data, "more_body": more})

    async def _deliver(self, message: Message) -> None:
        if self._gone.is_set():
            raise ClientGone
        try:
            await self._send(message)
        except OSError as error:
            raise ClientGone from error
