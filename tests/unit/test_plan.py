"""Resolving model / models / route / provider into an ordered plan of targets."""

from __future__ import annotations

from typing import Any

import pytest

from badgr_middleware.config import Config
from badgr_middleware.errors import ApiError
from badgr_middleware.routing.plan import Plan, Target, resolve_plan


def make_config(**extra: Any) -> Config:
    return Config.from_dict({
        "providers": {
            "openrouter": {"api_key": "sk-or"},
            "local": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"},
            "Fast": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"},
        },
        "models": {
            "smart": [
                "openrouter/anthropic/claude-sonnet-4.5",
                {"target": "local/llama", "context_window": 8192},
            ],
            "cheap": ["local/small", "Fast/tiny", "openrouter/meta/llama"],
        },
        "allow_anonymous": True,
        **extra,
    })


CONFIG = make_config()
WITH_DEFAULT = make_config(default_provider="openrouter")


def keys(plan: Plan) -> list[str]:
    return [t.key for t in plan.targets]


def api_error(body: dict[str, Any], config: Config = CONFIG) -> ApiError:
    with pytest.raises(ApiError) as info:
        resolve_plan(body, config)
    return info.value


# -- one model name --------------------------------------------------------------------------


def test_alias_gives_its_targets_in_order_with_context_windows() -> None:
    plan = resolve_plan({"model": "smart"}, CONFIG)
    assert plan.targets == (
        Target("openrouter", "anthropic/claude-sonnet-4.5", None),
        Target("local", "llama", 8192),
    )
    assert plan.openrouter_provider is None


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("local/qwen", Target("local", "qwen")),
        ("local/Qwen/Qwen3-8B", Target("local", "Qwen/Qwen3-8B")),
        ("openrouter/anthropic/claude-3.5", Target("openrouter", "anthropic/claude-3.5")),
        ("Fast/x:free", Target("Fast", "x:free")),
    ],
)
def test_provider_slash_model(model: str, expected: Target) -> None:
    assert resolve_plan({"model": model}, CONFIG).targets == (expected,)


def test_an_alias_wins_over_provider_slash_model() -> None:
    config = make_config(models={"local/llama": ["openrouter/meta/llama"]})
    assert keys(resolve_plan({"model": "local/llama"}, config)) == ["openrouter/meta/llama"]


@pytest.mark.parametrize("model", ["gpt-4o", "anthropic/claude-3.5", "LOCAL/qwen", "local/"])
def test_unknown_names_go_to_the_default_provider(model: str) -> None:
    assert resolve_plan({"model": model}, WITH_DEFAULT).targets == (Target("openrouter", model),)


@pytest.mark.parametrize("model", ["gpt-4o", "anthropic/claude-3.5", "LOCAL/qwen", "local/"])
def test_unknown_names_without_default_provider_are_404(model: str) -> None:
    error = api_error({"model": model})
    assert error.status == 404
    assert error.code == "model_not_found"
    assert error.param == "model"
    assert f"'{model}'" in error.message


# -- models (fallbacks) and route -------------------------------------------------------------


def test_models_fallbacks_are_appended_and_deduplicated() -> None:
    plan = resolve_plan(
        {"model": "smart", "models": ["cheap", "smart", "local/llama", "local/extra"]}, CONFIG
    )
    assert keys(plan) == [
        "openrouter/anthropic/claude-sonnet-4.5", "local/llama",
        "local/small", "Fast/tiny", "openrouter/meta/llama",
        "local/extra",
    ]
    # the first occurrence of a target keeps its context window
    assert plan.targets[1].context_window == 8192


def test_models_without_model() -> None:
    assert keys(resolve_plan({"models": ["local/a", "local/b"]}, CONFIG)) == ["local/a", "local/b"]


def test_an_unknown_fallback_is_404_too() -> None:
    error = api_error({"model": "smart", "models": ["nope"]})
    assert (error.status, error.code) == (404, "model_not_found")
    assert "'nope'" in error.message


@pytest.mark.parametrize("route", ["fallback", None])
def test_route_fallback_is_accepted(route: str | None) -> None:
    assert keys(resolve_plan({"model": "local/a", "route": route}, CONFIG)) == ["local/a"]


@pytest.mark.parametrize("route", ["sort", "Fallback", "", 1, ["fallback"]])
def test_other_routes_are_400(route: object) -> None:
    error = api_error({"model": "local/a", "route": route})
    assert (error.status, error.param, error.code) == (400, "route", "invalid_value")


@pytest.mark.parametrize(
    ("body", "param", "code"),
    [
        ({}, "model", "missing_required_parameter"),
        ({"messages": []}, "model", "missing_required_parameter"),
        ({"model": 5}, "model", "invalid_type"),
        ({"model": ""}, "model", "invalid_type"),
        ({"model": ["smart"]}, "model", "invalid_type"),
        ({"model": "smart", "models": "cheap"}, "models", "invalid_type"),
        ({"model": "smart", "models": ["cheap", 3]}, "models", "invalid_type"),
        ({"model": "smart", "models": [""]}, "models", "invalid_type"),
        ({"models": []}, "model", "missing_required_parameter"),
        ({"model": "smart", "provider": "local"}, "provider", "invalid_type"),
        ({"model": "smart", "provider": ["local"]}, "provider", "invalid_type"),
        ({"model": "smart", "provider": {"order": "local"}}, "provider.order", "invalid_type"),
        ({"model": "smart", "provider": {"only": [1]}}, "provider.only", "invalid_type"),
        ({"model": "smart", "provider": {"ignore": {"local": 1}}}, "provider.ignore",
         "invalid_type"),
        ({"model": "smart", "provider": {"allow_fallbacks": "no"}}, "provider.allow_fallbacks",
         "invalid_type"),
        ({"model": "smart", "provider": {"allow_fallbacks": 0}}, "provider.allow_fallbacks",
         "invalid_type"),
    ],
)
def test_wrong_types_are_400_with_the_param(body: dict[str, Any], param: str, code: str) -> None:
    error = api_error(body)
    assert (error.status, error.param, error.code) == (400, param, code)


