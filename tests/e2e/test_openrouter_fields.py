"""OpenRouter's request fields through the SDK's ``extra_body`` (docs/failover.md §1)."""

from __future__ import annotations

from typing import Any

import pytest

CLIENT_KEY = "test-client-key"
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}
MESSAGES = [{"role": "user", "content": "Say hello please"}]
OPENROUTER_ONLY = {
    "transforms": ["middle-out"],
    "plugins": [{"id": "web"}],
    "usage": {"include": True},
    "session_id": "session-123",
    "debug": {"echo_upstream_body": False},
}
BADGR_ONLY = ("models", "route", "provider")


def targets_of(recorder: Any, reply: Any) -> tuple[str, ...]:
    (started,) = recorder.events("request_started", reply.request_id)
    return started.targets


# -- models: fallbacks -------------------------------------------------------------------------


def test_models_are_fallbacks_after_model(gateway, sims, recorder) -> None:
    sims.a.fail_next("503")
    reply = gateway.chat("a/m-x", extra_body={"models": ["b/m-y", "c/m-z"]})
    assert reply.error is None
    assert (reply.headers["x-badgr-provider"], reply.headers["x-badgr-model"]) == ("b", "m-y")
    assert reply.completion.model == "m-y"
    assert reply.attempts == 2
    assert targets_of(recorder, reply) == ("a/m-x", "b/m-y", "c/m-z")
    assert sims.c.requests == []


@pytest.mark.anyio
async def test_models_fallbacks_async_stream(gateway, sims, recorder) -> None:
    sims.a.fail_next("502")
    reply = await gateway.achat("solo", stream=True, extra_body={"models": ["ab"]})
    assert reply.error is None
    assert reply.content == "Hello from b."
    # ab = [a/m-a, b/m-b]: a/m-a is already there, only b/m-b is added
    assert targets_of(recorder, reply) == ("a/m-a", "b/m-b")


def test_models_without_model(gateway, sims, recorder) -> None:
    body = {"models": ["b/m-b", "a/m-a"], "messages": MESSAGES}
    with gateway.http(headers=AUTH) as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["x-badgr-provider"] == "b"
    assert sims.models_seen("b") == ["m-b"]
    assert sims.b.requests[0].json["model"] == "m-b"
    (started,) = recorder.events("request_started", response.headers["x-request-id"])
    assert started.model == "b/m-b"


def test_route_fallback_is_accepted(gateway, sims) -> None:
    sims.a.fail_next("503")
    reply = gateway.chat("a/m-a", extra_body={"models": ["b/m-b"], "route": "fallback"})
    assert reply.error is None
    assert reply.headers["x-badgr-provider"] == "b"


# -- provider: order, only, ignore, allow_fallbacks --------------------------------------------


@pytest.mark.parametrize(
    ("model", "prefs", "targets"),
    [
        ("ab", {"order": ["b"]}, ("b/m-b", "a/m-a")),
        ("ab", {"order": ["B"]}, ("b/m-b", "a/m-a")),  # names match case-insensitively
        ("abc", {"order": ["c", "b"]}, ("c/m-c", "b/m-b", "a/m-a")),
        ("abc", {"only": ["b", "c"]}, ("b/m-b", "c/m-c")),
        ("abc", {"ignore": ["a"]}, ("b/m-b", "c/m-c")),
        ("abc", {"only": ["a", "c"], "order": ["c"]}, ("c/m-c", "a/m-a")),
        ("ab", {"only": ["Anthropic"]}, ("a/m-a", "b/m-b")),  # OpenRouter's upstreams only
        ("abc", {"allow_fallbacks": False}, ("a/m-a",)),
        ("abc", {"order": ["c", "b"], "allow_fallbacks": False}, ("c/m-c", "b/m-b")),
    ],
    ids=["order", "order-case", "order-two", "only", "ignore", "only-order", "only-foreign",
         "no-fallbacks", "no-fallbacks-order"],
)
def test_provider_preferences_shape_the_targets(
    gateway, sims, recorder, model: str, prefs: dict[str, Any], targets: tuple[str, ...]
) -> None:
    reply = gateway.chat(model, extra_body={"provider": prefs})
    assert reply.error is None
    assert targets_of(recorder, reply) == targets
    first_provider, _, first_model = targets[0].partition("/")
    assert (reply.headers["x-badgr-provider"], reply.headers["x-badgr-model"]) == (
        first_provider, first_model,
    )
    assert reply.attempts == 1
    for name in ("a", "b", "c"):
        expected = [first_model] if name == first_provider else []
        assert sims.models_seen(name) == expected


def test_provider_order_moves_a_healthy_target_first(gateway, sims) -> None:
    sims.a.set_fault("503")
    reply = gateway.chat("ab", stream=True, extra_body={"provider": {"order": ["b"]}})
    assert reply.content == "Hello from b."
    assert reply.attempts == 1
    assert sims.a.requests == []


