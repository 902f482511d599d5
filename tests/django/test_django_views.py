"""The view and URLconf, in process: routing, the sync and async paths, streams, middleware
(CSRF, GZip, LoginRequired, ATOMIC_REQUESTS) and OpenAI-shaped errors."""

from __future__ import annotations

import asyncio
import gzip
import json
import logging
from typing import Any

import django
import pytest
from asgiref.sync import iscoroutinefunction
from django.db import connections
from django.http import StreamingHttpResponse
from django.test import AsyncClient, Client
from django.urls import reverse
from djbadgr_support import BUFFERING_WARNING, CLIENT_KEY, MESSAGES, Upstreams, run_async

from badgr_middleware.messages import HttpResponse
from django_badgr.views import _to_django, endpoint

pytestmark = pytest.mark.usefixtures("badgr_config")

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
ERROR_FIELDS = {"message", "type", "param", "code"}


def post(client: Client, body: Any, path: str = "/v1/chat/completions", **headers: str) -> Any:
    data = body if isinstance(body, str | bytes) else json.dumps(body)
    return client.post(path, data, content_type="application/json", headers={**AUTH, **headers})


async def apost(client: AsyncClient, body: Any, path: str = "/v1/chat/completions",
                **headers: str) -> Any:
    return await client.post(path, json.dumps(body), content_type="application/json",
                             headers={**AUTH, **headers})


def assert_openai_error(response: Any, status: int, code: str | None) -> dict[str, Any]:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    error = json.loads(response.content)["error"]
    assert set(error) == ERROR_FIELDS
    assert error["code"] == code
    return error  # type: ignore[no-any-return]


def sse_text(chunks: list[bytes]) -> str:
    """The content deltas of an SSE body, concatenated."""
    text = []
    for line in b"".join(chunks).decode().splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:])["choices"]:
                text.append(choice["delta"].get("content") or "")
    return "".join(text)


# --------------------------------------------------------------------------- URLs


def test_models_under_the_include_prefix(client: Client) -> None:
    response = client.get("/v1/models", headers=AUTH)
    assert response.status_code == 200
    assert [m["id"] for m in response.json()["data"]] == ["chat", "solo", "slow"]


def test_model_ids_with_slashes_reach_the_core(settings: Any, sims: Upstreams,
                                               client: Client) -> None:
    config = sims.config()
    config["providers"]["primary"]["models"] = ["org/model-x"]
    settings.BADGR = config
    response = client.get("/v1/models/primary/org/model-x", headers=AUTH)
    assert response.status_code == 200
    assert response.json()["id"] == "primary/org/model-x"
    assert_openai_error(client.get("/v1/models/primary/none", headers=AUTH), 404,
                        "model_not_found")


def test_the_prefix_is_the_users_choice(client: Client, sims: Upstreams) -> None:
    assert reverse("badgr:endpoint", kwargs={"path": "chat/completions"}) == (
        "/v1/chat/completions"
    )
    assert reverse("team:endpoint", kwargs={"path": "models"}) == "/team/llm/models"
    response = post(client, {"model": "chat", "messages": MESSAGES},
                    path="/team/llm/chat/completions")
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == sims.primary.reply
    error = assert_openai_error(client.get("/team/llm/nope", headers=AUTH), 404, "unknown_url")
    assert error["message"] == "Invalid URL (GET /team/llm/nope)"


def test_unknown_paths_and_wrong_methods_are_the_cores_404_and_405(client: Client) -> None:
    error = assert_openai_error(client.get("/v1/nope", headers=AUTH), 404, "unknown_url")
    assert error["message"] == "Invalid URL (GET /v1/nope)"
    assert_openai_error(client.get("/v1/", headers=AUTH), 404, "unknown_url")
    response = client.get("/v1/chat/completions", headers=AUTH)
    assert_openai_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST"


# --------------------------------------------------------------------------- sync and async


def test_the_view_is_a_coroutine_function_only_inside_an_event_loop() -> None:
    assert not iscoroutinefunction(endpoint)

    async def inside() -> bool:
        return iscoroutinefunction(endpoint)

    assert run_async(inside)
    assert endpoint.csrf_exempt is True
    assert endpoint.login_required is False


def test_sync_completion(client: Client, sims: Upstreams) -> None:
    response = post(client, {"model": "chat", "messages": MESSAGES}, **{"x-request-id": "rid-1"})
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == sims.primary.reply
    assert response["x-badgr-provider"] == "primary"
    assert response["x-badgr-attempts"] == "1"
    assert response["x-request-id"] == "rid-1"


