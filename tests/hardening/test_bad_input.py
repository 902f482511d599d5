"""Bad input: property-based fuzzing of bodies, headers and paths, plus the classic attacks.

Properties, for every input, under ASGI and WSGI:

- the answer is a well-formed OpenAI error (``ErrorResponse``, 4xx) or a success
  (``chat.completion``); never a 5xx of badgr's own, never a traceback;
- nothing malformed reaches an upstream: whatever an upstream receives is a JSON object
  whose ``model`` is a configured upstream model and whose other fields are exactly the
  client's, minus OpenRouter's routing fields (docs/failover.md §1: "All other fields pass
  through unchanged; ``model`` is replaced with the target's upstream model"). So unknown
  fields are *passed through*, and that is the documented rule.

Hypothesis runs derandomized with a fixed number of examples, so CI sees the same inputs.
"""

from __future__ import annotations

import json
import string
from typing import Any

import httpx
import pytest
from hardening_gateways import Gateway, Upstreams
from hardening_support import (
    CLIENT_KEY,
    MESSAGES,
    assert_schema,
    exchange,
    upstream_sockets,
    wait_until,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from badgr_middleware.providers.openai import OPENROUTER_ONLY_FIELDS

EXAMPLES = 120
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow])
UPSTREAM_MODELS = {"m-primary", "m-backup", "m-x"}
TRACEBACK_MARKERS = ("Traceback", 'File "', "Error:")

json_scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(
    allow_nan=False, allow_infinity=False) | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=4),
    max_leaves=12,
)
models = st.sampled_from(["fo-primary", "solo-primary", "primary/m-x", "backup/m-x",
                          "nope", "", "primary/", "/m"]) | st.text(max_size=30)
roles = st.sampled_from(["user", "system", "assistant", "developer", "tool", "robot", ""])
messages = st.lists(
    st.fixed_dictionaries({"role": roles}, optional={"content": json_values}) | json_values,
    max_size=3,
) | json_values
known_fields = {
    "model": models,
    "messages": messages,
    "stream": st.booleans() | json_scalars,
    "n": st.integers(-5, 200) | st.just(10**30) | json_scalars,
    "max_tokens": st.integers(-(2**40), 2**40) | json_scalars,
    "max_completion_tokens": st.integers(-3, 10**6) | json_scalars,
    "temperature": st.floats(-3, 5, allow_nan=False) | json_scalars,
    "top_p": st.floats(-1, 2, allow_nan=False) | json_scalars,
    "stream_options": st.just({"include_usage": True}) | json_values,
    "models": st.lists(models, max_size=3) | json_values,
    "route": st.sampled_from(["fallback", "other"]) | json_scalars,
    "provider": st.fixed_dictionaries({}, optional={
        "order": st.lists(st.sampled_from(["primary", "backup", "x"]), max_size=3),
        "only": st.lists(st.sampled_from(["primary", "backup", "x"]), max_size=3),
        "allow_fallbacks": st.booleans(),
    }) | json_values,
    "tools": json_values,
    "transforms": json_values,
}
valid_messages = st.lists(
    st.fixed_dictionaries({"role": st.sampled_from(["user", "system", "assistant"]),
                           "content": st.text(max_size=30)}), min_size=1, max_size=3)
near_valid = st.fixed_dictionaries(
    {"model": st.sampled_from(["fo-primary", "solo-primary", "primary/m-x", "backup/m-x"]),
     "messages": valid_messages},
    optional={
        "stream": st.booleans(), "n": st.integers(-1, 3), "max_tokens": st.integers(-2, 50),
        "temperature": st.floats(-0.5, 2.5, allow_nan=False), "top_p": st.floats(0, 1.2),
        "x_unknown_field": json_values, "metadata": json_values, "user": st.text(max_size=10),
        "models": st.lists(st.sampled_from(["backup/m-x", "fo-primary", "zzz"]), max_size=2),
        "transforms": json_values,
    },
)
bodies = near_valid | st.fixed_dictionaries(
    {"model": models, "messages": messages},
    optional={**{k: v for k, v in known_fields.items() if k not in ("model", "messages")},
              "x_unknown_field": json_values, "metadata": json_values},
) | st.dictionaries(st.text(max_size=10), json_values, max_size=5) | json_values


