"""BadgrWSGIApp and BadgrWSGIMiddleware driven directly with hand-built environs.

Every call goes through ``wsgiref.validate.validator``, which checks both sides of PEP 3333:
the status line, header types, that the body is bytes and that the server's ``close()`` is
honoured. Its warnings are errors here (``filterwarnings = error``).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from wsgiref.util import setup_testing_defaults
from wsgiref.validate import validator

import pytest

from badgr_middleware import signals
from badgr_middleware.http.wsgi import BadgrWSGIApp, BadgrWSGIMiddleware

if TYPE_CHECKING:
    from conftest import Upstreams

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
CHAT = "/v1/chat/completions"
MESSAGES = [{"role": "user", "content": "Say hello"}]


class RecordingInput:
    """A ``wsgi.input`` that records every read, to prove what the app did (not) read."""

    def __init__(self, data: bytes) -> None:
        self._data = io.BytesIO(data)
        self.reads: list[int] = []
        self.bytes_read = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._data.read(size)
        self.reads.append(size)
        self.bytes_read += len(chunk)
        return chunk

    def readline(self, size: int = -1) -> bytes:
        chunk = self._data.readline(size)
        self.reads.append(size)
        self.bytes_read += len(chunk)
        return chunk

    def readlines(self, hint: int = -1) -> list[bytes]:
        return [self.readline()]

    def __iter__(self) -> Iterator[bytes]:
        return iter(self.readline, b"")


def make_environ(
    method: str = "POST",
    path: str = CHAT,
    body: bytes | dict[str, Any] | None = None,
    *,
    headers: dict[str, str] | None = None,
    content_length: bool = True,
    content_type: str = "application/json",
    script_name: str = "",
) -> dict[str, Any]:
    """An environ as a WSGI server builds it: HTTP_* headers, CONTENT_* without the prefix."""
    raw = json.dumps(body).encode() if isinstance(body, dict) else (body or b"")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": method,
        "SCRIPT_NAME": script_name,
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "wsgi.input": RecordingInput(raw),
    }
    if method == "POST":
        environ["CONTENT_TYPE"] = content_type
        if content_length:
            environ["CONTENT_LENGTH"] = str(len(raw))
    for name, value in (headers or {}).items():
        environ["HTTP_" + name.upper().replace("-", "_")] = value
    setup_testing_defaults(environ)
    return environ


def authorized(key: str, **more: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}", **more}


def chat(model: str = "solo", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": MESSAGES, **extra}


@dataclass
class Started:
    """What the app passed to start_response, and the body iterable it returned."""

    status: str = ""
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: Iterable[bytes] = ()

    @property
    def code(self) -> int:
        return int(self.status.split(" ", 1)[0])

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name]
        assert len(values) <= 1, f"{name} sent {len(values)} times"
        return values[0] if values else None


def start(app: WSGIApp, environ: dict[str, Any]) -> Started:
    """Call the (validated) app; the caller must close ``body``."""
    started = Started()

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.status, started.headers = status, headers
        return lambda data: pytest.fail("the app used the legacy write() callable")

    started.body = validator(app)(environ, start_response)
    return started


@dataclass
class Answer(Started):
    content: bytes = b""

    def json(self) -> Any:
        return json.loads(self.content)


def call(app: WSGIApp, environ: dict[str, Any]) -> Answer:
    """Call the app, read the whole body and close it, as a WSGI server does."""
    started = start(app, environ)
    try:
        content = b"".join(started.body)
    finally:
        started.body.close()  # type: ignore[attr-defined]
    return Answer(started.status, started.headers, started.body, content)


def assert_openai_error(answer: Answer, status: int, code: str) -> dict[str, Any]:
    assert answer.code == status, answer.content
    assert answer.header("content-type") == "application/json"
    assert answer.header("content-length") == str(len(answer.content))
    error = answer.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] == code
    return dict(error)


def sse_events(content: bytes) -> list[str]:
    return [e.removeprefix("data: ") for e in content.decode().split("\n\n") if e]


@pytest.fixture
def close_later() -> Iterator[Callable[[Any], Any]]:
    """Register apps whose engines' upstream connection pools are closed after the test."""
    apps: list[Any] = []

    def register(app: Any) -> Any:
        apps.append(app)
        return app

    yield register
    for app in apps:
        app.engine.close()


@pytest.fixture
def app(sims: Upstreams, close_later: Callable[[Any], Any]) -> BadgrWSGIApp:
    return close_later(BadgrWSGIApp(sims.config(max_body_bytes=1024)))