def test_async_completion(sims: Upstreams) -> None:
    async def call() -> Any:
        return await apost(AsyncClient(), {"model": "chat", "messages": MESSAGES})

    response = run_async(call)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == sims.primary.reply
    assert response["x-badgr-provider"] == "primary"


def assert_sse_headers(response: Any) -> None:
    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "text/event-stream; charset=utf-8"
    assert response["Cache-Control"] == "no-cache"
    assert response["X-Accel-Buffering"] == "no"
    assert response["Content-Encoding"] == ""  # not gzip, though the client accepts it
    assert not response.has_header("Connection")
    assert "Accept-Encoding" not in response.get("Vary", "")  # GZipMiddleware looked away


def test_sync_stream_is_a_sync_iterator(client: Client, sims: Upstreams) -> None:
    response = post(client, {"model": "chat", "messages": MESSAGES, "stream": True},
                    **{"accept-encoding": "gzip, deflate"})
    assert_sse_headers(response)
    assert response.is_async is False
    chunks = list(response.streaming_content)
    assert chunks[0].startswith(b"data: ")
    assert chunks[-1].endswith(b"data: [DONE]\n\n")
    assert sse_text(chunks) == sims.primary.reply


def test_async_stream_is_an_async_iterator(sims: Upstreams) -> None:
    async def call() -> tuple[Any, list[bytes]]:
        response = await apost(AsyncClient(), {"model": "chat", "messages": MESSAGES,
                                               "stream": True},
                               **{"accept-encoding": "gzip, deflate"})
        return response, [chunk async for chunk in response.streaming_content]

    response, chunks = run_async(call)
    assert_sse_headers(response)
    assert response.is_async is True
    assert chunks[-1].endswith(b"data: [DONE]\n\n")
    assert sse_text(chunks) == sims.primary.reply


def test_sync_stream_closed_early_closes_the_upstream(client: Client, sims: Upstreams,
                                                      django_db_blocker: Any) -> None:
    response = post(client, {"model": "slow", "messages": MESSAGES, "stream": True})
    first = next(iter(response.streaming_content))
    assert first.startswith(b"data: ")
    # what a WSGI server does when the client has gone; close() also sends Django's
    # request_finished, whose close_old_connections touches the database
    with django_db_blocker.unblock():
        response.close()
    assert sims.slow.wait_for_disconnect(3.0)


def test_async_stream_cancelled_closes_the_upstream(sims: Upstreams) -> None:
    """Django's ASGI handler cancels the task that streams when the client disconnects."""
    received: list[bytes] = []

    async def call() -> None:
        response = await apost(AsyncClient(), {"model": "slow", "messages": MESSAGES,
                                               "stream": True})
        first_chunk = asyncio.Event()

        async def consume() -> None:
            async for chunk in response.streaming_content:
                received.append(chunk)
                first_chunk.set()

        task = asyncio.ensure_future(consume())
        await asyncio.wait_for(first_chunk.wait(), 3)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    run_async(call)
    assert received[0].startswith(b"data: ")
    assert sims.slow.wait_for_disconnect(3.0)
    assert len(sims.slow.requests) == 1


def test_an_async_iterator_under_a_sync_server_would_fail_the_test() -> None:
    """The safety net: Django's buffering warning is an error in this suite."""

    async def chunks() -> Any:
        yield b"data: x\n\n"

    with pytest.raises(Warning, match=BUFFERING_WARNING):
        list(StreamingHttpResponse(chunks()))


# --------------------------------------------------------------------------- middleware


def test_csrf_exempt_with_csrf_checks_enforced(sims: Upstreams) -> None:
    response = post(Client(enforce_csrf_checks=True), {"model": "chat", "messages": MESSAGES})
    assert response.status_code == 200


@pytest.mark.skipif(django.VERSION < (5, 1), reason="LoginRequiredMiddleware is Django 5.1+")
def test_login_required_middleware_lets_bearer_clients_through(settings: Any,
                                                               client: Client) -> None:
    assert "django.contrib.auth.middleware.LoginRequiredMiddleware" in settings.MIDDLEWARE
    assert post(client, {"model": "chat", "messages": MESSAGES}).status_code == 200
    # no key: the endpoint's own 401, not a redirect to a login page
    response = client.get("/v1/models")
    assert_openai_error(response, 401, "invalid_api_key")