def _check_answer(status: int, headers: httpx.Headers, body: bytes) -> None:
    text = body.decode("utf-8", "replace")
    assert status < 500 or status in (502, 503, 504), (status, text)
    for marker in TRACEBACK_MARKERS:
        assert marker not in text, text
    if headers.get("content-type", "").startswith("text/event-stream"):
        assert status == 200
        return
    data = json.loads(body)
    if status >= 400:
        assert_schema("ErrorResponse", data)
        # the gateway's own failure (a 500); checked by code, as the message may quote a path
        assert data["error"]["code"] != "internal_error", text
    elif "choices" in data:
        assert_schema("CreateChatCompletionResponse", data)
    else:
        assert_schema("ListModelsResponse", data)


def _check_upstreams(sims: Upstreams, sent: Any) -> None:
    for provider in (sims.primary, sims.backup):
        for seen in provider.requests:
            assert isinstance(seen.json, dict), seen.body[:200]
            assert seen.json["model"] in UPSTREAM_MODELS, seen.json
            expected = {k: v for k, v in sent.items()
                        if k not in OPENROUTER_ONLY_FIELDS and k != "model"}
            got = {k: v for k, v in seen.json.items() if k != "model"}
            assert got == expected
            messages_seen = seen.json["messages"]
            assert isinstance(messages_seen, list) and messages_seen
            assert all(isinstance(m, dict) and m.get("role") in
                       {"system", "developer", "user", "assistant", "tool", "function"}
                       for m in messages_seen)
            assert "authorization" in seen.headers
            assert CLIENT_KEY not in str(seen.headers)


def _gateway(kind: str, request: pytest.FixtureRequest) -> Gateway:
    gw: Gateway = request.getfixturevalue(f"{kind}_gateway")
    gw.reset_health()
    return gw