# -- provider preferences --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("prefs", "expected"),
    [
        ({"order": ["local"]}, ["local/small", "Fast/tiny", "openrouter/meta/llama"]),
        ({"order": ["openrouter"]}, ["openrouter/meta/llama", "local/small", "Fast/tiny"]),
        ({"order": ["OPENROUTER", "fast"]},
         ["openrouter/meta/llama", "Fast/tiny", "local/small"]),
        ({"only": ["Local"]}, ["local/small"]),
        ({"only": ["local", "FAST"]}, ["local/small", "Fast/tiny"]),
        ({"ignore": ["openrouter"]}, ["local/small", "Fast/tiny"]),
        ({"ignore": ["LOCAL", "fast"]}, ["openrouter/meta/llama"]),
        ({"only": ["local", "openrouter"], "order": ["openrouter"]},
         ["openrouter/meta/llama", "local/small"]),
        ({"allow_fallbacks": False}, ["local/small"]),
        ({"allow_fallbacks": True}, ["local/small", "Fast/tiny", "openrouter/meta/llama"]),
        ({"order": ["fast", "openrouter"], "allow_fallbacks": False},
         ["Fast/tiny", "openrouter/meta/llama"]),
        ({"order": [], "only": []}, ["local/small", "Fast/tiny", "openrouter/meta/llama"]),
    ],
)
def test_provider_preferences_filter_and_order_targets(
    prefs: dict[str, Any], expected: list[str]
) -> None:
    assert keys(resolve_plan({"model": "cheap", "provider": prefs}, CONFIG)) == expected


def test_names_that_are_not_configured_providers_are_forwarded_to_openrouter() -> None:
    prefs = {
        "order": ["anthropic", "local", "Amazon Bedrock"],
        "ignore": ["DeepInfra"],
        "sort": "price",
        "data_collection": "deny",
        "max_price": {"prompt": 1},
    }
    plan = resolve_plan({"model": "cheap", "provider": prefs}, CONFIG)
    assert keys(plan) == ["local/small", "Fast/tiny", "openrouter/meta/llama"]
    assert plan.openrouter_provider == {
        "order": ["anthropic", "Amazon Bedrock"],
        "ignore": ["DeepInfra"],
        "sort": "price",
        "data_collection": "deny",
        "max_price": {"prompt": 1},
    }


def test_a_list_naming_only_openrouter_upstreams_does_not_filter_locally() -> None:
    plan = resolve_plan({"model": "cheap", "provider": {"only": ["anthropic"]}}, CONFIG)
    assert keys(plan) == ["local/small", "Fast/tiny", "openrouter/meta/llama"]
    assert plan.openrouter_provider == {"only": ["anthropic"]}


def test_allow_fallbacks_is_applied_and_forwarded() -> None:
    plan = resolve_plan({"model": "cheap", "provider": {"allow_fallbacks": False}}, CONFIG)
    assert plan.openrouter_provider == {"allow_fallbacks": False}


@pytest.mark.parametrize("prefs", [{}, {"order": ["local"]}, {"only": ["LOCAL", "fast"]}])
def test_nothing_to_forward_is_none(prefs: dict[str, Any]) -> None:
    assert resolve_plan({"model": "cheap", "provider": prefs}, CONFIG).openrouter_provider is None


@pytest.mark.parametrize(
    "prefs",
    [
        {"only": ["local"], "ignore": ["local"]},
        {"ignore": ["local", "fast", "openrouter"]},
        {"order": ["anthropic"], "allow_fallbacks": False, "only": ["fast"], "ignore": ["fast"]},
    ],
)
def test_preferences_that_leave_no_target_are_400(prefs: dict[str, Any]) -> None:
    error = api_error({"model": "cheap", "provider": prefs})
    assert (error.status, error.param, error.code) == (400, "provider", "no_target")


def test_resolve_plan_does_not_change_the_body() -> None:
    body = {"model": "cheap", "models": ["smart"], "provider": {"order": ["openrouter", "x"]}}
    snapshot = repr(body)
    resolve_plan(body, CONFIG)
    assert repr(body) == snapshot


def test_only_mixing_local_and_openrouter_upstream_names_keeps_openrouter_targets() -> None:
    plan = resolve_plan(
        {"model": "cheap", "provider": {"only": ["local", "Anthropic"]}}, CONFIG
    )
    assert keys(plan) == ["local/small", "openrouter/meta/llama"]
    assert plan.openrouter_provider == {"only": ["Anthropic"]}