def test_gzip_compresses_json_but_never_event_streams(settings: Any, sims: Upstreams,
                                                      client: Client) -> None:
    config = sims.config()
    config["models"].update({f"alias-{n}": ["primary/sim-small"] for n in range(20)})
    settings.BADGR = config
    listing = client.get("/v1/models", headers={**AUTH, "accept-encoding": "gzip"})
    assert listing["Content-Encoding"] == "gzip"  # the middleware is on
    assert len(json.loads(gzip.decompress(listing.content))["data"]) == 23
    stream = post(client, {"model": "chat", "messages": MESSAGES, "stream": True},
                  **{"accept-encoding": "gzip"})
    assert stream["Content-Encoding"] == ""
    assert b"".join(stream.streaming_content).startswith(b"data: ")


def test_atomic_requests_do_not_wrap_the_view(monkeypatch: pytest.MonkeyPatch,
                                              sims: Upstreams) -> None:
    # Django refuses async views under ATOMIC_REQUESTS, and a stream outlives a transaction
    monkeypatch.setitem(connections.settings["default"], "ATOMIC_REQUESTS", True)
    assert post(Client(), {"model": "chat", "messages": MESSAGES}).status_code == 200

    async def call() -> Any:
        return await apost(AsyncClient(), {"model": "chat", "messages": MESSAGES})

    assert run_async(call).status_code == 200


def test_hop_by_hop_headers_are_dropped() -> None:
    core = HttpResponse(200, [("content-type", "application/json"), ("connection", "close"),
                              ("keep-alive", "timeout=5"), ("x-badgr-provider", "p")], b"{}")
    response = _to_django(core, asynchronous=False)
    assert not response.has_header("Connection")
    assert not response.has_header("Keep-Alive")
    assert response["x-badgr-provider"] == "p"


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ("{not json", 400, "invalid_json"),
        ({"model": "chat"}, 400, "missing_required_parameter"),
        ({"model": "nobody-has-this", "messages": MESSAGES}, 404, "model_not_found"),
        ({"model": "chat", "messages": MESSAGES, "temperature": 9}, 400, "invalid_value"),
    ],
)
def test_client_errors_are_openai_shaped(client: Client, body: Any, status: int,
                                         code: str) -> None:
    assert_openai_error(post(client, body), status, code)


def test_every_target_failing_is_a_5xx_that_says_not_to_retry(client: Client,
                                                               sims: Upstreams) -> None:
    sims.primary.set_fault("503")
    sims.backup.set_fault("503")
    response = post(client, {"model": "chat", "messages": MESSAGES})
    assert response.status_code in (502, 503)
    assert set(response.json()["error"]) == ERROR_FIELDS
    assert response["x-should-retry"] == "false"


def test_body_over_max_body_bytes_is_413(settings: Any, sims: Upstreams,
                                         client: Client) -> None:
    settings.BADGR = sims.config(max_body_bytes=2048)
    big = [{"role": "user", "content": "x" * 4096}]
    assert_openai_error(post(client, {"model": "chat", "messages": big}), 413,
                        "request_too_large")
    assert not sims.primary.requests


def test_body_over_djangos_upload_limit_is_still_served(settings: Any, client: Client,
                                                        sims: Upstreams) -> None:
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024  # request.body would refuse this request
    big = [{"role": "user", "content": "word " * 2000}]
    assert post(client, {"model": "chat", "messages": big}).status_code == 200
    assert sims.primary.requests[0].json["messages"] == big


def test_async_errors_are_openai_shaped() -> None:
    async def calls() -> list[Any]:
        client = AsyncClient()
        return [
            await client.get("/v1/models"),
            await client.get("/v1/nope", headers=AUTH),
            await apost(client, {"model": "nobody-has-this", "messages": MESSAGES}),
        ]

    missing_key, unknown_url, unknown_model = run_async(calls)
    assert_openai_error(missing_key, 401, "invalid_api_key")
    assert_openai_error(unknown_url, 404, "unknown_url")
    assert_openai_error(unknown_model, 404, "model_not_found")


def test_a_bad_badgr_setting_is_a_500_that_hides_the_details(
    settings: Any, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    settings.BADGR = {"providers": {"openai": {}}, "client_keys": [CLIENT_KEY]}
    with caplog.at_level(logging.ERROR, logger="django_badgr"):
        response = client.get("/v1/models", headers=AUTH)
    error = assert_openai_error(response, 500, "badgr_misconfigured")
    assert "api_key" not in error["message"]
    assert "providers.openai.api_key" in caplog.text  # the log says why