@pytest.fixture
def events() -> Iterator[list[tuple[str, Any]]]:
    """Every badgr signal sent while the test runs, as (signal name, payload)."""
    seen: list[tuple[str, Any]] = []
    receivers = []
    for name in ("request_started", "attempt_failed", "failover", "request_finished",
                 "request_failed"):
        def receive(sender: object, event: Any, name: str = name) -> None:
            seen.append((name, event))

        receivers.append((getattr(signals, name), receive))
    for signal, receiver in receivers:
        signal.connect(receiver)
    try:
        yield seen
    finally:
        for signal, receiver in receivers:
            signal.disconnect(receiver)


# --------------------------------------------------------------------------- routing by path


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", "/"), ("GET", "/other"), ("POST", "/v1x/chat/completions"), ("GET", "/v2/models"),
     ("GET", "/v")],
)
def test_path_outside_the_prefix_is_an_openai_404(
    app: BadgrWSGIApp, sims: Upstreams, method: str, path: str
) -> None:
    answer = call(app, make_environ(method, path, b"{}"))
    assert answer.status == "404 Not Found"
    error = assert_openai_error(answer, 404, "unknown_url")
    assert error["message"] == f"Invalid URL ({method} {path})"
    assert error["type"] == "invalid_request_error"
    assert not sims.primary.requests


def test_unknown_path_under_the_prefix_is_an_openai_404(app: BadgrWSGIApp) -> None:
    answer = call(app, make_environ("GET", "/v1/nope"))
    error = assert_openai_error(answer, 404, "unknown_url")
    assert "/nope" in error["message"]


def test_unknown_url_message_names_the_full_path_under_script_name(app: BadgrWSGIApp) -> None:
    environ = make_environ("GET", "/v1/nope", script_name="/api")
    error = assert_openai_error(call(app, environ), 404, "unknown_url")
    assert error["message"] == "Invalid URL (GET /api/v1/nope)"


def test_outside_url_message_names_the_full_path_under_script_name(app: BadgrWSGIApp) -> None:
    environ = make_environ("GET", "/other", script_name="/api")
    error = assert_openai_error(call(app, environ), 404, "unknown_url")
    assert error["message"] == "Invalid URL (GET /api/other)"


def test_prefix_itself_and_custom_prefixes(
    sims: Upstreams, close_later: Callable[[Any], Any]
) -> None:
    key = sims.client_key
    # prefix="": another router already stripped the mount path
    mounted = close_later(BadgrWSGIApp(sims.config(), prefix=""))
    answer = call(mounted, make_environ(body=chat(), path="/chat/completions",
                                        headers=authorized(key)))
    assert answer.code == 200
    assert answer.json()["choices"][0]["message"]["content"] == sims.primary.reply

    custom = close_later(BadgrWSGIApp(sims.config(prefix="/llm")))
    assert call(custom, make_environ("GET", "/llm/models", headers=authorized(key))).code == 200
    assert call(custom, make_environ("GET", "/v1/models", headers=authorized(key))).code == 404


def test_middleware_passes_other_paths_to_the_wrapped_app(
    sims: Upstreams, close_later: Callable[[Any], Any]
) -> None:
    seen: list[dict[str, Any]] = []

    def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        seen.append(environ)
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"hello"]

    middleware = close_later(BadgrWSGIMiddleware(hello, sims.config()))
    for path in ("/", "/hello", "/v1x", "/v2/models", "/static/v1/models"):
        environ = make_environ("GET", path)
        answer = call(middleware, environ)
        assert (answer.status, answer.content) == ("200 OK", b"hello")
        assert seen[-1] is environ  # untouched, not a copy
    assert len(seen) == 5

    models = call(middleware, make_environ("GET", "/v1/models",
                                           headers=authorized(sims.client_key)))
    assert models.code == 200
    assert [m["id"] for m in models.json()["data"]] == ["chat", "solo", "slow", "long", "dead"]
    reply = call(middleware, make_environ(body=chat(), headers=authorized(sims.client_key)))
    assert reply.json()["choices"][0]["message"]["content"] == sims.primary.reply
    assert len(seen) == 5


