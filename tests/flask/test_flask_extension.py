"""flask_badgr.Badgr with Flask's test client: set-up, requests, streams, auth, signals, CSRF.

The upstreams are real simulated providers on 127.0.0.1; only the Flask side is in-process.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

flask = pytest.importorskip("flask")

from flask import Flask, abort  # noqa: E402
from werkzeug.test import EnvironBuilder  # noqa: E402
from werkzeug.wrappers import Request  # noqa: E402

import flask_badgr  # noqa: E402
from badgr_middleware import ConfigError, Engine, signals  # noqa: E402
from flask_badgr import Badgr, BadgrState  # noqa: E402

if TYPE_CHECKING:
    from conftest import AppFactory, FlaskUpstreams

MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
CHAT: dict[str, Any] = {"model": "chat", "messages": MESSAGES}
SSE_HEADERS = {
    "content-type": "text/event-stream; charset=utf-8",
    "cache-control": "no-cache",
    "x-accel-buffering": "no",
}


def stream_chat(model: str = "chat") -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, "stream": True}


def sse_text(raw: bytes) -> str:
    """The concatenated content deltas of an SSE body."""
    text = ""
    for line in raw.decode().splitlines():
        if line.startswith("data: {"):
            chunk = json.loads(line[6:])
            for choice in chunk.get("choices", []):
                text += choice["delta"].get("content") or ""
    return text


# --------------------------------------------------------------------------- set-up


def test_init_app_keeps_state_in_app_extensions(make_app: AppFactory) -> None:
    badgr = Badgr()
    app = make_app(badgr)
    state = app.extensions["badgr"]
    assert isinstance(state, BadgrState)
    assert state.extension is badgr
    assert isinstance(state.engine, Engine)
    assert state.engine.sender is app  # the real app object, not the current_app proxy
    assert state.prefix == "/v1"
    assert app.blueprints["badgr"] is state.blueprint
    assert Badgr.engine_for(app) is state.engine
    assert Badgr.state_for(app) is state
    with app.app_context():
        assert badgr.engine is state.engine
        assert Badgr.engine_for() is state.engine
    assert not hasattr(badgr, "app")  # the extension never keeps an app


def test_constructor_form_and_one_extension_for_many_apps(
    ups: FlaskUpstreams, make_app: AppFactory
) -> None:
    app = Flask("direct")
    app.config["BADGR"] = ups.config()
    badgr = Badgr(app)
    try:
        assert app.extensions["badgr"].extension is badgr
        other = make_app(badgr)
        assert Badgr.engine_for(other) is not Badgr.engine_for(app)
        for each in (app, other):
            reply = each.test_client().post("/v1/chat/completions", json=CHAT, headers=ups.auth)
            assert reply.status_code == 200
    finally:
        Badgr.engine_for(app).close()


def test_defaults_are_set_with_setdefault(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    app = make_app()
    assert app.config["BADGR_URL_PREFIX"] == "/v1"
    custom = make_app(BADGR_URL_PREFIX="/api/llm")
    assert custom.config["BADGR_URL_PREFIX"] == "/api/llm"
    assert Badgr.engine_for(custom).config.prefix == "/api/llm"
    client = custom.test_client()
    assert client.get("/api/llm/models", headers=ups.auth).status_code == 200
    assert client.get("/v1/models", headers=ups.auth).status_code == 404


def test_url_prefix_defaults_to_the_core_config_prefix(
    ups: FlaskUpstreams, make_app: AppFactory
) -> None:
    app = make_app(config=ups.config(prefix="/llm"))
    assert app.config["BADGR_URL_PREFIX"] == "/llm"
    models = app.test_client().get("/llm/models", headers=ups.auth)
    assert [m["id"] for m in models.json["data"]] == ["chat", "long"]


def test_second_init_app_on_the_same_app_is_an_error(make_app: AppFactory) -> None:
    badgr = Badgr()
    app = make_app(badgr)
    engine = Badgr.engine_for(app)
    for again in (badgr, Badgr()):
        with pytest.raises(RuntimeError, match="already initialised"):
            again.init_app(app)
    assert Badgr.engine_for(app) is engine


def test_an_uninitialised_app_says_so() -> None:
    with pytest.raises(RuntimeError, match="not initialised"):
        Badgr.engine_for(Flask("bare"))


def test_config_errors_raise_at_init_app(ups: FlaskUpstreams) -> None:
    app = Flask("broken")
    config = ups.config()
    config["providers"]["primary"]["base_url"] = "not a url"
    config["timeouts"] = {"read": -1}
    app.config["BADGR"] = config
    with pytest.raises(ConfigError) as caught:
        Badgr(app)
    paths = {p.path for p in caught.value.problems}
    assert {"providers.primary.base_url", "timeouts.read"} <= paths
    assert ups.upstream_key not in str(caught.value)
    # nothing half set up: fixing the config and initialising again works
    assert "badgr" not in app.extensions
    assert "badgr" not in app.blueprints


@pytest.mark.parametrize("prefix", ["v1", "/v1/", "/", "/a b", 5])
def test_a_bad_url_prefix_is_a_config_error(ups: FlaskUpstreams, prefix: object) -> None:
    app = Flask("bad_prefix")
    app.config.update(BADGR=ups.config(), BADGR_URL_PREFIX=prefix)
    with pytest.raises(ConfigError) as caught:
        Badgr(app)
    assert [(p.path, p.code) for p in caught.value.problems] == [("BADGR_URL_PREFIX", "bad_prefix")]
    assert "badgr" not in app.extensions


def test_without_badgr_config_it_loads_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from badgr_middleware.providers.known import KNOWN_PROVIDERS

    for name in list(os.environ):
        if name.startswith("BADGR_"):
            monkeypatch.delenv(name)
    for known in KNOWN_PROVIDERS.values():
        if known.api_key_env:
            monkeypatch.delenv(known.api_key_env, raising=False)
    monkeypatch.chdir(tmp_path)  # no ./badgr.toml
    empty = Flask("from_env_empty")
    with pytest.raises(ConfigError):
        Badgr(empty)
    assert empty.config["BADGR"] is None

    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env-0123456789")
    monkeypatch.setenv("BADGR_CLIENT_KEYS", "env-client-key")
    app = Flask("from_env")
    Badgr(app)
    try:
        assert list(Badgr.engine_for(app).config.providers) == ["openai"]
    finally:
        Badgr.engine_for(app).close()


def test_flask_badgr_exports_what_all_lists() -> None:
    assert sorted(flask_badgr.__all__) == ["AuthenticateCallable", "Badgr", "BadgrState", "signals"]
    for name in flask_badgr.__all__:
        assert hasattr(flask_badgr, name)
    assert flask_badgr.signals is signals


def test_wsgi_and_asgi_modules_name_the_adapters() -> None:
    import badgr_middleware

    wsgi = importlib.import_module("badgr_middleware.wsgi")
    asgi = importlib.import_module("badgr_middleware.asgi")
    assert wsgi.__all__ == ["BadgrWSGIApp", "BadgrWSGIMiddleware"]
    assert asgi.__all__ == ["BadgrApp", "BadgrMiddleware"]
    assert wsgi.BadgrWSGIMiddleware is badgr_middleware.BadgrWSGIMiddleware
    assert wsgi.BadgrWSGIApp is badgr_middleware.BadgrWSGIApp
    assert asgi.BadgrMiddleware is badgr_middleware.BadgrMiddleware
    assert asgi.BadgrApp is badgr_middleware.BadgrApp


def test_import_without_flask_names_the_extra() -> None:
    code = "import sys; sys.modules['flask'] = None; import flask_badgr"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30, check=False)
    assert result.returncode == 1
    assert "ImportError: flask_badgr needs Flask: pip install 'badgr-middleware[flask]'" in (
        result.stderr
    )


# --------------------------------------------------------------------------- requests


def test_chat_completion(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    client = make_app().test_client()
    response = client.post("/v1/chat/completions", json=CHAT,
                           headers={**ups.auth, "x-request-id": "req_flask_1"})
    assert response.status_code == 200
    assert response.json["choices"][0]["message"]["content"] == ups.primary.reply
    assert response.headers["x-badgr-provider"] == "primary"
    assert response.headers["x-badgr-model"] == "sim-small"
    assert response.headers["x-badgr-attempts"] == "1"
    assert response.headers["x-request-id"] == "req_flask_1"
    assert response.headers["content-length"] == str(len(response.data))
    [sent] = ups.primary.requests
    assert sent.headers["authorization"] == f"Bearer {ups.upstream_key}"
    assert sent.json["messages"] == MESSAGES


def test_503_fails_over(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    ups.primary.fail_next("503")
    response = make_app().test_client().post("/v1/chat/completions", json=CHAT, headers=ups.auth)
    assert response.status_code == 200
    assert response.headers["x-badgr-provider"] == "secondary"
    assert response.headers["x-badgr-attempts"] == "2"
    assert response.json["choices"][0]["message"]["content"] == ups.secondary.reply


def test_models_and_status_and_head(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    client = make_app().test_client()
    models = client.get("/v1/models", headers=ups.auth)
    assert [m["id"] for m in models.json["data"]] == ["chat", "long"]
    assert client.get("/v1/models/chat", headers=ups.auth).json["id"] == "chat"
    head = client.head("/v1/models", headers=ups.auth)
    assert head.status_code == 200
    assert head.data == b""
    assert head.headers["content-length"] == str(len(models.data))
    status = client.get("/v1/status", headers=ups.auth)
    assert status.json["object"] == "badgr.status"
    assert set(status.json["providers"]) == {"primary", "secondary", "long"}


@pytest.mark.parametrize(
    ("method", "path", "body", "headers", "status", "code"),
    [
        ("POST", "/v1/chat/completions", CHAT, {}, 401, "invalid_api_key"),
        ("POST", "/v1/chat/completions", CHAT, {"authorization": "Bearer nope"}, 401,
         "invalid_api_key"),
        ("GET", "/v1/nope", None, None, 404, "unknown_url"),
        ("GET", "/v1", None, None, 404, "unknown_url"),
        ("GET", "/v1/chat/completions", None, None, 405, "method_not_allowed"),
        ("DELETE", "/v1/models", None, None, 405, "method_not_allowed"),
        ("POST", "/v1/chat/completions", {"model": "nope", "messages": MESSAGES}, None, 404,
         "model_not_found"),
        ("POST", "/v1/chat/completions", {"model": "chat"}, None, 400,
         "missing_required_parameter"),
    ],
)
def test_errors_are_openai_shaped(
    ups: FlaskUpstreams, make_app: AppFactory, method: str, path: str, body: Any,
    headers: dict[str, str] | None, status: int, code: str | None,
) -> None:
    response = make_app().test_client().open(
        path, method=method, json=body, headers=ups.auth if headers is None else headers
    )
    assert response.status_code == status
    assert response.mimetype == "application/json"
    error = response.json["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    assert response.headers["x-request-id"].startswith("req_")
    if status == 401:
        assert response.headers["www-authenticate"] == 'Bearer realm="badgr"'
    assert not any(p.requests for p in ups.all())


def test_invalid_json_and_wrong_content_type(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    client = make_app().test_client()
    bad = client.post("/v1/chat/completions", data=b"{nope",
                      headers={**ups.auth, "content-type": "application/json"})
    assert (bad.status_code, bad.json["error"]["code"]) == (400, "invalid_json")
    text = client.post("/v1/chat/completions", data=b"hi",
                       headers={**ups.auth, "content-type": "text/plain"})
    assert (text.status_code, text.json["error"]["code"]) == (415, "unsupported_media_type")


def test_unknown_url_names_the_script_root(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    client = make_app().test_client()
    response = client.get("/v1/nope", base_url="http://localhost/app/", headers=ups.auth)
    assert response.status_code == 404
    assert response.json["error"]["message"] == "Invalid URL (GET /app/v1/nope)"
    models = client.get("/v1/models", base_url="http://localhost/app/", headers=ups.auth)
    assert models.status_code == 200


def test_query_string_reaches_the_core(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    response = make_app().test_client().get("/v1/models?limit=1", headers=ups.auth)
    assert response.status_code == 200


def test_other_routes_are_the_apps_own(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    app = make_app()

    @app.get("/hello")
    def hello() -> str:
        return "hello"

    @app.get("/v1/custom")
    def custom() -> str:  # a more specific rule than the endpoint's catch-all wins
        return "custom"

    client = app.test_client()
    assert client.get("/hello").text == "hello"
    assert client.get("/v1/custom").text == "custom"
    assert client.get("/v2/models").status_code == 404
    assert "error" not in client.get("/v2/models").text


def test_body_over_the_limit_is_413_before_it_is_read(
    ups: FlaskUpstreams, make_app: AppFactory
) -> None:
    big = {"model": "chat", "messages": [{"role": "user", "content": "x" * 5000}]}
    response = make_app().test_client().post("/v1/chat/completions", json=big, headers=ups.auth)
    assert response.status_code == 413
    assert response.json["error"]["code"] == "request_too_large"
    assert not ups.primary.requests


def chunked_request(path: str, body: bytes, headers: dict[str, str]) -> Request:
    """A request whose environ is like gunicorn's for a chunked body: no CONTENT_LENGTH."""
    environ = EnvironBuilder(path, method="POST", input_stream=io.BytesIO(body),
                             headers=headers, content_type="application/json").get_environ()
    del environ["CONTENT_LENGTH"]
    environ["HTTP_TRANSFER_ENCODING"] = "chunked"
    environ["wsgi.input_terminated"] = True
    return Request(environ)


