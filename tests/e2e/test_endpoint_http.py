"""The HTTP surface of BadgrApp and BadgrMiddleware: auth, validation, routing, headers."""

from __future__ import annotations

import gc
import json
import warnings
from typing import Any

import httpx
import openai
import pytest

from badgr_middleware import BadgrMiddleware
from badgr_middleware.simulator import SimulatedServer

CLIENT_KEY = "test-client-key"
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
MESSAGES = [{"role": "user", "content": "Say hello please"}]
CHAT_BODY = {"model": "ab", "messages": MESSAGES}
ERROR_KEYS = {"message", "type", "param", "code"}


def openai_error(response: httpx.Response, status: int, code: str | None) -> dict[str, Any]:
    """Assert an OpenAI-shaped JSON error and return its ``error`` object."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    body = response.json()
    assert set(body) == {"error"}
    assert set(body["error"]) == ERROR_KEYS
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    assert body["error"]["code"] == code
    return body["error"]


@pytest.fixture
def http(gateway):
    with gateway.http() as client:
        yield client


# -- inbound auth ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"authorization": "Bearer wrong-key"}, {"authorization": CLIENT_KEY},
     {"authorization": f"Basic {CLIENT_KEY}"}],
    ids=["none", "wrong", "no-scheme", "basic"],
)
def test_missing_or_wrong_client_key_is_401(http, sims, headers: dict[str, str]) -> None:
    response = http.post("/v1/chat/completions", json=CHAT_BODY, headers=headers)
    error = openai_error(response, 401, "invalid_api_key")
    assert error["type"] == "invalid_request_error"
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "x-request-id" in response.headers
    assert sims.a.requests == []


def test_client_key_is_checked_on_every_route(http) -> None:
    openai_error(http.get("/v1/models"), 401, "invalid_api_key")
    openai_error(http.post("/v1/embeddings", json={"model": "ab", "input": "x"}), 401,
                 "invalid_api_key")


def test_sdk_with_a_wrong_key_gets_authentication_error(gateway) -> None:
    with gateway.client(api_key="not-the-key", max_retries=2) as client:
        reply = gateway.chat("ab", client=client)
    assert reply.status == 401
    assert isinstance(reply.error, openai.AuthenticationError)


def test_bearer_scheme_is_case_insensitive(http) -> None:
    response = http.post("/v1/chat/completions", json=CHAT_BODY,
                         headers={"authorization": f"bearer {CLIENT_KEY}"})
    assert response.status_code == 200


def test_allow_anonymous(make_gateway, sims) -> None:
    gateway = make_gateway(client_keys=None, allow_anonymous=True)
    with gateway.http() as http:
        response = http.post("/v1/chat/completions", json=CHAT_BODY)
    assert response.status_code == 200
    assert response.json()["choices"][0]["message"]["content"] == "Hello from a."


def test_inbound_credentials_and_headers_are_not_forwarded(
    http, sims, upstream_keys
) -> None:
    headers = {
        **AUTH,
        "cookie": "sessionid=s3cr3t-session; csrftoken=t0k3n",
        "x-custom-header": "from-the-client",
        "user-agent": "e2e-client/1.0",
        "openai-organization": "org-client",
    }
    response = http.post("/v1/chat/completions", json=CHAT_BODY, headers=headers)
    assert response.status_code == 200
    (seen,) = sims.a.requests
    assert seen.headers["authorization"] == f"Bearer {upstream_keys['a']}"
    for name in ("cookie", "x-custom-header", "openai-organization"):
        assert name not in seen.headers
    values = " ".join(seen.headers.values())
    for secret in (CLIENT_KEY, "s3cr3t-session", "from-the-client", "e2e-client"):
        assert secret not in values


def test_sdk_headers_are_not_forwarded(gateway, sims, upstream_keys) -> None:
    reply = gateway.chat("ab", extra_headers={"x-custom-header": "from-the-sdk"})
    assert reply.status == 200
    (seen,) = sims.a.requests
    assert seen.headers["authorization"] == f"Bearer {upstream_keys['a']}"
    assert not [name for name in seen.headers if name.startswith(("x-stainless", "x-custom"))]


# -- routing and validation --------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/v1/nope", "/v1/chat", "/nope", "/", "/v10/models"])
def test_unknown_route_is_404(http, sims, path: str) -> None:
    response = http.post(path, json=CHAT_BODY, headers=AUTH)
    openai_error(response, 404, "unknown_url")
    assert sims.a.requests == []


def test_unknown_route_message_names_the_requested_url(http) -> None:
    response = http.post("/v1/nope", json=CHAT_BODY, headers=AUTH)
    error = openai_error(response, 404, "unknown_url")
    assert error["message"] == "Invalid URL (POST /v1/nope)"


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [("GET", "/v1/chat/completions", "POST"), ("PUT", "/v1/embeddings", "POST"),
     ("POST", "/v1/models", "GET"), ("DELETE", "/v1/models/ab", "GET")],
)
def test_wrong_method_is_405(http, method: str, path: str, allow: str) -> None:
    response = http.request(method, path, headers=AUTH)
    openai_error(response, 405, "method_not_allowed")
    assert response.headers["allow"] == allow


@pytest.mark.parametrize(
    ("content", "code"),
    [(b"{not json", "invalid_json"), (b"[1, 2]", "invalid_json"), (b"", "invalid_json"),
     (b"\xff\xfe{}", "invalid_encoding")],
    ids=["syntax", "array", "empty", "not-utf8"],
)
def test_invalid_body_is_400(http, sims, content: bytes, code: str) -> None:
    response = http.post("/v1/chat/completions", content=content,
                         headers={**AUTH, "content-type": "application/json"})
    openai_error(response, 400, code)
    assert sims.a.requests == []


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [({"messages": MESSAGES}, "model", "missing_required_parameter"),
     ({"model": "", "messages": MESSAGES}, "model", "invalid_type"),
     ({"model": "ab"}, "messages", "missing_required_parameter"),
     ({"model": "ab", "messages": []}, "messages", "invalid_value"),
     ({"model": "ab", "messages": MESSAGES, "temperature": 3}, "temperature", "invalid_value"),
     ({"model": "ab", "messages": MESSAGES, "route": "cheapest"}, "route", "invalid_value")],
    ids=["no-model", "empty-model", "no-messages", "empty-messages", "temperature", "route"],
)
def test_invalid_request_is_400(http, sims, body: dict[str, Any], param: str,
                                code: str) -> None:
    response = http.post("/v1/chat/completions", json=body, headers=AUTH)
    error = openai_error(response, 400, code)
    assert error["param"] == param
    assert sims.a.requests == []


def test_unknown_model_is_404_model_not_found(gateway, sims, recorder) -> None:
    reply = gateway.chat("no-such-model")
    assert reply.status == 404
    assert isinstance(reply.error, openai.NotFoundError)
    assert reply.error.code == "model_not_found"
    assert reply.error.param == "model"
    assert "no-such-model" in reply.error.message
    assert recorder.names() == []  # rejected before routing: no request_started


def test_wrong_content_type_is_415(http, sims) -> None:
    response = http.post("/v1/chat/completions", content=json.dumps(CHAT_BODY),
                         headers={**AUTH, "content-type": "text/plain"})
    openai_error(response, 415, "unsupported_media_type")
    assert sims.a.requests == []


# -- body size limit ---------------------------------------------------------------------------

LIMIT = 2048


def body_of_size(size: int) -> bytes:
    """A valid chat request of exactly ``size`` bytes."""
    base = json.dumps({"model": "ab", "messages": [{"role": "user", "content": ""}]})
    padded = {"model": "ab", "messages": [{"role": "user", "content": "x" * (size - len(base))}]}
    data = json.dumps(padded).encode()
    assert len(data) == size
    return data


@pytest.fixture
def small_gateway(make_gateway):
    return make_gateway(max_body_bytes=LIMIT)


def test_body_over_max_body_bytes_is_413(small_gateway, sims) -> None:
    with small_gateway.http(headers=AUTH) as http:
        at_limit = http.post("/v1/chat/completions", content=body_of_size(LIMIT),
                             headers={"content-type": "application/json"})
        over = http.post("/v1/chat/completions", content=body_of_size(LIMIT + 1),
                         headers={"content-type": "application/json"})
    assert at_limit.status_code == 200
    openai_error(over, 413, "request_too_large")
    assert len(sims.a.requests) == 1


def test_chunked_body_over_max_body_bytes_is_413(small_gateway, sims) -> None:
    def pieces():  # no content-length: the limit must hold while the body is read
        data = body_of_size(4 * LIMIT)
        for start in range(0, len(data), 512):
            yield data[start : start + 512]

    with small_gateway.http(headers=AUTH) as http:
        response = http.post("/v1/chat/completions", content=pieces(),
                             headers={"content-type": "application/json"})
    assert response.request.headers["transfer-encoding"] == "chunked"
    openai_error(response, 413, "request_too_large")
    assert sims.a.requests == []


def test_sdk_body_over_the_limit_is_a_413_api_error(small_gateway) -> None:
    reply = small_gateway.chat("ab", messages=[{"role": "user", "content": "x" * 3 * LIMIT}])
    assert reply.status == 413
    assert isinstance(reply.error, openai.APIStatusError)
    assert reply.error.code == "request_too_large"


# -- models ------------------------------------------------------------------------------------


def test_models_lists_aliases(gateway) -> None:
    with gateway.client() as client:
        models = client.models.list()
        ids = [model.id for model in models.data]
        assert {"ab", "a2b", "solo", "ctx", "slow"} <= set(ids)
        assert all(model.owned_by == "badgr" for model in models.data)
        assert client.models.retrieve("ab").id == "ab"
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("no-such-model")


def test_head_answers_headers_without_a_body(http) -> None:
    get = http.get("/v1/models", headers=AUTH)
    head = http.head("/v1/models", headers=AUTH)
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(get.content)) != "0"


def test_models_lists_declared_provider_models(make_gateway, config_for) -> None:
    config = config_for()
    config["providers"]["b"]["models"] = ["m-b", "m-b-large"]
    gateway = make_gateway(config)
    with gateway.http(headers=AUTH) as http:
        response = http.get("/v1/models")
    assert response.status_code == 200
    listing = response.json()
    assert listing["object"] == "list"
    owners = {entry["id"]: entry["owned_by"] for entry in listing["data"]}
    assert owners["b/m-b"] == owners["b/m-b-large"] == "b"
    assert owners["ab"] == "badgr"


# -- request ids -------------------------------------------------------------------------------


def test_valid_request_id_is_echoed_and_used_in_signals(gateway, recorder) -> None:
    reply = gateway.chat("ab", extra_headers={"x-request-id": "client-req.42:abc_DEF-9"})
    assert reply.headers["x-request-id"] == "client-req.42:abc_DEF-9"
    assert recorder.wait_for_end("client-req.42:abc_DEF-9").name == "request_finished"


@pytest.mark.parametrize("given", ["has space", "x" * 129, "semi;colon", ""])
def test_invalid_request_id_is_replaced(http, given: str) -> None:
    response = http.post("/v1/chat/completions", json=CHAT_BODY,
                         headers={**AUTH, "x-request-id": given})
    assert response.status_code == 200
    assert response.headers["x-request-id"] != given
    assert response.headers["x-request-id"].startswith("req_")


def test_error_responses_carry_the_request_id(http) -> None:
    response = http.post("/v1/chat/completions", json={"model": "nope", "messages": MESSAGES},
                         headers={**AUTH, "x-request-id": "err-1"})
    assert response.status_code == 404
    assert response.headers["x-request-id"] == "err-1"


# -- BadgrMiddleware around an app -------------------------------------------------------------


class TinyApp:
    """A minimal ASGI app that answers every HTTP request and records its lifespan."""

    def __init__(self) -> None:
        self.lifespan: list[str] = []
        self.paths: list[str] = []
        self.on_shutdown: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                self.lifespan.append(message["type"])
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                else:
                    if self.on_shutdown is not None:
                        await self.on_shutdown()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"tiny app"})


def test_middleware_serves_v1_and_passes_everything_else(config_for, sims) -> None:
    app = TinyApp()
    middleware = BadgrMiddleware(app, config_for())
    # until BadgrMiddleware closes its own upstream sessions, the app's shutdown does it
    app.on_shutdown = middleware.engine.aclose
    with SimulatedServer(middleware) as server, httpx.Client(base_url=server.url) as http:
        assert app.lifespan == ["lifespan.startup"]
        for path in ("/", "/hello", "/v1x/chat/completions", "/api/v1/models"):
            response = http.get(path)
            assert (response.status_code, response.text) == (200, "tiny app")
        with openai.OpenAI(base_url=server.base_url, api_key=CLIENT_KEY,
                           max_retries=0) as client:
            raw = client.chat.completions.with_raw_response.create(model="ab",
                                                                  messages=MESSAGES)
            assert raw.parse().choices[0].message.content == "Hello from a."
            assert raw.headers["x-badgr-provider"] == "a"
            assert "ab" in [model.id for model in client.models.list().data]
        openai_error(http.get("/v1/models"), 401, "invalid_api_key")
        openai_error(http.get("/v1/nope", headers=AUTH), 404, "unknown_url")
    assert app.paths == ["/", "/hello", "/v1x/chat/completions", "/api/v1/models"]
    assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]


def test_middleware_closes_its_upstream_connections_on_shutdown(config_for, sims) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        app = TinyApp()
        middleware = BadgrMiddleware(app, config_for())
        with SimulatedServer(middleware) as server, httpx.Client(base_url=server.url) as http:
            response = http.post("/v1/chat/completions", json=CHAT_BODY, headers=AUTH)
            assert response.status_code == 200
        assert app.lifespan == ["lifespan.startup", "lifespan.shutdown"]
        del middleware, server, app
        gc.collect()
    leaks = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert leaks == []
