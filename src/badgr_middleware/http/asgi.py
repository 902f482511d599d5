"""Pure ASGI: :class:`BadgrApp` (the endpoint alone) and :class:`BadgrMiddleware` (around an app).

Both serve the endpoint under a path prefix (the config's ``prefix``, default ``/v1``).
Streams are sent chunk by chunk with ``more_body=True``; a client that disconnects cancels the
request, which closes the upstream connection at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ..alarms import alarm_at
from ..engine import ConfigSource, Engine
from ..errors import ApiError
from ..messages import HttpRequest, HttpResponse
from . import subpath
from .endpoint import body_too_large, error_response

__all__ = ["BadgrApp", "BadgrMiddleware"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


# Seconds a request runs before a task starts watching for the client to disconnect: the
# longest a disconnect can go unnoticed (an LLM answer takes far longer than this).
WATCH_AFTER = 0.05


class BadgrApp:
    """An ASGI app that serves only the OpenAI-compatible endpoint.

    ``prefix`` defaults to the config's ``prefix``; pass ``""`` when another router already
    mounts this app under a path.
    """

    def __init__(
        self, config: ConfigSource = None, *, engine: Engine | None = None,
        prefix: str | None = None,
    ) -> None:
        self.engine = engine or Engine(config)
        self.prefix = self.engine.config.prefix if prefix is None else prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(self.engine, receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000})
            return
        path = subpath(_path(scope), self.prefix)
        if path is None:
            error = ApiError(404, f"Invalid URL ({scope['method']} {_path(scope)})",
                             code="unknown_url")
            await _send_response(send, error_response(error, "-"))
            return
        await serve(self.engine, scope, receive, send, path, self.prefix)


class BadgrMiddleware:
    """Wraps any ASGI app: requests under ``prefix`` go to badgr, everything else to ``app``."""

    def __init__(
        self, app: ASGIApp, config: ConfigSource = None, *, engine: Engine | None = None,
        prefix: str | None = None,
    ) -> None:
        self.app = app
        self.engine = engine or Engine(config)
        self.prefix = self.engine.config.prefix if prefix is None else prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path = subpath(_path(scope), self.prefix)
            if path is not None:
                await serve(self.engine, scope, receive, send, path, self.prefix)
                return
        elif scope["type"] == "lifespan":
            send = self._closing_on_shutdown(send)
        await self.app(scope, receive, send)

    def _closing_on_shutdown(self, send: Send) -> Send:
        """The app owns the lifespan; badgr only closes its upstream connections at the end."""

        async def send_wrapper(message: Message) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                await self.engine.aclose()
                self.engine.close()
            await send(message)

        return send_wrapper


def _path(scope: Scope) -> str:
    """The request path without ``root_path`` (servers disagree on whether it is included)."""
    path: str = scope.get("path", "/")
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :] or "/"
    return path


async def serve(
    engine: Engine, scope: Scope, receive: Receive, send: Send, path: str, prefix: str = ""
) -> None:
    """Serve one HTTP scope whose path relative to the mount ``prefix`` is ``path``."""
    headers = _headers(scope.get("headers", ()))
    body = await _read_body(receive, headers, engine.config.max_body_bytes)
    if body is None:  # the client left while sending
        return
    if isinstance(body, ApiError):
        await _send_response(send, error_response(body, engine.endpoint.request_id(
            HttpRequest(scope["method"], path, headers))))
        return
    query = scope.get("query_string", b"").decode("latin-1")
    request = HttpRequest(scope["method"], path, headers, body, query, prefix=prefix)
    task = asyncio.current_task()
    assert task is not None  # an ASGI app always runs in a task
    watch = _DisconnectWatch(receive, task)
    try:
        response = await engine.handle_async(request)
        if response.stream is None:
            await _send_response(send, response, head=request.method == "HEAD")
            watch.active = False
        else:
            await _send_stream(send, response, watch)
    except asyncio.CancelledError:
        # the watch cancelled us: the client left, so the upstream is closed and we are done
        if not watch.fired or task.uncancel() > 0:
            raise
    except OSError:  # the client's connection broke while we were writing to it
        pass
    finally:
        watch.stop()


def _headers(raw: Iterable[tuple[bytes, bytes]]) -> dict[str, str]:
    """The request's headers by lower-cased name; a repeated one's values joined by ", "."""
    pairs = raw if isinstance(raw, list) else list(raw)
    headers = {name.decode("latin-1").lower(): value.decode("latin-1") for name, value in pairs}
    if len(headers) < len(pairs):  # a name came more than once
        headers = {}
        for raw_name, raw_value in pairs:
            name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


class _DisconnectWatch:
    """Cancels the serving task the moment the client disconnects, until the response is out.

    One helper task waits on ``receive()`` for ``http.disconnect``, and the response is
    produced in the serving task itself: one task per request instead of a second task for
    the response and an ``asyncio.wait`` over both. The helper task starts only once the
    request has taken ``WATCH_AFTER`` seconds: most of a short request's cost would be the
    task, and a disconnect is still seen at most that late (the server keeps it queued for
    ``receive()``). Once the last body message is sent the watch stands down (ASGI servers
    also report ``http.disconnect`` after a complete response), so the stream's final
    bookkeeping is never cut short.
    """

    __slots__ = ("_receive", "_task", "_timer", "_watcher", "active", "fired")

    def __init__(self, receive: Receive, task: asyncio.Task[Any]) -> None:
        self._receive = receive
        self._task = task
        self.active = True
        self.fired = False
        self._watcher: asyncio.Future[None] | None = None
        self._timer = alarm_at(asyncio.get_running_loop().time() + WATCH_AFTER, self._start)

    def _start(self) -> None:
        if self.active:
            self._watcher = asyncio.ensure_future(self._watch(self._receive))

    async def _watch(self, receive: Receive) -> None:
        with contextlib.suppress(Exception):  # a receive() that failed counts as one too
            while (await receive())["type"] != "http.disconnect":
                pass
        if self.active:
            self.active = False
            self.fired = True
            self._task.cancel()

    def stop(self) -> None:
        self._timer.cancel()
        if self.active:  # the response did not finish: stop watching now
            self.active = False
            if self._watcher is not None:
                self._watcher.cancel()
        # After a complete response the server answers the pending receive() with
        # http.disconnect (the ASGI spec says so), which ends the watcher without the cost
        # of a cancellation.


async def _send_stream(send: Send, response: HttpResponse, watch: _DisconnectWatch) -> None:
    stream = response.stream
    try:
        await send(_start(response))
        await send({"type": "http.response.body", "body": response.body, "more_body": True})
        async for chunk in stream:  # type: ignore[union-attr]
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        watch.active = False
    finally:
        await stream.aclose()  # type: ignore[union-attr]


async def _read_body(
    receive: Receive, headers: dict[str, str], limit: int
) -> bytes | ApiError | None:
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return body_too_large(limit)
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return body_too_large(limit)
        if not message.get("more_body", False):
            return b"".join((*parts, chunk)) if parts else chunk
        parts.append(chunk)


def _start(response: HttpResponse) -> Message:
    return {
        "type": "http.response.start",
        "status": response.status,
        "headers": [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers],
    }


async def _send_response(send: Send, response: HttpResponse, *, head: bool = False) -> None:
    response.headers.append(("content-length", str(len(response.body))))
    await send(_start(response))
    await send({"type": "http.response.body", "body": b"" if head else response.body})


async def _lifespan(engine: Engine, receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await engine.aclose()
            engine.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
