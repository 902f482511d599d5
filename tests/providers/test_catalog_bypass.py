"""The OpenRouter bypass: the catalog, its configuration, and model resolution with it."""

from __future__ import annotations

from typing import Any

import pytest

from badgr_middleware.config import Config, ConfigError, TargetConfig
from badgr_middleware.providers.catalog import CATALOG, native_target
from badgr_middleware.routing.plan import resolve_plan


def make(bypass: bool = True, **extra: Any) -> Config:
    providers = {
        "openrouter": {"api_key": "k", "bypass": bypass},
        "anthropic": {"api_key": "k"},
        "gemini": {"api_key": "k"},
        "openai": {"api_key": "k"},
        "claude-direct": {"kind": "anthropic", "base_url": "https://a.example/v1"},
    }
    providers.update(extra.pop("providers", {}))
    return Config.from_dict({"providers": providers, "allow_anonymous": True, **extra})


def keys(body: dict[str, Any], config: Config) -> list[str]:
    return [t.key for t in resolve_plan(body, config).targets]


def test_catalog_shape() -> None:
    assert CATALOG["anthropic/claude-sonnet-4.5"] == "anthropic/claude-sonnet-4-5"
    assert CATALOG["openai/gpt-4o"] == "openai/gpt-4o"
    assert CATALOG["google/gemini-2.5-pro"] == "gemini/gemini-2.5-pro"
    for openrouter_id, native in CATALOG.items():
        assert openrouter_id.count("/") == 1 and native.count("/") == 1
        assert native.partition("/")[0] in ("anthropic", "openai", "gemini")


@pytest.mark.parametrize(("model", "expected"), [
    ("anthropic/claude-sonnet-4.5",
     ["openrouter/anthropic/claude-sonnet-4.5", "anthropic/claude-sonnet-4-5"]),
    ("openai/gpt-4o", ["openrouter/openai/gpt-4o", "openai/gpt-4o"]),
    ("google/gemini-2.5-pro", ["openrouter/google/gemini-2.5-pro", "gemini/gemini-2.5-pro"]),
    # not in the catalog: the usual <provider>/<model> rule
    ("anthropic/claude-new", ["anthropic/claude-new"]),
    # explicitly OpenRouter: no bypass
    ("openrouter/anthropic/claude-sonnet-4.5", ["openrouter/anthropic/claude-sonnet-4.5"]),
])
def test_bypass_resolution(model: str, expected: list[str]) -> None:
    assert keys({"model": model}, make()) == expected


def test_without_bypass_nothing_changes() -> None:
    config = make(bypass=False)
    assert keys({"model": "anthropic/claude-sonnet-4.5"}, config) == [
        "anthropic/claude-sonnet-4.5"]
    assert keys({"model": "google/gemini-2.5-pro"}, make(False, default_provider="openrouter")
                ) == ["openrouter/google/gemini-2.5-pro"]


def test_native_provider_must_be_configured() -> None:
    config = Config.from_dict({
        "providers": {"openrouter": {"api_key": "k", "bypass": True}},
        "default_provider": "openrouter", "allow_anonymous": True,
    })
    assert keys({"model": "anthropic/claude-sonnet-4.5"}, config) == [
        "openrouter/anthropic/claude-sonnet-4.5"]


def test_alias_wins_over_bypass() -> None:
    config = make(models={"anthropic/claude-sonnet-4.5": ["openai/gpt-4o"]})
    assert keys({"model": "anthropic/claude-sonnet-4.5"}, config) == ["openai/gpt-4o"]


def test_user_catalog_overrides_extends_and_switches_off() -> None:
    config = make(catalog={
        "anthropic/claude-sonnet-4.5": "claude-direct/claude-sonnet-4-5-20250929",
        "meta-llama/llama-3.3-70b": "openai/llama-70b",
        "openai/gpt-4o": False,
    })
    assert keys({"model": "anthropic/claude-sonnet-4.5"}, config) == [
        "openrouter/anthropic/claude-sonnet-4.5", "claude-direct/claude-sonnet-4-5-20250929"]
    assert keys({"model": "meta-llama/llama-3.3-70b"}, config) == [
        "openrouter/meta-llama/llama-3.3-70b", "openai/llama-70b"]
    assert keys({"model": "openai/gpt-4o"}, config) == ["openai/gpt-4o"]
    assert config.catalog["openai/gpt-4o"] is False
    assert config.catalog["meta-llama/llama-3.3-70b"] == TargetConfig("openai", "llama-70b")


def test_models_fallbacks_are_bypassed_too_and_deduplicated() -> None:
    body = {"model": "anthropic/claude-sonnet-4.5", "models": ["openai/gpt-4o"]}
    assert keys(body, make()) == [
        "openrouter/anthropic/claude-sonnet-4.5", "anthropic/claude-sonnet-4-5",
        "openrouter/openai/gpt-4o", "openai/gpt-4o"]


def test_provider_preferences_apply_after_bypass() -> None:
    body = {"model": "anthropic/claude-sonnet-4.5", "provider": {"order": ["anthropic"]}}
    assert keys(body, make()) == [
        "anthropic/claude-sonnet-4-5", "openrouter/anthropic/claude-sonnet-4.5"]
    body = {"model": "anthropic/claude-sonnet-4.5", "provider": {"only": ["openrouter"]}}
    assert keys(body, make()) == ["openrouter/anthropic/claude-sonnet-4.5"]


def test_native_target_helper() -> None:
    assert native_target("google/gemini-2.5-flash") == ("gemini", "gemini-2.5-flash")
    assert native_target("nobody/nothing") is None
    assert native_target("openai/gpt-4o", {"openai/gpt-4o": "azure/gpt4o-prod"}) == (
        "azure", "gpt4o-prod")
    assert native_target("openai/gpt-4o", {"openai/gpt-4o": False}) is None


@pytest.mark.parametrize(("catalog", "path", "code"), [
    ("x", "catalog", "bad_type"),
    ({"no-slash": "anthropic/x"}, "catalog.no-slash", "bad_catalog"),
    ({"a/b": 3}, "catalog.a/b", "bad_catalog"),
    ({"a/b": True}, "catalog.a/b", "bad_catalog"),
    ({"a/b": "nowhere/x"}, "catalog.a/b", "unknown_target_provider"),
    ({"a/b": "anthropic"}, "catalog.a/b", "bad_target"),
])
def test_catalog_validation(catalog: Any, path: str, code: str) -> None:
    with pytest.raises(ConfigError) as info:
        make(catalog=catalog)
    assert [(p.path, p.code) for p in info.value.problems] == [(path, code)]
    assert all(p.fix for p in info.value.problems)