def test_werkzeug_test_client(sims: Upstreams, close_later: Callable[[Any], Any]) -> None:
    werkzeug_test = pytest.importorskip("werkzeug.test")

    def hello(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        start_response("200 OK", [("content-type", "text/plain")])
        return [b"hello"]

    client = werkzeug_test.Client(close_later(BadgrWSGIMiddleware(hello, sims.config())))
    response = client.post(CHAT, json=chat(), headers=authorized(sims.client_key))
    assert response.status == "200 OK"
    assert response.headers["x-badgr-provider"] == "primary"
    assert response.get_json()["choices"][0]["message"]["content"] == sims.primary.reply
    assert client.get("/anything").get_data() == b"hello"


# --------------------------------------------------------------------------- request bodies


def test_body_over_the_limit_by_content_length_is_413_without_reading(
    app: BadgrWSGIApp, sims: Upstreams
) -> None:
    environ = make_environ(body=b"x" * 4096, headers=authorized(sims.client_key, **{
        "x-request-id": "req-too-large"}))
    environ["CONTENT_LENGTH"] = str(10**9)  # what the client claims is what counts
    body = environ["wsgi.input"]
    answer = call(app, environ)
    assert answer.status == f"413 {HTTPStatus(413).phrase}"
    error = assert_openai_error(answer, 413, "request_too_large")
    assert "1024" in error["message"]
    assert answer.header("x-request-id") == "req-too-large"
    assert body.reads == []
    assert not sims.primary.requests


def test_body_at_the_limit_is_read_exactly(app: BadgrWSGIApp, sims: Upstreams) -> None:
    body = json.dumps(chat()).encode()
    body += b" " * (1024 - len(body))
    environ = make_environ(body=body, headers=authorized(sims.client_key))
    recorded = environ["wsgi.input"]
    answer = call(app, environ)
    assert answer.code == 200
    assert recorded.reads == [1024]


def test_chunked_body_without_content_length(app: BadgrWSGIApp, sims: Upstreams) -> None:
    # a server that accepts Transfer-Encoding: chunked hands over the de-chunked body and
    # no CONTENT_LENGTH; the app reads until the end
    environ = make_environ(body=chat(), content_length=False,
                           headers=authorized(sims.client_key, **{"transfer-encoding": "chunked"}))
    environ["wsgi.input_terminated"] = True
    assert "CONTENT_LENGTH" not in environ
    answer = call(app, environ)
    assert answer.code == 200, answer.content
    assert answer.json()["choices"][0]["message"]["content"] == sims.primary.reply
    assert sims.primary.requests[0].json["messages"] == MESSAGES


def test_chunked_body_over_the_limit_is_413(app: BadgrWSGIApp, sims: Upstreams) -> None:
    environ = make_environ(body=b"x" * 5000, content_length=False,
                           headers=authorized(sims.client_key, **{"transfer-encoding": "chunked"}))
    body = environ["wsgi.input"]
    answer = call(app, environ)
    assert_openai_error(answer, 413, "request_too_large")
    assert body.bytes_read <= 1025  # never the whole body
    assert not sims.primary.requests


def test_no_length_and_not_chunked_reads_nothing(app: BadgrWSGIApp, sims: Upstreams) -> None:
    # without CONTENT_LENGTH or chunked framing the body has no end the app may wait for
    environ = make_environ(body=chat(), content_length=False,
                           headers=authorized(sims.client_key))
    body = environ["wsgi.input"]
    answer = call(app, environ)
    assert_openai_error(answer, 400, "invalid_json")
    assert body.reads == []


# --------------------------------------------------------------------------- headers


def test_headers_come_from_the_environ(app: BadgrWSGIApp, sims: Upstreams) -> None:
    environ = make_environ(body=chat(), headers=authorized(
        sims.client_key, **{"x-request-id": "req-from-client-42"}))
    answer = call(app, environ)
    assert answer.status == "200 OK"
    assert answer.header("x-request-id") == "req-from-client-42"
    assert answer.header("x-badgr-provider") == "primary"
    assert answer.header("x-badgr-attempts") == "1"
    # the inbound Authorization authenticated the client and was not forwarded
    upstream = sims.primary.requests[0].headers
    assert upstream["authorization"] == f"Bearer {sims.upstream_key}"

    wrong_type = make_environ(body=chat(), content_type="text/plain",
                              headers=authorized(sims.client_key))
    assert_openai_error(call(app, wrong_type), 415, "unsupported_media_type")
    assert len(sims.primary.requests) == 1


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key", "Basic abc"])
def test_missing_or_wrong_authorization_is_401(
    app: BadgrWSGIApp, sims: Upstreams, authorization: str | None
) -> None:
    headers = {"authorization": authorization} if authorization else {}
    answer = call(app, make_environ(body=chat(), headers=headers))
    assert answer.status == "401 Unauthorized"
    assert_openai_error(answer, 401, "invalid_api_key")
    assert answer.header("www-authenticate") is not None
    assert not sims.primary.requests


# --------------------------------------------------------------------------- status lines


def _fault_429(sims: Upstreams) -> None:
    sims.primary.set_fault("429")


@pytest.mark.parametrize(
    ("status_line", "model", "key_ok", "setup"),
    [
        ("200 OK", "solo", True, None),
        ("401 Unauthorized", "solo", False, None),
        ("404 Not Found", "no-such-model", True, None),
        ("429 Too Many Requests", "solo", True, _fault_429),
        ("502 Bad Gateway", "dead", True, None),
    ],
)
def test_status_lines(
    app: BadgrWSGIApp,
    sims: Upstreams,
    status_line: str,
    model: str,
    key_ok: bool,
    setup: Callable[[Upstreams], None] | None,
) -> None:
    if setup is not None:
        setup(sims)
    key = sims.client_key if key_ok else "not-the-key"
    answer = call(app, make_environ(body=chat(model), headers=authorized(key)))
    assert answer.status == status_line
    assert answer.header("content-length") == str(len(answer.content))
    assert answer.header("x-request-id")
    if answer.code != 200:
        assert set(answer.json()["error"]) == {"message", "type", "param", "code"}


def test_405_names_the_allowed_method(app: BadgrWSGIApp, sims: Upstreams) -> None:
    answer = call(app, make_environ("GET", CHAT, headers=authorized(sims.client_key)))
    assert answer.status == "405 Method Not Allowed"
    assert answer.header("allow") == "POST"


def test_head_answers_headers_without_a_body(app: BadgrWSGIApp, sims: Upstreams) -> None:
    get = call(app, make_environ("GET", "/v1/models", headers=authorized(sims.client_key)))
    head = call(app, make_environ("HEAD", "/v1/models", headers=authorized(sims.client_key)))
    assert head.status == "200 OK"
    assert head.header("content-length") == get.header("content-length")
    assert head.content == b""


# --------------------------------------------------------------------------- streams


def test_stream_is_sent_as_it_arrives(app: BadgrWSGIApp, sims: Upstreams) -> None:
    environ = make_environ(body=chat("chat", stream=True), headers=authorized(sims.client_key))
    answer = call(app, environ)
    assert answer.status == "200 OK"
    assert answer.header("content-type") == "text/event-stream; charset=utf-8"
    assert answer.header("cache-control") == "no-cache"
    assert answer.header("content-length") is None
    assert answer.header("x-badgr-provider") == "primary"
    data = sse_events(answer.content)
    assert data[-1] == "[DONE]"
    text = "".join(
        json.loads(d)["choices"][0]["delta"].get("content") or "" for d in data[:-1]
    )
    assert text == sims.primary.reply


def test_closing_the_stream_closes_the_upstream(
    app: BadgrWSGIApp, sims: Upstreams, events: list[tuple[str, Any]]
) -> None:
    environ = make_environ(body=chat("long", stream=True), headers=authorized(
        sims.client_key, **{"x-request-id": "req-closed-early"}))
    started = start(app, environ)
    try:
        assert started.code == 200
        first = next(iter(started.body))
        assert first.startswith(b"data: ")
    finally:
        started.body.close()  # type: ignore[attr-defined]  # what a server does on disconnect
    assert sims.long.wait_for_disconnect(2.0)
    assert [n for n, _ in events] == ["request_started", "request_failed"]
    failed = events[-1][1]
    assert (failed.request_id, failed.status, failed.error_kind) == (
        "req-closed-early", 499, "client_disconnected",
    )


def test_closing_an_unread_stream_closes_the_upstream(
    app: BadgrWSGIApp, sims: Upstreams, events: list[tuple[str, Any]]
) -> None:
    started = start(app, make_environ(body=chat("long", stream=True),
                                      headers=authorized(sims.client_key)))
    assert started.code == 200
    started.body.close()  # type: ignore[attr-defined]
    assert sims.long.wait_for_disconnect(2.0)
    assert events[-1][0] == "request_failed"
    assert events[-1][1].error_kind == "client_disconnected"


def test_stream_cut_upstream_ends_with_an_error_event(
    app: BadgrWSGIApp, sims: Upstreams, events: list[tuple[str, Any]]
) -> None:
    sims.primary.fail_next("cut=2")
    answer = call(app, make_environ(body=chat(stream=True), headers=authorized(sims.client_key)))
    assert answer.status == "200 OK"
    data = sse_events(answer.content)
    chunks = [json.loads(d) for d in data]
    contents = [c["choices"][0]["delta"].get("content") for c in chunks[:-1]]
    assert contents == ["", *contents[1:]] and len(contents) == 3  # role, then 2 pieces
    error = chunks[-1]["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["type"], error["code"]) == ("upstream_error", "stream_interrupted")  # §4
    assert events[-1][0] == "request_failed"
    assert events[-1][1].error_kind == "stream_broken"
