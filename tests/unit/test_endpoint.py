"""The framework-neutral endpoint: routes, inbound auth, parsing and validation, /models."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from badgr_middleware.config import Config
from badgr_middleware.errors import ApiError
from badgr_middleware.http.endpoint import Endpoint, error_response
from badgr_middleware.messages import HttpRequest
from badgr_middleware.routing.plan import Target

PROVIDERS = {
    "local": {
        "kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k",
        "models": ["llama", "qwen/qwen3"],
    },
    "other": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"},
}
MODELS = {"smart": ["local/llama", "other/big"], "embed": ["local/e5"]}


def make_endpoint(**extra: Any) -> Endpoint:
    data: dict[str, Any] = {"providers": PROVIDERS, "models": MODELS, **extra}
    return Endpoint(Config.from_dict(data))


KEYED = make_endpoint(client_keys=["ck-one", "ck-two"], max_body_bytes=1024)
OPEN = make_endpoint(allow_anonymous=True)

MESSAGES = [{"role": "user", "content": "hi"}]


def request(
    method: str = "POST",
    path: str = "/chat/completions",
    body: Any = None,
    headers: dict[str, str] | None = None,
    principal: object | None = None,
) -> HttpRequest:
    if body is None:
        raw = b""
    elif isinstance(body, bytes):
        raw = body
    else:
        raw = json.dumps(body).encode()
    return HttpRequest(method, path, headers if headers is not None else {}, raw,
                       principal=principal)


def raises(call: Any, *args: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        call(*args)
    return info.value


# -- route_of ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "route"),
    [
        ("POST", "/chat/completions", "chat/completions"),
        ("POST", "/completions", "completions"),
        ("POST", "/embeddings", "embeddings"),
        ("post", "/embeddings/", "embeddings"),
        ("GET", "/models", "models"),
        ("HEAD", "/models", "models"),
        ("GET", "/status", "status"),
        ("GET", "/models/smart", "models/smart"),
        ("GET", "/models/local/qwen/qwen3", "models/local/qwen/qwen3"),
    ],
)
def test_route_of(method: str, path: str, route: str) -> None:
    assert Endpoint.route_of(request(method, path)) == route


@pytest.mark.parametrize(
    ("method", "path", "allow"),
    [
        ("GET", "/chat/completions", "POST"),
        ("PUT", "/embeddings", "POST"),
        ("DELETE", "/completions", "POST"),
        ("POST", "/models", "GET"),
        ("POST", "/status", "GET"),
        ("DELETE", "/models/smart", "GET"),
    ],
)
def test_wrong_method_is_405_with_allow(method: str, path: str, allow: str) -> None:
    error = raises(Endpoint.route_of, request(method, path))
    assert (error.status, error.code) == (405, "method_not_allowed")
    assert error.headers == [("allow", allow)]


@pytest.mark.parametrize("path", ["/", "", "/chat", "/v1/chat/completions", "/modelsx",
                                  "/chat/completions/x", "/engines"])
def test_unknown_path_is_404(path: str) -> None:
    error = raises(Endpoint.route_of, request("POST", path))
    assert (error.status, error.code) == (404, "unknown_url")
    assert path in error.message


# -- authenticate ------------------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Bearer ck-one", "Bearer ck-two", "bearer ck-one",
                                    "BEARER   ck-two  "])
def test_client_keys(header: str) -> None:
    assert KEYED.authenticate(request(headers={"authorization": header})) == "client_key"


@pytest.mark.parametrize("header", ["Bearer ck-three", "Bearer ck-one2", "Bearer CK-ONE",
                                    "Bearer ck-on"])
def test_wrong_key_is_401(header: str) -> None:
    error = raises(KEYED.authenticate, request(headers={"authorization": header}))
    assert (error.status, error.code) == (401, "invalid_api_key")
    assert error.message == "Incorrect API key provided."
    assert ("www-authenticate", 'Bearer realm="badgr"') in error.headers
    assert "ck-" not in error.message


@pytest.mark.parametrize("headers", [{}, {"authorization": ""}, {"authorization": "Bearer "},
                                     {"authorization": "Basic Y2s6b25l"},
                                     {"authorization": "ck-one"}])
def test_missing_key_is_401_saying_how_to_send_it(headers: dict[str, str]) -> None:
    error = raises(KEYED.authenticate, request(headers=headers))
    assert (error.status, error.code) == (401, "invalid_api_key")
    assert "Authorization: Bearer" in error.message


def test_a_principal_set_by_the_adapter_wins() -> None:
    user = object()
    assert KEYED.authenticate(request(principal=user)) is user
    assert KEYED.authenticate(request(principal=user,
                                      headers={"authorization": "Bearer wrong"})) is user


def test_callable_authenticate() -> None:
    seen: list[HttpRequest] = []

    def check(req: HttpRequest) -> str | None:
        seen.append(req)
        return "user-7" if req.headers.get("x-user") == "7" else None

    endpoint = make_endpoint(client_keys=["ck-one"], authenticate=check)
    first = request(headers={"x-user": "7"})
    assert endpoint.authenticate(first) == "user-7"
    assert seen == [first]
    # a matching client key is enough: the callable is not asked
    assert endpoint.authenticate(request(headers={"authorization": "Bearer ck-one"})) == (
        "client_key"
    )
    assert len(seen) == 1
    # the callable answering "nobody" becomes a 401 in check_principal
    anonymous = request(headers={"authorization": "Bearer nope"})
    principal = endpoint.authenticate(anonymous)
    assert principal is None
    error = raises(endpoint.check_principal, principal, anonymous)
    assert error.status == 401
    assert error.message == "Incorrect API key provided."


def test_check_principal_accepts_a_principal() -> None:
    KEYED.check_principal("user", request())  # does not raise


def test_allow_anonymous() -> None:
    assert OPEN.authenticate(request()) == "anonymous"
    both = make_endpoint(client_keys=["ck-one"], allow_anonymous=True)
    assert both.authenticate(request(headers={"authorization": "Bearer ck-one"})) == (
        "client_key"
    )
    assert both.authenticate(request()) == "anonymous"


def test_closed_by_default() -> None:
    closed = Endpoint(Config.from_dict({"providers": PROVIDERS}))
    assert raises(closed.authenticate, request()).status == 401


# -- parse: transport-level problems ---------------------------------------------------------


def parse(body: Any, route: str = "chat/completions", endpoint: Endpoint = KEYED,
          headers: dict[str, str] | None = None) -> Any:
    return endpoint.parse(request(body=body, headers=headers), route, "req_1")


def parse_error(body: Any, route: str = "chat/completions", endpoint: Endpoint = KEYED,
                headers: dict[str, str] | None = None) -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(body, route, endpoint, headers)
    return info.value


VALID = {"model": "smart", "messages": MESSAGES}


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_non_json_content_type_is_415(content_type: str) -> None:
    error = parse_error(VALID, headers={"content-type": content_type})
    assert (error.status, error.code) == (415, "unsupported_media_type")


@pytest.mark.parametrize("content_type", ["application/json", "Application/JSON; charset=utf-8",
                                          "application/vnd.api+json"])
def test_json_content_types(content_type: str) -> None:
    assert parse(VALID, headers={"content-type": content_type}).model == "smart"


def test_missing_content_type_is_taken_as_json() -> None:
    assert parse(VALID, headers={}).model == "smart"


def test_body_over_the_limit_is_413() -> None:
    raw = json.dumps(VALID).encode()
    at_limit = raw + b" " * (1024 - len(raw))
    assert parse(at_limit).model == "smart"
    error = parse_error(at_limit + b" ")
    assert (error.status, error.code) == (413, "request_too_large")
    assert "1024" in error.message


@pytest.mark.parametrize("raw", [b"", b"{", b'{"model": "smart",}', b"nope", b"{'a': 1}",
                                 b'{"model": NaNa}'])
def test_invalid_json_is_400(raw: bytes) -> None:
    error = parse_error(raw)
    assert (error.status, error.code) == (400, "invalid_json")
    assert error.message.startswith("We could not parse the JSON body of your request.")


def test_invalid_utf8_is_400() -> None:
    error = parse_error(b'{"model": "smart", "messages": [{"role": "user", "content": "\xff"}]}')
    assert (error.status, error.code) == (400, "invalid_encoding")


@pytest.mark.parametrize("encoding", ["utf-16", "utf-32"])
def test_json_in_another_unicode_encoding_is_400(encoding: str) -> None:
    text = '{"model": "smart", "messages": [{"role": "user", "content": "hi"}]}'
    error = parse_error(text.encode(encoding))
    assert error.status == 400


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 100_000 + b"]" * 100_000,
        b'{"a":' * 100_000 + b"1" + b"}" * 100_000,
        b'{"model": "smart", "messages": [], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
    ],
    ids=["lists", "objects", "inside-a-valid-body"],
)
def test_deeply_nested_json_is_400_not_a_crash(raw: bytes) -> None:
    error = parse_error(raw, endpoint=OPEN)
    assert (error.status, error.code) == (400, "invalid_json")
    assert error.message == "The request body is nested too deeply."


@pytest.mark.parametrize("raw", [b"[]", b'"hi"', b"1", b"null", b"true", b"[{}]"])
def test_a_body_that_is_not_an_object_is_400(raw: bytes) -> None:
    error = parse_error(raw)
    assert (error.status, error.code) == (400, "invalid_json")
    assert error.message == "The request body must be a JSON object."


# -- parse: validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"messages": MESSAGES}, "model", "missing_required_parameter"),
        ({"model": "smart"}, "messages", "missing_required_parameter"),
        ({"model": "smart", "messages": None}, "messages", "missing_required_parameter"),
        ({"model": "smart", "messages": "hi"}, "messages", "invalid_type"),
        ({"model": "smart", "messages": {"role": "user"}}, "messages", "invalid_type"),
        ({"model": "smart", "messages": []}, "messages", "invalid_value"),
        ({"model": "smart", "messages": ["hi"]}, "messages[0]", "invalid_type"),
        ({"model": "smart", "messages": [*MESSAGES, {"content": "x"}]}, "messages[1].role",
         "missing_required_parameter"),
        ({"model": "smart", "messages": [{"role": 1}]}, "messages[0].role",
         "missing_required_parameter"),
        ({"model": "smart", "messages": [{"role": "robot"}]}, "messages[0].role",
         "invalid_value"),
        ({**VALID, "model": 3}, "model", "invalid_type"),
        ({**VALID, "stream": "yes"}, "stream", "invalid_type"),
        ({**VALID, "stream": 1}, "stream", "invalid_type"),
        ({**VALID, "stream_options": {"include_usage": True}}, "stream_options",
         "invalid_value"),
        ({**VALID, "stream": False, "stream_options": {"include_usage": True}},
         "stream_options", "invalid_value"),
        ({**VALID, "stream": True, "stream_options": "usage"}, "stream_options",
         "invalid_type"),
        ({**VALID, "n": 0}, "n", "invalid_value"),
        ({**VALID, "n": 129}, "n", "invalid_value"),
        ({**VALID, "n": -1}, "n", "invalid_value"),
        ({**VALID, "n": 1.5}, "n", "invalid_type"),
        ({**VALID, "n": True}, "n", "invalid_type"),
        ({**VALID, "n": "2"}, "n", "invalid_type"),
        ({**VALID, "max_tokens": -1}, "max_tokens", "invalid_value"),
        ({**VALID, "max_tokens": 0}, "max_tokens", "invalid_value"),
        ({**VALID, "max_tokens": 10.0}, "max_tokens", "invalid_type"),
        ({**VALID, "max_completion_tokens": 0}, "max_completion_tokens", "invalid_value"),
        ({**VALID, "temperature": 2.5}, "temperature", "invalid_value"),
        ({**VALID, "temperature": -0.1}, "temperature", "invalid_value"),
        ({**VALID, "temperature": "hot"}, "temperature", "invalid_type"),
        ({**VALID, "temperature": False}, "temperature", "invalid_type"),
        ({**VALID, "top_p": 1.5}, "top_p", "invalid_value"),
        ({**VALID, "route": "sort"}, "route", "invalid_value"),
        ({**VALID, "provider": {"only": "local"}}, "provider.only", "invalid_type"),
    ],
)
def test_chat_validation(body: dict[str, Any], param: str, code: str) -> None:
    error = parse_error(body)
    assert (error.status, error.param, error.code) == (400, param, code)


@pytest.mark.parametrize(
    "extra",
    [
        {"n": 1}, {"n": 128}, {"max_tokens": 1}, {"temperature": 0}, {"temperature": 2},
        {"top_p": 0.0}, {"stream": True, "stream_options": {"include_usage": True}},
        {"stream": False}, {"stream_options": None}, {"tools": [], "seed": 3},
    ],
)
def test_valid_chat_bodies(extra: dict[str, Any]) -> None:
    assert parse({**VALID, **extra}).route == "chat/completions"


def test_role_message_is_cut_short() -> None:
    error = parse_error({"model": "smart", "messages": [{"role": "x" * 1000}]})
    assert len(error.message) < 200


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "embed"}, "input", "missing_required_parameter"),
        ({"model": "embed", "input": ""}, "input", "invalid_value"),
        ({"model": "embed", "input": []}, "input", "invalid_value"),
        ({"model": "embed", "input": 5}, "input", "invalid_value"),
        ({"model": "embed", "input": {"text": "x"}}, "input", "invalid_value"),
        ({"model": "embed", "input": "x", "stream": True}, "stream", "invalid_value"),
    ],
)
def test_embeddings_validation(body: dict[str, Any], param: str, code: str) -> None:
    error = parse_error(body, route="embeddings")
    assert (error.status, error.param, error.code) == (400, param, code)


@pytest.mark.parametrize("value", ["text", ["a", "b"], [[1, 2, 3]]])
def test_valid_embeddings_input(value: Any) -> None:
    routed = parse({"model": "embed", "input": value}, route="embeddings")
    assert routed.route == "embeddings"
    assert routed.plan.targets == (Target("local", "e5"),)


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({"model": "smart"}, "prompt", "missing_required_parameter"),
        ({"model": "smart", "prompt": 5}, "prompt", "invalid_type"),
        ({"model": "smart", "prompt": {"a": 1}}, "prompt", "invalid_type"),
    ],
)
def test_completions_validation(body: dict[str, Any], param: str, code: str) -> None:
    error = parse_error(body, route="completions")
    assert (error.status, error.param, error.code) == (400, param, code)


def test_completions_do_not_need_messages() -> None:
    assert parse({"model": "smart", "prompt": "x"}, route="completions").route == "completions"


def test_unknown_model_is_404() -> None:
    error = parse_error({"model": "gpt-nope", "messages": MESSAGES})
    assert (error.status, error.param, error.code) == (404, "model", "model_not_found")


def test_parse_returns_the_routed_request() -> None:
    body = {"model": "smart", "messages": MESSAGES, "stream": True}
    routed = KEYED.parse(request(body=body), "chat/completions", "req_abc")
    assert routed.route == "chat/completions"
    assert routed.body == body
    assert routed.request_id == "req_abc"
    assert routed.stream is True
    assert routed.model == "smart"
    assert [t.key for t in routed.plan.targets] == ["local/llama", "other/big"]


def test_models_alone_names_the_request_model() -> None:
    routed = parse({"models": ["local/a", "smart"], "messages": MESSAGES})
    assert routed.model == "local/a"
    assert routed.stream is False
    assert [t.key for t in routed.plan.targets] == ["local/a", "local/llama", "other/big"]


# -- /models ---------------------------------------------------------------------------------


def test_models_listing() -> None:
    response = KEYED.models("models")
    assert response.status == 200
    assert response.header("content-type") == "application/json"
    assert json.loads(response.body) == {
        "object": "list",
        "data": [
            {"id": "smart", "object": "model", "created": 0, "owned_by": "badgr"},
            {"id": "embed", "object": "model", "created": 0, "owned_by": "badgr"},
            {"id": "local/llama", "object": "model", "created": 0, "owned_by": "local"},
            {"id": "local/qwen/qwen3", "object": "model", "created": 0, "owned_by": "local"},
        ],
    }


@pytest.mark.parametrize(("route", "owner"), [("models/smart", "badgr"),
                                              ("models/local/qwen/qwen3", "local")])
def test_one_model(route: str, owner: str) -> None:
    response = KEYED.models(route)
    entry = json.loads(response.body)
    assert entry["id"] == route.removeprefix("models/")
    assert entry["owned_by"] == owner


def test_unknown_model_entry_is_404() -> None:
    error = raises(KEYED.models, "models/nope")
    assert (error.status, error.code, error.param) == (404, "model_not_found", "model")


# -- request ids and error responses -----------------------------------------------------------


@pytest.mark.parametrize("given", ["abc", "req-1.2:3_x", "A" * 128])
def test_a_valid_request_id_is_echoed(given: str) -> None:
    assert Endpoint.request_id(request(headers={"x-request-id": given})) == given


@pytest.mark.parametrize("given", [None, "", "has space", "A" * 129, "a/b", "évian", "a\nb",
                                   "<script>"])
def test_an_invalid_request_id_is_replaced(given: str | None) -> None:
    headers = {} if given is None else {"x-request-id": given}
    rid = Endpoint.request_id(request(headers=headers))
    assert re.fullmatch(r"req_[0-9a-f]{24}", rid)


def test_generated_request_ids_differ() -> None:
    assert Endpoint.request_id(request()) != Endpoint.request_id(request())


def test_error_response() -> None:
    error = ApiError(429, "slow down", type="rate_limit_error", code="rate_limit_exceeded",
                     headers=[("retry-after", "3")])
    response = error_response(error, "req_9")
    assert response.status == 429
    assert response.headers == [("content-type", "application/json"), ("x-request-id", "req_9"),
                                ("retry-after", "3")]
    assert json.loads(response.body) == {"error": {"message": "slow down",
                                                   "type": "rate_limit_error", "param": None,
                                                   "code": "rate_limit_exceeded"}}


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain; x=json", "application/jsonx", "multipart/form-data",
    "application/x-www-form-urlencoded",
])
def test_content_types_a_browser_sends_without_preflight_are_415(content_type: str) -> None:
    body = {"model": "smart", "messages": [{"role": "user", "content": "x"}]}
    error = parse_error(body, headers={"content-type": content_type})
    assert error.status == 415


@pytest.mark.parametrize("content_type", ["application/json; charset=utf-8",
                                          "application/vnd.api+json"])
def test_json_media_types_are_accepted(content_type: str) -> None:
    body = {"model": "smart", "messages": [{"role": "user", "content": "x"}]}
    assert parse(body, headers={"content-type": content_type}).model == "smart"
