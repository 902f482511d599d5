"""The Flask extension: :class:`Badgr`, one engine per app, one blueprint serving the endpoint.

The view only translates: Flask's request becomes an :class:`~badgr_middleware.HttpRequest`,
:meth:`Engine.handle <badgr_middleware.Engine.handle>` (the sync driver) serves it, and its
:class:`~badgr_middleware.HttpResponse` becomes a Flask :class:`~flask.Response`. A stream is a
plain generator whose ``finally`` closes the upstream, so when the WSGI server calls
``close()`` on a client that went away the upstream request stops at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from flask import Blueprint, Flask, Request, Response, current_app, request, stream_with_context
from werkzeug.exceptions import RequestEntityTooLarge

from badgr_middleware.config import ConfigError, ConfigProblem, load_config
from badgr_middleware.engine import Engine
from badgr_middleware.http import subpath
from badgr_middleware.http.endpoint import body_too_large, error_response
from badgr_middleware.http.wsgi import headers_of
from badgr_middleware.messages import HttpRequest, HttpResponse

__all__ = ["EXTENSION_KEY", "AuthenticateCallable", "Badgr", "BadgrState"]

EXTENSION_KEY = "badgr"
METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]  # the core answers 405 itself

AuthenticateCallable = Callable[[Request], Any]


@dataclass(frozen=True, slots=True)
class BadgrState:
    """What :meth:`Badgr.init_app` keeps in ``app.extensions["badgr"]``."""

    extension: Badgr
    engine: Engine
    prefix: str
    blueprint: Blueprint


class Badgr:
    """Serve badgr's OpenAI-compatible endpoint from a Flask app.

    ::

        app.config["BADGR"] = {"providers": {...}, "models": {...}, "client_keys": [...]}
        badgr = Badgr(app)          # or: badgr = Badgr(); badgr.init_app(app) in a factory

    Configuration keys, each given its default with ``app.config.setdefault``:

    ``BADGR`` (default ``None``)
        The core configuration: a dict of the schema in docs/configuration.md, a
        :class:`~badgr_middleware.Config`, or the path of a TOML file. ``None`` loads it from
        the environment (``$BADGR_CONFIG``, ``./badgr.toml``, the well-known API key
        variables). Errors raise :class:`~badgr_middleware.ConfigError` from ``init_app``.
    ``BADGR_URL_PREFIX`` (default: the core config's ``prefix``, itself ``"/v1"``)
        Where the blueprint is mounted, relative to the app's ``SCRIPT_NAME``.

    ``init_app`` builds one :class:`~badgr_middleware.Engine` per app (its signals are sent
    with the app as ``sender``), registers the ``badgr`` blueprint, adds the ``flask badgr``
    commands, and exempts the blueprint from Flask-WTF's CSRF protection when that extension
    is used. The extension object keeps no app; per-app state lives in
    ``app.extensions["badgr"]`` (a :class:`BadgrState`).
    """

    def __init__(self, app: Flask | None = None) -> None:
        self._authenticate: AuthenticateCallable | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set up badgr on ``app``; a second call for the same app raises ``RuntimeError``."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError(
                "badgr is already initialised on this app; call Badgr(app) or "
                "badgr.init_app(app) once per app"
            )
        app.config.setdefault("BADGR", None)
        config = load_config(app.config["BADGR"])
        app.config.setdefault("BADGR_URL_PREFIX", config.prefix)
        prefix = _url_prefix(app.config["BADGR_URL_PREFIX"])
        if prefix != config.prefix:
            config = dataclasses.replace(config, prefix=prefix)

        engine = Engine(config, sender=app)  # the real app, never the current_app proxy
        blueprint = Blueprint("badgr", __name__, url_prefix=prefix)
        blueprint.add_url_rule("", "endpoint", _view, methods=METHODS)
        blueprint.add_url_rule("/<path:path>", "endpoint", _view, methods=METHODS)
        try:
            app.register_blueprint(blueprint)
        except BaseException:
            engine.close()
            raise
        app.extensions[EXTENSION_KEY] = BadgrState(self, engine, prefix, blueprint)
        _exempt_from_csrf(app, blueprint)

        from .cli import badgr_commands

        app.cli.add_command(badgr_commands)

    def authenticate(self, func: AuthenticateCallable) -> AuthenticateCallable:
        """Register ``func(request) -> principal | None`` as the inbound check (a decorator).

        ``func`` receives the Flask :class:`~flask.Request` (so it can use flask-login's
        ``current_user``, the session, or the app's own API keys) and returns who is calling,
        or ``None``. A principal lets the request in. ``None`` falls through to the core's
        rules: the config's ``client_keys``, its ``authenticate``, ``allow_anonymous``;
        without any of them the request gets 401. Raising an ``HTTPException``
        (``abort(403)``) answers with it.
        """
        self._authenticate = func
        return func

    @property
    def authenticate_callable(self) -> AuthenticateCallable | None:
        """The callable registered with :meth:`authenticate`, if any."""
        return self._authenticate

    @staticmethod
    def state_for(app: Flask | None = None) -> BadgrState:
        """``app``'s badgr state (default: the current app); ``RuntimeError`` if not set up."""
        target = app if app is not None else current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            state: BadgrState = target.extensions[EXTENSION_KEY]
        except KeyError:
            raise RuntimeError(
                "badgr is not initialised on this app; call Badgr(app) or badgr.init_app(app)"
            ) from None
        return state

    @classmethod
    def engine_for(cls, app: Flask | None = None) -> Engine:
        """The :class:`~badgr_middleware.Engine` serving ``app`` (default: the current app).

        ``engine_for(app).status()`` is the health snapshot; ``engine_for(app).close()``
        closes its upstream connection pools (e.g. at the end of a test).
        """
        return cls.state_for(app).engine

    @property
    def engine(self) -> Engine:
        """The engine of the current app (needs an app context)."""
        return self.engine_for()


def _url_prefix(value: object) -> str:
    fix = 'set BADGR_URL_PREFIX to a path like "/v1" or "/api/llm"'
    message = None
    if not isinstance(value, str):
        message = f"expected a string, got {type(value).__name__}"
    elif not value.startswith("/"):
        message = "the prefix must start with '/'"
    elif value.endswith("/"):
        message = "the prefix must not end with '/'"
    elif any(c.isspace() or c in "?#<>" for c in value):
        message = "the prefix must be a plain path (no spaces, '?', '#', '<' or '>')"
    if message is None:
        return str(value)
    raise ConfigError([ConfigProblem("BADGR_URL_PREFIX", message, fix, "bad_prefix")])


def _exempt_from_csrf(app: Flask, blueprint: Blueprint) -> None:
    """Keep Flask-WTF's CSRF check off the endpoint, whichever extension is set up first.

    API clients send a bearer key, not a form token. When ``CSRFProtect`` is initialised
    later, its check runs after this hook, which exempts the blueprint just before.
    """
    csrf = app.extensions.get("csrf")
    if csrf is not None and hasattr(csrf, "exempt"):
        csrf.exempt(blueprint)
        return

    def exempt_once_csrf_exists() -> None:
        late = app.extensions.get("csrf")
        if late is not None and hasattr(late, "exempt"):
            late.exempt(blueprint)  # a set: exempting twice is harmless

    app.before_request(exempt_once_csrf_exists)


def _view(path: str = "") -> Response:
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
    state: BadgrState = app.extensions[EXTENSION_KEY]
    return _to_flask(_serve(state, request._get_current_object()))  # type: ignore[attr-defined]


def _serve(state: BadgrState, flask_request: Request) -> HttpResponse:
    engine = state.engine
    limit = engine.config.max_body_bytes
    method = flask_request.method
    headers = headers_of(flask_request.environ)
    path = subpath(flask_request.path, state.prefix) or "/"
    declared = flask_request.content_length
    if declared is not None and declared > limit:
        return _too_large(engine, method, path, headers, limit)

    principal = None
    if state.extension.authenticate_callable is not None:
        principal = state.extension.authenticate_callable(flask_request) or None

    # badgr's own limit, not the app's MAX_CONTENT_LENGTH. It also bounds a chunked body,
    # which Werkzeug cuts at the limit without an error: one byte more tells a cut body
    # from one that fits exactly.
    flask_request.max_content_length = limit + 1
    try:
        body = flask_request.get_data(cache=False)
    except RequestEntityTooLarge:
        body = None
    if body is None or len(body) > limit:
        return _too_large(engine, method, path, headers, limit)
    http_request = HttpRequest(
        method, path, headers, body, flask_request.environ.get("QUERY_STRING", ""),
        principal=principal, prefix=flask_request.script_root + state.prefix,
    )
    return engine.handle(http_request)


def _too_large(
    engine: Engine, method: str, path: str, headers: dict[str, str], limit: int
) -> HttpResponse:
    request_id = engine.endpoint.request_id(HttpRequest(method, path, headers))
    return error_response(body_too_large(limit), request_id)


def _to_flask(result: HttpResponse) -> Response:
    if result.stream is None:
        return Response(result.body, status=result.status, headers=result.headers)
    stream: Iterator[bytes] = result.stream  # type: ignore[assignment]  # sync driver
    # a generator (not a list) keeps Werkzeug from buffering or adding Content-Length
    response = Response(
        stream_with_context(_relay(result.body, stream)),
        status=result.status, headers=result.headers,
    )
    # a generator never started is not run by close(): close the upstream directly too
    response.call_on_close(_closer(stream))
    return response


def _relay(first: bytes, stream: Iterator[bytes]) -> Iterator[bytes]:
    """The first bytes, then the stream; the server's ``close()`` closes the upstream."""
    try:
        if first:
            yield first
        yield from stream
    finally:
        _closer(stream)()


def _closer(stream: Iterator[bytes]) -> Callable[[], None]:
    close = getattr(stream, "close", None)
    return close if close is not None else _nothing


def _nothing() -> None:
    return None
