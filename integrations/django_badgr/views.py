"""The endpoint view: sync under WSGI, async under ASGI, and a stream that really streams.

Django buffers a :class:`~django.http.StreamingHttpResponse` whose iterator does not match
the server (an async iterator under WSGI, a sync one under ASGI is consumed whole). So the
one view branches on the request: an :class:`~django.core.handlers.asgi.ASGIRequest` is
served by :meth:`Engine.handle_async` (the async driver) with an async iterator, anything
else by :meth:`Engine.handle` (the sync driver) with a sync iterator.

Django decides whether to await a view by asking whether it is a coroutine function, once
per request, on the thread serving it. :class:`BadgrView` answers "yes" exactly when asked
inside a running event loop (Django's ASGI handler), so under ASGI it runs on the loop and
under WSGI it runs in the request's thread: no thread hop, no event loop per request.
Wrapping it in a decorator would hide that answer; its flags (``csrf_exempt``,
``login_required = False``, no ``ATOMIC_REQUESTS`` transaction) are set on it instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any
from wsgiref.util import is_hop_by_hop

from asgiref.sync import markcoroutinefunction, sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.core.handlers.asgi import ASGIRequest
from django.http import HttpRequest as DjangoRequest
from django.http import HttpResponse as DjangoResponse
from django.http import HttpResponseBase, StreamingHttpResponse

from badgr_middleware.engine import Engine
from badgr_middleware.errors import ApiError
from badgr_middleware.http.endpoint import Endpoint, body_too_large, error_response
from badgr_middleware.messages import HttpRequest, HttpResponse

from .auth import authenticate, authenticate_async, needs_django, staff_user
from .conf import badgr_settings, get_engine

__all__ = ["BadgrView", "endpoint"]

logger = logging.getLogger(__name__)


def _probe() -> None:  # pragma: no cover - never called
    pass


# The attribute(s) asgiref/inspect use to mark a callable as a coroutine function:
# ``_is_coroutine`` before Python 3.12, ``_is_coroutine_marker`` from 3.12 on.
_COROUTINE_MARKS: dict[str, object] = dict(vars(markcoroutinefunction(_probe)))


class _EveryDatabase(frozenset[str]):
    """``make_view_atomic`` skips the aliases in here: all of them, since a stream outlives
    any transaction the view could open."""

    def __contains__(self, alias: object) -> bool:
        return True


class BadgrView:
    """Serves every path under the ``include()`` prefix; the core owns routing, 404 and 405."""

    csrf_exempt = True  # clients send bearer keys; auth.py CSRF-checks session logins itself
    login_required = False  # LoginRequiredMiddleware (Django 5.1+): the endpoint answers 401
    _non_atomic_requests = _EveryDatabase()

    def __init__(self) -> None:
        self.__name__ = self.__qualname__ = "endpoint"

    def __getattr__(self, name: str) -> Any:
        if name in _COROUTINE_MARKS and _in_event_loop():
            return _COROUTINE_MARKS[name]
        raise AttributeError(name)

    def __call__(self, request: DjangoRequest, path: str = "") -> Any:
        if isinstance(request, ASGIRequest):
            return self.serve_async(request, path)  # a coroutine: Django awaits it (see above)
        return self.serve(request, path)

    def serve(self, request: DjangoRequest, path: str) -> HttpResponseBase:
        """WSGI: the sync driver; a stream is a sync iterator closed by the server."""
        try:
            engine = get_engine()
        except ImproperlyConfigured as error:
            return _misconfigured(error)
        neutral = _neutral(request, path, engine)
        if isinstance(neutral, HttpResponse):
            return _to_django(neutral, asynchronous=False)
        try:
            if _staff_status(engine, neutral):
                neutral.principal = staff_user(request)
            elif needs_django(badgr_settings.auth):
                neutral.principal = authenticate(request)
            response = engine.handle(neutral)
        except Exception as error:
            response = _failed(error, neutral)
        return _to_django(response, asynchronous=False)

    async def serve_async(self, request: DjangoRequest, path: str) -> HttpResponseBase:
        """ASGI: the async driver; a stream is an async iterator. When the client goes away,
        Django (5.0+) cancels the task streaming it, which closes the upstream at once."""
        try:
            engine = get_engine()
        except ImproperlyConfigured as error:
            return _misconfigured(error)
        neutral = _neutral(request, path, engine)
        if isinstance(neutral, HttpResponse):
            return _to_django(neutral, asynchronous=True)
        try:
            if _staff_status(engine, neutral):
                neutral.principal = await sync_to_async(staff_user)(request)
            elif needs_django(badgr_settings.auth):
                neutral.principal = await authenticate_async(request)
            response = await engine.handle_async(neutral)
        except Exception as error:
            response = _failed(error, neutral)
        return _to_django(response, asynchronous=True)


endpoint = BadgrView()
"""The view :mod:`django_badgr.urls` routes every path to."""


def _staff_status(engine: Engine, neutral: HttpRequest) -> bool:
    """``GET status`` with ``BADGR["status_auth"] = "staff"``: only staff users (or status
    keys, which the core checks) may read it."""
    return engine.config.status_auth == "staff" and neutral.path.strip("/") == "status"


def _in_event_loop() -> bool:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def _neutral(request: DjangoRequest, path: str, engine: Engine) -> HttpRequest | HttpResponse:
    """The core's request; or the 413 for a body over ``max_body_bytes``."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    full = request.path
    mount = full[: len(full) - len(path)] if path and full.endswith(path) else full
    neutral = HttpRequest(
        request.method or "GET", "/" + path, headers,
        query=request.META.get("QUERY_STRING", ""), prefix=mount.rstrip("/"),
    )
    limit = engine.config.max_body_bytes
    declared = headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        return error_response(body_too_large(limit), Endpoint.request_id(neutral))
    # read(), not .body: .body caps at DATA_UPLOAD_MAX_MEMORY_SIZE (2.5 MB by default), and
    # a request with images in it is often larger; the core's max_body_bytes is the limit
    body = request.read(limit + 1)
    if len(body) > limit:
        return error_response(body_too_large(limit), Endpoint.request_id(neutral))
    neutral.body = body
    return neutral


