"""WSGI: :class:`BadgrWSGIApp` (the endpoint alone) and :class:`BadgrWSGIMiddleware`.

Uses the sync driver. A stream is a plain generator: when the client goes away the server
calls its ``close()``, which closes the upstream connection at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from http import HTTPStatus
from typing import Any

from ..engine import ConfigSource, Engine
from ..errors import ApiError
from ..messages import HttpRequest, HttpResponse
from . import subpath
from .endpoint import body_too_large, error_response

__all__ = ["BadgrWSGIApp", "BadgrWSGIMiddleware"]

Environ = dict[str, Any]
StartResponse = Callable[..., Any]
WSGIApp = Callable[[Environ, StartResponse], Iterable[bytes]]


class BadgrWSGIApp:
    """A WSGI app that serves only the endpoint, under ``prefix`` (default: the config's)."""

    def __init__(
        self, config: ConfigSource = None, *, engine: Engine | None = None,
        prefix: str | None = None,
    ) -> None:
        self.engine = engine or Engine(config)
        self.prefix = self.engine.config.prefix if prefix is None else prefix

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        raw_path = environ.get("PATH_INFO", "") or "/"
        path = subpath(raw_path, self.prefix)
        if path is None:
            method = environ.get("REQUEST_METHOD", "GET")
            url = environ.get("SCRIPT_NAME", "") + raw_path
            error = ApiError(404, f"Invalid URL ({method} {url})", code="unknown_url")
            return _finish(start_response, error_response(error, "-"))
        return serve(self.engine, environ, start_response, path, self.prefix)


class BadgrWSGIMiddleware:
    """Wraps any WSGI app: requests under ``prefix`` go to badgr, the rest to ``app``."""

    def __init__(
        self, app: WSGIApp, config: ConfigSource = None, *, engine: Engine | None = None,
        prefix: str | None = None,
    ) -> None:
        self.app = app
        self.engine = engine or Engine(config)
        self.prefix = self.engine.config.prefix if prefix is None else prefix

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = subpath(environ.get("PATH_INFO", "") or "/", self.prefix)
        if path is None:
            return self.app(environ, start_response)
        return serve(self.engine, environ, start_response, path, self.prefix)


def headers_of(environ: Environ) -> dict[str, str]:
    headers: dict[str, str] = {}
    for key, value in environ.items():
        if key.startswith("HTTP_"):
            headers[key[5:].replace("_", "-").lower()] = value
    for key in ("CONTENT_TYPE", "CONTENT_LENGTH"):
        if environ.get(key):
            headers[key.replace("_", "-").lower()] = environ[key]
    return headers


def serve(
    engine: Engine, environ: Environ, start_response: StartResponse, path: str, prefix: str = ""
) -> Iterable[bytes]:
    """Serve one WSGI request whose path relative to the mount ``prefix`` is ``path``."""
    headers = headers_of(environ)
    method = environ.get("REQUEST_METHOD", "GET")
    body = _read_body(environ, engine.config.max_body_bytes)
    if isinstance(body, ApiError):
        request_id = engine.endpoint.request_id(HttpRequest(method, path, headers))
        return _finish(start_response, error_response(body, request_id))
    request = HttpRequest(method, path, headers, body, environ.get("QUERY_STRING", ""),
                          prefix=environ.get("SCRIPT_NAME", "") + prefix)
    return _finish(start_response, engine.handle(request), head=method == "HEAD")


def _read_body(environ: Environ, limit: int) -> bytes | ApiError:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    declared = environ.get("CONTENT_LENGTH") or ""
    if declared.isdigit():
        if int(declared) > limit:
            return body_too_large(limit)
        return stream.read(int(declared)) if int(declared) else b""
    if environ.get("HTTP_TRANSFER_ENCODING", "").lower() != "chunked":
        return b""
    body: bytes = stream.read(limit + 1)
    return body_too_large(limit) if len(body) > limit else body


def _finish(
    start_response: StartResponse, response: HttpResponse, *, head: bool = False
) -> Iterable[bytes]:
    try:
        phrase = HTTPStatus(response.status).phrase
    except ValueError:
        phrase = "Unknown"
    headers = list(response.headers)
    if response.stream is None:
        headers.append(("content-length", str(len(response.body))))
        start_response(f"{response.status} {phrase}", headers)
        return [b""] if head else [response.body]
    start_response(f"{response.status} {phrase}", headers)
    return _StreamBody(response.body, response.stream)  # type: ignore[arg-type]


class _StreamBody:
    """The first bytes, then the stream; the server's ``close()`` closes the upstream."""

    def __init__(self, first: bytes, stream: Iterator[bytes]) -> None:
        self._first = first
        self._stream = stream

    def __iter__(self) -> Iterator[bytes]:
        if self._first:
            yield self._first
        yield from self._stream

    def close(self) -> None:
        close = getattr(self._stream, "close", None)
        if close is not None:
            close()