def test_allow_fallbacks_false_keeps_to_the_first_target(gateway, sims, recorder) -> None:
    sims.a.set_fault("503")
    reply = gateway.chat("ab", extra_body={"provider": {"allow_fallbacks": False}})
    assert reply.status == 502
    assert reply.headers["x-should-retry"] == "false"
    assert sims.models_seen("a") == ["m-a", "m-a"]  # retried, never failed over
    assert sims.b.requests == []
    assert recorder.events("failover") == []


def test_preferences_that_leave_no_target_are_400(gateway, sims) -> None:
    reply = gateway.chat("ab", extra_body={"provider": {"only": ["c"]}})
    assert reply.status == 400
    assert reply.error.code == "no_target"
    assert reply.error.param == "provider"
    assert sims.a.requests == sims.b.requests == sims.c.requests == []


@pytest.mark.parametrize(
    ("extra", "param"),
    [({"provider": "b"}, "provider"), ({"provider": {"order": "b"}}, "provider.order"),
     ({"provider": {"allow_fallbacks": "no"}}, "provider.allow_fallbacks"),
     ({"models": "b/m-b"}, "models")],
)
def test_malformed_openrouter_fields_are_400(gateway, sims, extra: dict[str, Any],
                                             param: str) -> None:
    reply = gateway.chat("ab", extra_body=extra)
    assert reply.status == 400
    assert reply.error.param == param
    assert sims.a.requests == []


# -- what each upstream receives ---------------------------------------------------------------


def test_non_openrouter_upstream_gets_none_of_the_openrouter_fields(gateway, sims) -> None:
    extra = {
        "models": ["b/m-b"],
        "route": "fallback",
        "provider": {"order": ["a", "Anthropic"], "sort": "price"},
        **OPENROUTER_ONLY,
    }
    reply = gateway.chat("ab", temperature=0.5, user="user-7", extra_body=extra)
    assert reply.error is None
    (seen,) = sims.a.requests
    assert seen.json == {"model": "m-a", "messages": MESSAGES, "temperature": 0.5,
                         "user": "user-7", "stream": False}


@pytest.mark.parametrize("router", ["router", "openrouter"])
@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
def test_openrouter_upstream_gets_foreign_provider_entries_and_its_fields(
    gateway, sims, router: str, stream: bool
) -> None:
    prefs = {
        "order": [router, "Anthropic", "Together"],
        "ignore": ["DeepInfra", "a"],
        "sort": "price",
        "data_collection": "deny",
        "max_price": {"prompt": 1},
        "allow_fallbacks": True,
    }
    extra = {"models": ["b/m-b"], "route": "fallback", "provider": prefs, **OPENROUTER_ONLY}
    reply = gateway.chat(f"{router}/vendor/m-or", stream=stream, extra_body=extra)
    assert reply.error is None
    assert reply.headers["x-badgr-provider"] == router
    (seen,) = sims.providers[router].requests
    body = seen.json
    assert body["model"] == "vendor/m-or"
    assert "models" not in body
    assert "route" not in body
    # the names of badgr's own providers are badgr's business; the rest is OpenRouter's
    assert body["provider"] == {
        "order": ["Anthropic", "Together"],
        "ignore": ["DeepInfra"],
        "sort": "price",
        "data_collection": "deny",
        "max_price": {"prompt": 1},
        "allow_fallbacks": True,
    }
    for name, value in OPENROUTER_ONLY.items():
        assert body[name] == value


def test_openrouter_upstream_gets_no_provider_when_only_local_names_were_given(
    gateway, sims
) -> None:
    reply = gateway.chat("or-a", extra_body={"provider": {"order": ["router", "a"]}})
    assert reply.headers["x-badgr-provider"] == "router"
    (seen,) = sims.router.requests
    assert "provider" not in seen.json


def test_fields_follow_each_target_across_a_failover(gateway, sims) -> None:
    # or-a = [router/vendor/m-or, a/m-a]; router answers 503, a serves
    sims.router.fail_next("503")
    extra = {"provider": {"sort": "throughput", "order": ["Anthropic"]}, **OPENROUTER_ONLY}
    reply = gateway.chat("or-a", extra_body=extra)
    assert reply.error is None
    assert reply.headers["x-badgr-provider"] == "a"
    (to_router,) = sims.router.requests
    (to_a,) = sims.a.requests
    assert to_router.json["provider"] == {"sort": "throughput", "order": ["Anthropic"]}
    assert to_router.json["transforms"] == ["middle-out"]
    for name in (*BADGR_ONLY, *OPENROUTER_ONLY):
        assert name not in to_a.json