def _failed(error: Exception, request: HttpRequest) -> HttpResponse:
    request_id = Endpoint.request_id(request)
    if isinstance(error, ApiError):
        return error_response(error, request_id)
    logger.exception("django_badgr failed to serve request %s", request_id)
    internal = ApiError(500, f"The gateway failed to serve this request (request id "
                             f"{request_id}).", type="server_error", code="internal_error")
    return error_response(internal, request_id)


def _misconfigured(error: ImproperlyConfigured) -> HttpResponseBase:
    logger.error("django_badgr cannot serve requests: %s", error)
    problem = ApiError(500, "The LLM endpoint is misconfigured; the server log says why.",
                       type="server_error", code="badgr_misconfigured")
    return _to_django(error_response(problem, "-"), asynchronous=False)


def _to_django(response: HttpResponse, *, asynchronous: bool) -> HttpResponseBase:
    headers: dict[str, str] = {}
    for name, value in response.headers:
        if is_hop_by_hop(name):  # WSGI forbids them; the server manages the connection
            continue
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    content_type = headers.pop("content-type", "application/json")
    out: HttpResponseBase
    if response.stream is None:
        out = DjangoResponse(response.body, status=response.status, content_type=content_type)
    else:
        if asynchronous:
            content: Any = _async_body(response.body, response.stream)  # type: ignore[arg-type]
        else:
            content = _sync_body(response.body, response.stream)  # type: ignore[arg-type]
        out = StreamingHttpResponse(content, status=response.status, content_type=content_type)
        # GZipMiddleware leaves a response that already has a Content-Encoding alone, and a
        # compressed event stream would reach the client in bursts
        out["Content-Encoding"] = ""
    for name, value in headers.items():
        out[name] = value
    return out


def _sync_body(first: bytes, stream: Iterator[bytes]) -> Iterator[bytes]:
    """The first bytes, then the stream; the WSGI server's ``close()`` closes the upstream."""
    try:
        if first:
            yield first
        yield from stream
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()


async def _async_body(first: bytes, stream: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """The first bytes, then the stream. A disconnect cancels the task awaiting the next
    chunk (inside the core's relay, which closes the upstream); ``aclose`` covers the rest."""
    try:
        if first:
            yield first
        async for chunk in stream:
            if chunk:
                yield chunk
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