@pytest.fixture(params=["asgi", "wsgi"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.long
def test_fuzzed_json_bodies(kind: str, upstreams: Upstreams,
                            request: pytest.FixtureRequest) -> None:
    gateway = _gateway(kind, request)
    seen_statuses: dict[int, int] = {}
    with httpx.Client(timeout=10) as client:

        @FUZZ
        @given(body=bodies)
        def run(body: Any) -> None:
            upstreams.clear()
            response = client.post(
                f"{gateway.base_url}/chat/completions", content=json.dumps(body),
                headers={"authorization": f"Bearer {CLIENT_KEY}",
                         "content-type": "application/json"},
            )
            seen_statuses[response.status_code] = seen_statuses.get(response.status_code, 0) + 1
            _check_answer(response.status_code, response.headers, response.content)
            if isinstance(body, dict):
                _check_upstreams(upstreams, body)
            else:
                assert not upstreams.primary.requests and not upstreams.backup.requests

        run()
    print(f"{kind}: {sum(seen_statuses.values())} fuzzed bodies, statuses {seen_statuses}")
    # the strategies reach both sides of the validator
    assert seen_statuses.get(200, 0) > 0 and seen_statuses.get(400, 0) > 0, seen_statuses
    gateway.close_pools()
    assert wait_until(lambda: not upstream_sockets(upstreams.ports), 2.0)


header_names = st.text(string.ascii_letters + string.digits + "-_", min_size=1, max_size=20)
header_values = st.binary(max_size=40).map(
    lambda b: bytes(c for c in b if c in range(0x21, 0x7F) or c >= 0x80) or b"x")
content_types = st.sampled_from([
    "application/json", "application/json; charset=utf-8", "application/vnd.api+json",
    "text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
    "text/json", "", "application/JSON", "application/jsonx",
])


@pytest.mark.long
def test_fuzzed_headers(kind: str, upstreams: Upstreams, request: pytest.FixtureRequest) -> None:
    gateway = _gateway(kind, request)
    body = {"model": "fo-primary", "messages": MESSAGES}
    count = [0]

    with httpx.Client(timeout=10) as client:

        @FUZZ
        @given(extra=st.dictionaries(header_names, header_values, max_size=6),
               content_type=content_types, auth=st.sampled_from(["good", "bad", "none", "odd"]))
        def run(extra: dict[str, bytes], content_type: str, auth: str) -> None:
            upstreams.clear()
            count[0] += 1
            headers: dict[str, Any] = {k: v for k, v in extra.items()
                                       if k.lower() not in ("content-length", "host",
                                                            "transfer-encoding", "connection")}
            headers["content-type"] = content_type
            headers["authorization"] = {
                "good": f"Bearer {CLIENT_KEY}", "bad": "Bearer nope",
                "none": "", "odd": f"Basic {CLIENT_KEY}",
            }[auth]
            response = client.post(f"{gateway.base_url}/chat/completions",
                                   content=json.dumps(body), headers=headers)
            _check_answer(response.status_code, response.headers, response.content)
            media = content_type.split(";")[0].strip().lower()
            json_ok = media in ("application/json", "application/vnd.api+json")
            expect = 200 if auth == "good" and json_ok else None
            if auth == "good" and media == "":
                # an empty Content-Type: ASGI sees it and refuses (415); WSGI cannot tell it
                # from an absent one (PEP 3333) and reads the body as JSON (200)
                assert response.status_code in (200, 415), response.text
            elif expect:
                assert response.status_code == 200, response.text
            elif auth != "good":
                assert response.status_code == 401
            else:
                assert response.status_code == 415
            for provider in (upstreams.primary, upstreams.backup):
                for seen in provider.requests:
                    for name in headers:
                        if name.lower() not in ("content-type", "authorization"):
                            assert name.lower() not in seen.headers, name
                    assert CLIENT_KEY not in str(seen.headers)

        run()
    print(f"{kind}: {count[0]} fuzzed header sets")


segments = st.text(string.ascii_letters + string.digits + "%._~-/:@!$&'()*+,;=", max_size=25)


@pytest.mark.long
def test_fuzzed_paths_and_methods(kind: str, upstreams: Upstreams,
                                  request: pytest.FixtureRequest) -> None:
    gateway = _gateway(kind, request)
    count = [0]
    with httpx.Client(timeout=10) as client:

        @FUZZ
        @given(path=segments, method=st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH",
                                                      "OPTIONS", "HEAD"]),
               prefix=st.sampled_from(["/v1/", "/", "/v1//", "/v2/", "/v1/models/"]))
        def run(path: str, method: str, prefix: str) -> None:
            upstreams.clear()
            count[0] += 1
            url = f"{gateway.url}{prefix}{path}"
            response = client.request(method, url, content=json.dumps(
                {"model": "fo-primary", "messages": MESSAGES}), headers={
                "authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"})
            if method == "HEAD":
                assert response.status_code < 500
                return
            _check_answer(response.status_code, response.headers, response.content)
            if response.status_code != 200:
                assert not upstreams.primary.requests and not upstreams.backup.requests

        run()
    print(f"{kind}: {count[0]} fuzzed paths and methods")


# -- named attacks ------------------------------------------------------------------------------


def _post(gateway: Gateway, *, content: bytes, headers: dict[str, str] | None = None,
          path: str = "/chat/completions") -> httpx.Response:
    sent = {"authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"}
    sent.update(headers or {})
    return httpx.post(f"{gateway.base_url}{path}", content=content, headers=sent, timeout=10)


def _body(**fields: Any) -> bytes:
    return json.dumps({"model": "fo-primary", "messages": MESSAGES, **fields}).encode()