def test_chunked_body_is_read_and_bounded(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    client = make_app().test_client()
    small = json.dumps(CHAT).encode()
    response = client.open(chunked_request("/v1/chat/completions", small, ups.auth))
    assert response.status_code == 200, response.text
    assert ups.primary.requests[0].json["messages"] == MESSAGES

    big = json.dumps({"model": "chat", "messages": [{"role": "user", "content": "x" * 5000}]})
    response = client.open(chunked_request("/v1/chat/completions", big.encode(), ups.auth))
    assert response.status_code == 413
    assert response.json["error"]["code"] == "request_too_large"
    assert len(ups.primary.requests) == 1


def test_badgr_limit_not_the_apps_max_content_length(
    ups: FlaskUpstreams, make_app: AppFactory
) -> None:
    app = make_app(MAX_CONTENT_LENGTH=64)  # the app's own forms stay tightly bounded
    response = app.test_client().post("/v1/chat/completions", json=CHAT, headers=ups.auth)
    assert response.status_code == 200


# --------------------------------------------------------------------------- streaming


def test_stream_is_sent_unbuffered(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    client = make_app().test_client()
    response = client.post("/v1/chat/completions", json=stream_chat("long"), headers=ups.auth,
                           buffered=False)
    try:
        assert response.status_code == 200
        assert response.is_streamed
        for name, value in SSE_HEADERS.items():
            assert response.headers[name] == value
        for name in ("content-length", "connection", "transfer-encoding", "content-encoding"):
            assert name not in response.headers
        arrivals: list[float] = []
        raw = b""
        for chunk in response.response:
            arrivals.append(time.monotonic())
            raw += chunk
    finally:
        response.close()
    assert sse_text(raw) == ups.long.reply
    assert raw.endswith(b"data: [DONE]\n\n")
    # 30 events 0.05 s apart: a buffered body would arrive all at once, after the last one
    received_at = ups.long.requests[0].received_at
    assert arrivals[0] < received_at + 29 * 0.05
    assert arrivals[-1] - arrivals[0] > 29 * 0.05 / 2


def test_buffered_stream_through_the_test_client(
    ups: FlaskUpstreams, make_app: AppFactory
) -> None:
    response = make_app().test_client().post("/v1/chat/completions", json=stream_chat(),
                                             headers=ups.auth)
    assert response.status_code == 200
    assert sse_text(response.data) == ups.primary.reply


@pytest.fixture
def recorded(make_app: AppFactory) -> Iterator[tuple[Flask, list[tuple[str, Any, Any]]]]:
    """An app and the (signal name, sender, event) of every signal it sent."""
    app = make_app()
    seen: list[tuple[str, Any, Any]] = []
    receivers = {}
    for name in ("request_started", "failover", "request_finished", "request_failed"):
        def receive(sender: Any, event: Any, _name: str = name) -> None:
            seen.append((_name, sender, event))

        receivers[name] = receive
        getattr(signals, name).connect(receive, sender=app)
    try:
        yield app, seen
    finally:
        for name, receive in receivers.items():
            getattr(signals, name).disconnect(receive, sender=app)


def test_client_closing_a_stream_closes_the_upstream(
    ups: FlaskUpstreams, recorded: tuple[Flask, list[tuple[str, Any, Any]]]
) -> None:
    app, seen = recorded
    response = app.test_client().post("/v1/chat/completions", json=stream_chat("long"),
                                      headers=ups.auth, buffered=False)
    first = next(iter(response.response))
    assert first.startswith(b"data: ")
    response.close()  # what a WSGI server does when the client goes away
    assert ups.long.wait_for_disconnect(2.0)
    failed = [event for name, _, event in seen if name == "request_failed"]
    assert [(e.status, e.error_kind) for e in failed] == [(499, "client_disconnected")]
    assert "request_finished" not in [name for name, _, _ in seen]


def test_closing_a_stream_before_its_first_chunk_closes_the_upstream(
    ups: FlaskUpstreams, make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    engine = Badgr.engine_for(app)
    streams: list[Any] = []  # held, so garbage collection cannot be what closes them

    def handle(request: Any) -> Any:
        response = Engine.handle(engine, request)
        streams.append(response.stream)
        return response

    monkeypatch.setattr(engine, "handle", handle)
    environ = EnvironBuilder("/v1/chat/completions", method="POST", json=stream_chat("long"),
                             headers=ups.auth).get_environ()
    started: list[str] = []
    app_iter = app(environ, lambda status, headers, exc_info=None: started.append(status))
    assert started == ["200 OK"]
    app_iter.close()  # a server that never iterated: close() alone must stop the upstream
    assert ups.long.wait_for_disconnect(2.0)
    assert len(streams) == 1


# --------------------------------------------------------------------------- signals


def test_signals_carry_the_app_and_only_its_own_events(
    ups: FlaskUpstreams, make_app: AppFactory,
    recorded: tuple[Flask, list[tuple[str, Any, Any]]],
) -> None:
    app, seen = recorded
    other = make_app()
    ups.primary.fail_next("503")
    other.test_client().post("/v1/chat/completions", json=CHAT, headers=ups.auth)
    assert seen == []  # the other app's events went to receivers of the other app
    ups.primary.fail_next("503")
    response = app.test_client().post("/v1/chat/completions", json=CHAT,
                                      headers={**ups.auth, "x-request-id": "req_flask_sig"})
    assert response.status_code == 200
    assert [name for name, _, _ in seen] == ["request_started", "failover", "request_finished"]
    assert all(sender is app for _, sender, _ in seen)
    failover = seen[1][2]
    assert isinstance(failover, signals.Failover)
    assert (failover.request_id, failover.from_provider, failover.to_provider) == (
        "req_flask_sig", "primary", "secondary",
    )


def test_stream_end_signals_run_in_the_request_context(
    ups: FlaskUpstreams, recorded: tuple[Flask, list[tuple[str, Any, Any]]]
) -> None:
    app, _ = recorded
    contexts: list[tuple[bool, str]] = []

    def finished(sender: Flask, event: signals.RequestFinished) -> None:
        contexts.append((flask.has_request_context(), flask.request.path))

    with signals.request_finished.connected_to(finished, sender=app):
        response = app.test_client().post("/v1/chat/completions", json=stream_chat(),
                                          headers=ups.auth)
        assert sse_text(response.data) == ups.primary.reply
    # a receiver can bill the logged-in user of a stream, as of a plain request
    assert contexts == [(True, "/v1/chat/completions")]


# --------------------------------------------------------------------------- inbound auth


def test_authenticate_callable_gets_the_flask_request(
    ups: FlaskUpstreams, make_app: AppFactory
) -> None:
    badgr = Badgr()
    seen: list[Any] = []

    @badgr.authenticate
    def by_app_key(request: flask.Request) -> str | None:
        seen.append(request)
        return {"alice-app-key": "alice"}.get(request.headers.get("x-app-key", ""))

    assert badgr.authenticate_callable is by_app_key
    # no client_keys, no allow_anonymous: only the callable can let a request in
    app = make_app(badgr, config=ups.config(client_keys=[]))
    client = app.test_client()
    allowed = client.post("/v1/chat/completions", json=CHAT, headers={"x-app-key": "alice-app-key"})
    assert allowed.status_code == 200
    assert isinstance(seen[0], flask.Request)
    assert type(seen[0]) is app.request_class  # the object itself, not a proxy
    refused = client.post("/v1/chat/completions", json=CHAT, headers={"x-app-key": "mallory"})
    assert refused.status_code == 401
    assert refused.json["error"]["code"] == "invalid_api_key"
    assert len(ups.primary.requests) == 1


def test_authenticate_returning_none_falls_back_to_client_keys(
    ups: FlaskUpstreams, make_app: AppFactory
) -> None:
    badgr = Badgr()
    badgr.authenticate(lambda request: None)
    client = make_app(badgr).test_client()
    assert client.post("/v1/chat/completions", json=CHAT, headers=ups.auth).status_code == 200
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 401


def test_authenticate_with_the_session(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    badgr = Badgr()

    @badgr.authenticate
    def logged_in(request: flask.Request) -> Any:
        return flask.session.get("user")  # what flask-login's current_user does, in short

    app = make_app(badgr, config=ups.config(client_keys=[]), SECRET_KEY="test-secret")

    @app.post("/login")
    def login() -> str:
        flask.session["user"] = "alice"
        return "ok"

    client = app.test_client()
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 401
    client.post("/login")
    assert client.post("/v1/chat/completions", json=CHAT).status_code == 200


def test_authenticate_may_abort(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    badgr = Badgr()

    @badgr.authenticate
    def suspended(request: flask.Request) -> Any:
        abort(403)

    response = make_app(badgr).test_client().post("/v1/chat/completions", json=CHAT,
                                                  headers=ups.auth)
    assert response.status_code == 403
    assert not ups.primary.requests


def test_authenticate_may_read_the_body(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    badgr = Badgr()

    @badgr.authenticate
    def by_user_field(request: flask.Request) -> Any:
        return (request.get_json(silent=True) or {}).get("user")

    client = make_app(badgr, config=ups.config(client_keys=[])).test_client()
    response = client.post("/v1/chat/completions", json={**CHAT, "user": "alice"})
    assert response.status_code == 200
    assert ups.primary.requests[0].json["messages"] == MESSAGES


# --------------------------------------------------------------------------- Flask-WTF


@pytest.mark.parametrize("csrf_first", [True, False], ids=["csrf-first", "badgr-first"])
def test_endpoint_is_exempt_from_flask_wtf_csrf(
    ups: FlaskUpstreams, make_app: AppFactory, csrf_first: bool
) -> None:
    csrf_module = pytest.importorskip("flask_wtf.csrf")
    app = Flask(f"csrf_{csrf_first}")
    app.config.update(BADGR=ups.config(), SECRET_KEY="test-secret")
    csrf = csrf_module.CSRFProtect()
    if csrf_first:
        csrf.init_app(app)
    Badgr(app)
    if not csrf_first:
        csrf.init_app(app)
    try:

        @app.post("/form")
        def form() -> str:
            return "posted"

        client = app.test_client()
        assert client.post("/form").status_code == 400  # the app's own views stay protected
        response = client.post("/v1/chat/completions", json=CHAT, headers=ups.auth)
        assert response.status_code == 200, response.text
    finally:
        Badgr.engine_for(app).close()


# --------------------------------------------------------------------------- CLI


def test_cli_check(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    result = make_app().test_cli_runner().invoke(args=["badgr", "check"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Endpoint prefix: /v1"
    assert any(line.startswith("  primary ") and line.endswith("key ****cdef") for line in lines)
    assert "  chat -> primary/sim-small > secondary/sim-small" in lines
    assert "Inbound auth: 1 client key(s)" in lines
    assert lines[-1] == "Config OK."
    assert ups.upstream_key not in result.output


def test_cli_check_names_the_authenticate_callable(
    ups: FlaskUpstreams, make_app: AppFactory
) -> None:
    badgr = Badgr()
    badgr.authenticate(lambda request: None)
    keyless = make_app(badgr, config=ups.config(client_keys=[]))
    output = keyless.test_cli_runner().invoke(args=["badgr", "check"]).output
    assert "no_inbound_auth" not in output and "warning" not in output
    assert "Inbound auth: Flask @badgr.authenticate\n" in output
    both = make_app(badgr).test_cli_runner().invoke(args=["badgr", "check"]).output
    assert "Inbound auth: Flask @badgr.authenticate, then 1 client key(s)\n" in both
    closed = make_app(config=ups.config(client_keys=[])).test_cli_runner()
    output = closed.invoke(args=["badgr", "check"]).output
    assert output.startswith("warning: client_keys: ")
    assert "Inbound auth: closed (every request gets 401)" in output


def test_cli_status_of_the_local_engine(ups: FlaskUpstreams, make_app: AppFactory) -> None:
    app = make_app()
    ups.primary.fail_next("429:retry-after=30")
    served = app.test_client().post("/v1/chat/completions", json=CHAT, headers=ups.auth)
    assert served.headers["x-badgr-provider"] == "secondary"
    result = app.test_cli_runner().invoke(args=["badgr", "status"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("(this process's own health state")
    assert lines[1].startswith("provider / model")
    row = next(line for line in lines if line.startswith("  sim-small") and "cooling_down" in line)
    assert "rate_limited" in row


def test_cli_status_of_an_unreachable_url(make_app: AppFactory) -> None:
    from badgr_middleware.simulator import closed_port

    url = f"http://127.0.0.1:{closed_port()}/v1"
    result = make_app().test_cli_runner().invoke(args=["badgr", "status", "--url", url])
    assert result.exit_code == 1
    assert f"Error: could not read {url}/status" in result.output