CASES: list[tuple[str, bytes, int, str]] = [
    ("invalid-utf8", b'{"model": "fo-primary", "messages": [{"role": "user", '
     b'"content": "\xff\xfe"}]}', 400, "invalid_encoding"),
    ("deep-nesting", b'{"model": "fo-primary", "messages": ' + b"[" * 100_000 + b"]" * 100_000
     + b"}", 413, "request_too_large"),
    ("deep-nesting-small", b"[" * 20_000 + b"]" * 20_000, 400, "invalid_json"),
    ("huge-n", _body(n=10**30), 400, "invalid_value"),
    ("n-129", _body(n=129), 400, "invalid_value"),
    ("negative-max-tokens", _body(max_tokens=-1), 400, "invalid_value"),
    ("zero-max-completion-tokens", _body(max_completion_tokens=0), 400, "invalid_value"),
    ("float-max-tokens", _body(max_tokens=1.5), 400, "invalid_type"),
    ("bool-n", _body(n=True), 400, "invalid_type"),
    ("temperature-nan", b'{"model": "fo-primary", "messages": [{"role": "user", "content": "x"}],'
     b' "temperature": NaN}', 400, "invalid_value"),
    ("not-an-object", b'["model"]', 400, "invalid_json"),
    ("empty-body", b"", 400, "invalid_json"),
    ("truncated-json", b'{"model": "fo-pri', 400, "invalid_json"),
    ("no-messages", json.dumps({"model": "fo-primary"}).encode(), 400,
     "missing_required_parameter"),
    ("empty-messages", _body(messages=[]), 400, "invalid_value"),
    ("bad-role", _body(messages=[{"role": "root", "content": "x"}]), 400, "invalid_value"),
    ("stream-options-without-stream", _body(stream_options={"include_usage": True}), 400,
     "invalid_value"),
    ("stream-not-bool", _body(stream="yes"), 400, "invalid_type"),
    ("unknown-model", _body(model="no-such-model"), 404, "model_not_found"),
    ("model-is-url", _body(model="http://127.0.0.1:1/v1"), 404, "model_not_found"),
    ("bad-route", _body(route="sideways"), 400, ""),
]


@pytest.mark.parametrize(("case", "content", "status", "code"), CASES,
                         ids=[c[0] for c in CASES])
def test_named_bad_inputs(case: str, content: bytes, status: int, code: str,
                          gateway: Gateway, sims: Upstreams) -> None:
    response = _post(gateway, content=content)
    assert response.status_code == status, response.text
    assert_schema("ErrorResponse", response.json())
    if code:
        assert response.json()["error"]["code"] == code, response.text
    assert not sims.primary.requests and not sims.backup.requests


def test_oversized_bodies_are_refused(gateway: Gateway, sims: Upstreams) -> None:
    limit = 65536  # max_body_bytes in conftest
    big = _body(padding="x" * limit)
    response = _post(gateway, content=big)
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"

    def chunks() -> Any:
        for i in range(0, len(big), 4096):
            yield big[i:i + 4096]

    # without a content-length (chunked): the limit is still enforced while reading
    response = httpx.post(f"{gateway.base_url}/chat/completions", content=chunks(), headers={
        "authorization": f"Bearer {CLIENT_KEY}", "content-type": "application/json"},
        timeout=10)
    assert response.status_code == 413, response.text
    # a body just under the limit goes through
    fits = _body(padding="x" * (limit - len(_body(padding="")) - 10))
    assert len(fits) <= limit
    assert _post(gateway, content=fits).status_code == 200
    assert len(sims.primary.requests) == 1


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x", "text/json"])
def test_wrong_content_types_are_refused(content_type: str, gateway: Gateway,
                                         sims: Upstreams) -> None:
    response = _post(gateway, content=_body(), headers={"content-type": content_type})
    assert response.status_code == 415
    assert_schema("ErrorResponse", response.json())
    assert not sims.primary.requests


def test_unknown_fields_pass_through_unchanged(gateway: Gateway, sims: Upstreams) -> None:
    extra = {"x_custom": {"nested": [1, 2, {"a": None}]}, "seed": 7, "logit_bias": {"50256": -100},
             "transforms": ["middle-out"], "models": ["backup/m-x"], "provider": {"order": []}}
    reply = exchange(f"{gateway.base_url}/chat/completions",
                     {"model": "solo-primary", "messages": MESSAGES, **extra})
    assert reply.status == 200
    assert_schema("CreateChatCompletionResponse", reply.json)
    (seen,) = sims.primary.requests
    assert seen.json["x_custom"] == extra["x_custom"]
    assert seen.json["seed"] == 7 and seen.json["logit_bias"] == {"50256": -100}
    # OpenRouter's fields never reach a non-OpenRouter upstream
    for name in ("transforms", "models", "provider", "route"):
        assert name not in seen.json


def test_models_list_matches_the_schema(gateway: Gateway) -> None:
    response = httpx.get(f"{gateway.base_url}/models", timeout=10,
                         headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert response.status_code == 200
    assert_schema("ListModelsResponse", response.json())
    ids = {m["id"] for m in response.json()["data"]}
    assert "fo-primary" in ids
