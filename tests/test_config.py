"""Tests for configuration loading and validation, Secret and the well-known providers table."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from badgr_middleware.config import (
    PROBLEM_CODES,
    AliasConfig,
    BreakerPolicy,
    Config,
    ConfigError,
    ConfigProblem,
    Cooldowns,
    ProviderConfig,
    ResumePolicy,
    RetryPolicy,
    StateConfig,
    TargetConfig,
    Timeouts,
    load_config,
)
from badgr_middleware.pricing import Price
from badgr_middleware.providers.known import (
    IMPLEMENTED_KINDS,
    KINDS,
    KNOWN_PROVIDERS,
    KnownProvider,
)
from badgr_middleware.secret import Secret, mask

FAKE_KEY = "sk-test-SECRET-abcdef123456"
FAKE_CLIENT_KEY = "ck-test-SECRET-zyxwvu987654"
FAKE_REDIS_PASSWORD = "rp-test-SECRET-qwerty24680"
FAKE_REDIS_URL = f"rediss://default:{FAKE_REDIS_PASSWORD}@cache.example:6380/0"


def valid(**changes: Any) -> dict[str, Any]:
    """A small valid configuration, with top-level keys replaced (None removes a key)."""
    data: dict[str, Any] = {
        "providers": {
            "openrouter": {"api_key": "or-key"},
            "local": {"kind": "openai", "base_url": "http://127.0.0.1:8001/v1"},
        },
        "models": {"fast": ["local/llama3"]},
        "allow_anonymous": True,
    }
    for key, value in changes.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value
    return data


def problems_of(data: Any, env: dict[str, str] | None = None) -> tuple[ConfigProblem, ...]:
    with pytest.raises(ConfigError) as info:
        Config.from_dict(data, env=env or {})
    return info.value.problems


def has(problems: tuple[ConfigProblem, ...], path: str, code: str) -> bool:
    return any(p.path == path and p.code == code for p in problems)


# --------------------------------------------------------------------------- Secret


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("sk-test-SECRET-abcdef123456", "****3456"),
        ("0123456789abcdef", "****cdef"),  # exactly 16: last four shown
        ("0123456789abcde", "****"),  # 15: nothing shown
        ("short", "****"),
        ("", "****"),
    ],
)
def test_secret_masks_repr_and_str(value: str, shown: str) -> None:
    secret = Secret(value)
    assert str(secret) == shown
    assert repr(secret) == f"Secret('{shown}')"
    assert mask(value) == shown
    assert secret.reveal() == value
    if len(value) > 4:
        assert value not in repr(secret)
        assert value not in f"{secret} {secret!r} {[secret]}"


def test_secret_equality_hash_and_bool() -> None:
    a = Secret(FAKE_KEY)
    assert a == Secret(FAKE_KEY)
    assert a == FAKE_KEY
    assert a != "something-else"
    assert a != Secret("other")
    assert a != 42
    assert hash(a) == hash(FAKE_KEY)
    assert {a: 1}[Secret(FAKE_KEY)] == 1
    assert bool(a)
    assert not Secret("")
    assert Secret("é-unicode") == "é-unicode"


def test_secret_is_immutable_and_copyable() -> None:
    secret = Secret(FAKE_KEY)
    with pytest.raises(AttributeError):
        secret._value = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        del secret._value
    with pytest.raises(AttributeError):
        secret.other = 1  # type: ignore[attr-defined]
    assert copy.copy(secret) == FAKE_KEY
    assert copy.deepcopy(secret) == FAKE_KEY
    assert pickle.loads(pickle.dumps(secret)) == FAKE_KEY
    with pytest.raises(TypeError):
        Secret(123)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- well-known providers

EXPECTED_KNOWN = [
    ("openai", "openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
    ("openrouter", "openai", "https://openrouter.ai/api/v1", "OPENROUTER_API_KEY"),
    ("anthropic", "anthropic", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
    (
        "gemini",
        "gemini",
        "https://generativelanguage.googleapis.com/v1beta",
        "GEMINI_API_KEY",
    ),
    ("groq", "openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
    ("together", "openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
    ("mistral", "openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
    ("deepseek", "openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
    ("fireworks", "openai", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
    ("xai", "openai", "https://api.x.ai/v1", "XAI_API_KEY"),
    ("perplexity", "openai", "https://api.perplexity.ai", "PERPLEXITY_API_KEY"),
    ("cerebras", "openai", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
]


@pytest.mark.parametrize(("name", "kind", "base_url", "env_var"), EXPECTED_KNOWN)
def test_known_cloud_providers(name: str, kind: str, base_url: str, env_var: str) -> None:
    known = KNOWN_PROVIDERS[name]
    assert known == KnownProvider(kind, base_url, env_var, True, openrouter=name == "openrouter")


def test_known_table_shape() -> None:
    assert KNOWN_PROVIDERS["ollama"] == KnownProvider(
        "openai", "http://127.0.0.1:11434/v1", None, key_required=False
    )
    assert KINDS == ("openai", "anthropic", "gemini", "azure")
    assert frozenset(KINDS) == IMPLEMENTED_KINDS
    assert all(k.kind in KINDS for k in KNOWN_PROVIDERS.values())
    assert all(not k.base_url.endswith("/") for k in KNOWN_PROVIDERS.values())
    with pytest.raises(TypeError):
        KNOWN_PROVIDERS["new"] = KNOWN_PROVIDERS["openai"]  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        KNOWN_PROVIDERS["openai"].kind = "x"  # type: ignore[misc]


@pytest.mark.parametrize(
    "name", [n for n, k in KNOWN_PROVIDERS.items() if k.kind in IMPLEMENTED_KINDS]
)
def test_well_known_name_implies_kind_and_base_url(name: str) -> None:
    known = KNOWN_PROVIDERS[name]
    config = Config.from_dict(
        valid(providers={name: {"api_key": "k"}}, models=None, default_provider=name), env={}
    )
    provider = config.providers[name]
    assert (provider.kind, provider.base_url) == (known.kind, known.base_url)
    assert provider.openrouter is (name == "openrouter")
    assert provider.api_key == "k"


def test_ollama_needs_no_key_and_custom_key_is_optional() -> None:
    config = Config.from_dict(
        valid(
            providers={"ollama": {}, "vllm": {"base_url": "http://127.0.0.1:8000/v1"}},
            models=None,
        ),
        env={},
    )
    assert config.providers["ollama"].api_key is None
    assert config.providers["ollama"].base_url == "http://127.0.0.1:11434/v1"
    assert config.providers["vllm"].kind == "openai"  # base_url alone implies openai
    assert config.providers["vllm"].api_key is None


def test_well_known_values_can_be_overridden() -> None:
    config = Config.from_dict(
        valid(
            providers={
                "openai": {"api_key": "k", "base_url": "https://proxy.example/v1/"},
                "mine": {
                    "base_url": "https://router.example/api/v1",
                    "openrouter": True,
                    "headers": {"HTTP-Referer": "https://app.example", "X-Title": "app"},
                    "models": ["a", "b/c"],
                },
            },
            models=None,
        ),
        env={},
    )
    assert config.providers["openai"].base_url == "https://proxy.example/v1"  # slash stripped
    mine = config.providers["mine"]
    assert mine.openrouter is True
    assert dict(mine.headers) == {"HTTP-Referer": "https://app.example", "X-Title": "app"}
    assert mine.models == ("a", "b/c")
    with pytest.raises(TypeError):
        mine.headers["X"] = "y"  # type: ignore[index]
    with pytest.raises(dataclasses.FrozenInstanceError):
        mine.name = "x"  # type: ignore[misc]


# --------------------------------------------------------------------------- full example


FULL_EXAMPLE: dict[str, Any] = {
    "providers": {
        "openrouter": {"api_key": "${OPENROUTER_API_KEY}"},
        "openai": {"api_key": "${OPENAI_API_KEY}"},
        "local": {
            "kind": "openai",
            "base_url": "http://127.0.0.1:8001/v1",
            "api_key": "x",
            "headers": {"X-Title": "app"},
            "models": ["llama3"],
            "openrouter": False,
        },
    },
    "models": {
        "claude-sonnet": ["openrouter/anthropic/claude-sonnet-4.5", "local/llama3"],
        "big": [{"target": "openai/gpt-4.1", "context_window": 1000000}, "local/llama3"],
        "also-ok": {"targets": ["local/llama3"]},
        "spread": [{"target": "openai/gpt-4.1", "weight": 3}, "local/llama3"],
        "quick": {
            "targets": ["openai/gpt-4.1", "local/llama3"],
            "routing": "latency",
            "hedge_after": "p95",
        },
    },
    "client_keys": ["${BADGR_CLIENT_KEY}"],
    "allow_anonymous": False,
    "authenticate": "os.path:join",
    "default_provider": "openrouter",
    "prefix": "/api/llm",
    "max_body_bytes": 2048,
    "timeouts": {"connect": 1, "first_byte": 10, "read": 2.5, "deadline": 30},
    "retry": {
        "attempts_per_target": 3,
        "backoff_base": 0.5,
        "backoff_max": 8,
        "max_retry_after": 0,
    },
    "cooldowns": {"rate_limited": 1, "quota": 2, "auth": 3, "not_found": 4},
    "breaker": {
        "consecutive_failures": 3,
        "failure_rate": 0.25,
        "min_requests": 20,
        "window": 30,
        "open_for": 15,
        "half_open_probes": 2,
    },
    "state": {
        "backend": "redis",
        "url": "${REDIS_URL}",
        "timeout": 0.05,
        "retry_interval": 2,
        "key_prefix": "myapp:",
    },
}
FULL_ENV = {
    "OPENROUTER_API_KEY": FAKE_KEY,
    "OPENAI_API_KEY": "sk-openai",
    "BADGR_CLIENT_KEY": FAKE_CLIENT_KEY,
    "REDIS_URL": FAKE_REDIS_URL,
}


def test_full_example_loads() -> None:
    import os.path

    config = Config.from_dict(FULL_EXAMPLE, env=FULL_ENV)
    assert set(config.providers) == {"openrouter", "openai", "local"}
    assert config.providers["openrouter"].api_key == FAKE_KEY
    assert config.providers["local"] == ProviderConfig(
        name="local",
        kind="openai",
        base_url="http://127.0.0.1:8001/v1",
        api_key=Secret("x"),
        headers={"X-Title": "app"},
        models=("llama3",),
        openrouter=False,
    )
    assert config.models["claude-sonnet"] == AliasConfig(
        "claude-sonnet",
        (
            TargetConfig("openrouter", "anthropic/claude-sonnet-4.5"),
            TargetConfig("local", "llama3"),
        ),
    )
    assert config.models["big"].targets[0] == TargetConfig("openai", "gpt-4.1", 1000000)
    assert config.models["also-ok"].targets == (TargetConfig("local", "llama3"),)
    assert config.models["spread"] == AliasConfig(
        "spread",
        (TargetConfig("openai", "gpt-4.1", weight=3.0), TargetConfig("local", "llama3")),
        routing="weighted",
    )
    assert config.models["quick"].routing == "latency"
    assert config.models["quick"].hedge_after == "p95"
    assert config.models["claude-sonnet"].routing == "ordered"
    assert config.models["claude-sonnet"].hedge_after is None
    assert config.client_keys == (Secret(FAKE_CLIENT_KEY),)
    assert config.authenticate is os.path.join
    assert config.default_provider == "openrouter"
    assert config.prefix == "/api/llm"
    assert config.max_body_bytes == 2048
    assert config.timeouts == Timeouts(connect=1.0, read=2.5, deadline=30.0, first_byte=10.0)
    assert config.retry == RetryPolicy(3, 0.5, 8.0, 0.0)
    assert config.cooldowns == Cooldowns(1.0, 2.0, 3.0, 4.0)
    assert config.breaker == BreakerPolicy(3, 0.25, 20, 30.0, 15.0, 2)
    assert config.state == StateConfig("redis", Secret(FAKE_REDIS_URL), 0.05, 2.0, "myapp:")
    assert isinstance(config.state.url, Secret)
    assert isinstance(config.timeouts.connect, float)  # ints are accepted for float fields
    assert isinstance(config.breaker.window, float)
    assert config.warnings == ()


def test_defaults() -> None:
    config = Config.from_dict({"providers": {"openai": {"api_key": "k"}}}, env={})
    assert config.models == {}
    assert config.client_keys == ()
    assert config.allow_anonymous is False
    assert config.authenticate is None
    assert config.default_provider is None
    assert config.prefix == "/v1"
    assert config.max_body_bytes == 16 * 1024 * 1024
    assert config.timeouts == Timeouts(5.0, 120.0, 300.0)
    assert config.timeouts.first_byte == 120.0
    assert config.retry == RetryPolicy(2, 0.25, 4.0, 30.0)
    assert config.cooldowns == Cooldowns(10.0, 300.0, 600.0, 300.0)
    assert config.breaker == BreakerPolicy(
        consecutive_failures=5,
        failure_rate=0.5,
        min_requests=10,
        window=60.0,
        open_for=30.0,
        half_open_probes=1,
    )
    assert config.state == StateConfig(
        backend="memory", url=None, timeout=0.1, retry_interval=5.0, key_prefix="badgr:"
    )


def test_authenticate_callable_and_dotted_forms() -> None:
    def check(request: object) -> bool:
        return True

    assert Config.from_dict(valid(authenticate=check), env={}).authenticate is check
    import os.path

    dotted = Config.from_dict(valid(authenticate="os.path.join"), env={})
    assert dotted.authenticate is os.path.join
    nested = Config.from_dict(valid(authenticate="pathlib:Path.cwd"), env={})
    assert nested.authenticate == Path.cwd


# --------------------------------------------------------------------------- targets


@pytest.mark.parametrize(
    ("target", "provider", "model"),
    [
        ("openrouter/anthropic/claude-sonnet-4.5", "openrouter", "anthropic/claude-sonnet-4.5"),
        ("local/llama3", "local", "llama3"),
        ("local/org/model/v1:free", "local", "org/model/v1:free"),
        ("openrouter/openai/gpt-4o", "openrouter", "openai/gpt-4o"),
    ],
)
def test_target_splits_at_first_slash(target: str, provider: str, model: str) -> None:
    config = Config.from_dict(valid(models={"m": [target]}), env={})
    parsed = config.models["m"].targets[0]
    assert (parsed.provider, parsed.model) == (provider, model)
    assert parsed.name == target


def test_single_target_without_list() -> None:
    config = Config.from_dict(valid(models={"m": "local/llama3"}), env={})
    assert config.models["m"].targets == (TargetConfig("local", "llama3"),)


# --------------------------------------------------------------------------- rules


def _mod(**changes: Any) -> Callable[[], dict[str, Any]]:
    return lambda: valid(**changes)


def _prov(**providers: Any) -> Callable[[], dict[str, Any]]:
    return lambda: valid(providers={"local": {"base_url": "http://127.0.0.1:1/v1"}, **providers})


def _alias(**options: Any) -> Callable[[], dict[str, Any]]:
    """Alias ``m`` in the table form, with two targets and *options* (routing, hedge_after)."""
    return lambda: valid(models={"m": {"targets": ["local/x", "local/y"], **options}})


def _weight(weight: Any) -> Callable[[], dict[str, Any]]:
    return lambda: valid(models={"m": [{"target": "local/x", "weight": weight}, "local/y"]})


def _breaker(**values: Any) -> Callable[[], dict[str, Any]]:
    return lambda: valid(breaker=values)


def _state(**values: Any) -> Callable[[], dict[str, Any]]:
    return lambda: valid(state=values)


RULES: list[tuple[str, Callable[[], dict[str, Any]], str, str]] = [
    ("providers missing", _mod(providers=None, models=None), "providers", "no_providers"),
    ("providers empty", _mod(providers={}, models=None), "providers", "no_providers"),
    ("providers not a table", _mod(providers=["openai"], models=None), "providers", "bad_type"),
    ("top-level typo", _mod(prefx="/v1"), "prefx", "unknown_key"),
    ("provider typo", _prov(openai={"api_kye": "k"}), "providers.openai.api_kye", "unknown_key"),
    ("timeouts typo", _mod(timeouts={"conect": 1}), "timeouts.conect", "unknown_key"),
    ("retry typo", _mod(retry={"attempts": 1}), "retry.attempts", "unknown_key"),
    ("cooldowns typo", _mod(cooldowns={"quota_s": 1}), "cooldowns.quota_s", "unknown_key"),
    (
        "target table typo",
        _mod(models={"m": [{"target": "local/x", "ctx": 1}]}),
        "models.m[0].ctx",
        "unknown_key",
    ),
    (
        "alias table typo",
        _mod(models={"m": {"target": ["local/x"]}}),
        "models.m.target",
        "unknown_key",
    ),
    ("unknown provider", _prov(acme={"api_key": "k"}), "providers.acme", "unknown_provider"),
    (
        "slash in name",
        _prov(**{"a/b": {"base_url": "http://h/v1"}}),
        "providers.a/b",
        "bad_provider_name",
    ),
    (
        "name starts with dash",
        _prov(**{"-a": {"base_url": "http://h"}}),
        "providers.-a",
        "bad_provider_name",
    ),
    ("provider not a table", _prov(openai="k"), "providers.openai", "bad_type"),
    ("missing api_key", _prov(openai={}), "providers.openai.api_key", "missing_api_key"),
    ("empty api_key", _prov(groq={"api_key": ""}), "providers.groq.api_key", "missing_api_key"),
    ("api_key not a string", _prov(openai={"api_key": 5}), "providers.openai.api_key", "bad_type"),
    (
        "bad kind",
        _prov(x={"kind": "opnai", "base_url": "http://h"}),
        "providers.x.kind",
        "bad_kind",
    ),
    (
        "kind not a string",
        _prov(x={"kind": 1, "base_url": "http://h"}),
        "providers.x.kind",
        "bad_type",
    ),
    (
        "azure without api_version",
        _prov(az={"kind": "azure", "base_url": "https://r.openai.azure.com", "api_key": "k"}),
        "providers.az.api_version",
        "missing_api_version",
    ),
    (
        "azure api_version not a string",
        _prov(az={"kind": "azure", "base_url": "https://r.example", "api_version": 2024}),
        "providers.az.api_version",
        "bad_type",
    ),
    (
        "azure empty deployment",
        _prov(az={"kind": "azure", "base_url": "https://r.example", "api_version": "v",
                  "deployment": ""}),
        "providers.az.deployment",
        "bad_value",
    ),
    (
        "azure deployment with a slash",
        _prov(az={"kind": "azure", "base_url": "https://r.example", "api_version": "v",
                  "deployment": "a/b"}),
        "providers.az.deployment",
        "bad_value",
    ),
    (
        "api_version on an openai provider",
        _prov(x={"base_url": "http://h", "api_version": "2024-10-21"}),
        "providers.x.api_version",
        "bad_value",
    ),
    (
        "bypass on a provider that is not OpenRouter",
        _prov(openai={"api_key": "k", "bypass": True}),
        "providers.openai.bypass",
        "bad_bypass",
    ),
    (
        "bypass not a boolean",
        _prov(openrouter={"api_key": "k", "bypass": "yes"}),
        "providers.openrouter.bypass",
        "bad_type",
    ),
    ("ftp url", _prov(x={"base_url": "ftp://h/v1"}), "providers.x.base_url", "bad_base_url"),
    ("not a url", _prov(x={"base_url": "localhost:8000"}), "providers.x.base_url", "bad_base_url"),
    ("no host", _prov(x={"base_url": "https://"}), "providers.x.base_url", "bad_base_url"),
    ("bad port", _prov(x={"base_url": "http://h:port/v1"}), "providers.x.base_url", "bad_base_url"),
    ("query", _prov(x={"base_url": "http://h/v1?a=1"}), "providers.x.base_url", "bad_base_url"),
    (
        "credentials",
        _prov(x={"base_url": "http://u:p@h/v1"}),
        "providers.x.base_url",
        "bad_base_url",
    ),
    ("custom without url", _prov(x={"kind": "openai"}), "providers.x.base_url", "bad_base_url"),
    (
        "kind differs from well-known, no url",
        _prov(gemini={"kind": "openai", "api_key": "k"}),
        "providers.gemini.base_url",
        "bad_base_url",
    ),
    ("url not a string", _prov(x={"base_url": 8000}), "providers.x.base_url", "bad_type"),
    (
        "headers not a table",
        _prov(x={"base_url": "http://h", "headers": ["a"]}),
        "providers.x.headers",
        "bad_type",
    ),
    (
        "header value not a string",
        _prov(x={"base_url": "http://h", "headers": {"X-N": 1}}),
        "providers.x.headers.X-N",
        "bad_type",
    ),
    (
        "bad header name",
        _prov(x={"base_url": "http://h", "headers": {"X N": "v"}}),
        "providers.x.headers.X N",
        "bad_value",
    ),
    (
        "header line break",
        _prov(x={"base_url": "http://h", "headers": {"X-N": "a\r\nb"}}),
        "providers.x.headers.X-N",
        "bad_value",
    ),
    (
        "models not a list",
        _prov(x={"base_url": "http://h", "models": "m"}),
        "providers.x.models",
        "bad_type",
    ),
    (
        "openrouter not bool",
        _prov(x={"base_url": "http://h", "openrouter": "yes"}),
        "providers.x.openrouter",
        "bad_type",
    ),
    ("models not a table", _mod(models=["local/x"]), "models", "bad_type"),
    ("alias empty list", _mod(models={"m": []}), "models.m", "empty_alias"),
    ("alias empty targets", _mod(models={"m": {"targets": []}}), "models.m.targets", "empty_alias"),
    ("alias table without targets", _mod(models={"m": {}}), "models.m.targets", "empty_alias"),
    ("alias wrong type", _mod(models={"m": 3}), "models.m", "bad_type"),
    ("target without slash", _mod(models={"m": ["llama3"]}), "models.m[0]", "bad_target"),
    ("target without model", _mod(models={"m": ["local/"]}), "models.m[0]", "bad_target"),
    ("target without provider", _mod(models={"m": ["/x"]}), "models.m[0]", "bad_target"),
    ("target a number", _mod(models={"m": ["local/x", 3]}), "models.m[1]", "bad_target"),
    (
        "target table without target",
        _mod(models={"m": [{"context_window": 8}]}),
        "models.m[0]",
        "bad_target",
    ),
    (
        "unconfigured target provider",
        _mod(models={"m": ["opnrouter/openai/gpt-4o"]}),
        "models.m[0]",
        "unknown_target_provider",
    ),
    (
        "unconfigured target provider in table",
        _mod(models={"m": [{"target": "nope/x"}]}),
        "models.m[0].target",
        "unknown_target_provider",
    ),
    (
        "context_window zero",
        _mod(models={"m": [{"target": "local/x", "context_window": 0}]}),
        "models.m[0].context_window",
        "bad_value",
    ),
    (
        "context_window string",
        _mod(models={"m": [{"target": "local/x", "context_window": "8000"}]}),
        "models.m[0].context_window",
        "bad_type",
    ),
    (
        "context_window float",
        _mod(models={"m": [{"target": "local/x", "context_window": 8000.5}]}),
        "models.m[0].context_window",
        "bad_type",
    ),
    ("timeout as string", _mod(timeouts={"read": "120"}), "timeouts.read", "bad_type"),
    ("timeout as bool", _mod(timeouts={"read": True}), "timeouts.read", "bad_type"),
    ("timeout zero", _mod(timeouts={"connect": 0}), "timeouts.connect", "bad_value"),
    ("timeout negative", _mod(timeouts={"deadline": -1}), "timeouts.deadline", "bad_value"),
    ("timeout nan", _mod(timeouts={"deadline": float("nan")}), "timeouts.deadline", "bad_value"),
    ("timeout inf", _mod(timeouts={"read": float("inf")}), "timeouts.read", "bad_value"),
    ("timeouts not a table", _mod(timeouts=30), "timeouts", "bad_type"),
    ("cooldown zero", _mod(cooldowns={"auth": 0}), "cooldowns.auth", "bad_value"),
    ("cooldown string", _mod(cooldowns={"quota": "300"}), "cooldowns.quota", "bad_type"),
    ("backoff zero", _mod(retry={"backoff_base": 0}), "retry.backoff_base", "bad_value"),
    ("backoff max negative", _mod(retry={"backoff_max": -2}), "retry.backoff_max", "bad_value"),
    (
        "retry-after negative",
        _mod(retry={"max_retry_after": -1}),
        "retry.max_retry_after",
        "bad_value",
    ),
    (
        "attempts zero",
        _mod(retry={"attempts_per_target": 0}),
        "retry.attempts_per_target",
        "bad_value",
    ),
    (
        "attempts float",
        _mod(retry={"attempts_per_target": 2.0}),
        "retry.attempts_per_target",
        "bad_type",
    ),
    ("body limit small", _mod(max_body_bytes=1023), "max_body_bytes", "bad_value"),
    ("body limit string", _mod(max_body_bytes="16MB"), "max_body_bytes", "bad_type"),
    ("anonymous string", _mod(allow_anonymous="true"), "allow_anonymous", "bad_type"),
    ("anonymous int", _mod(allow_anonymous=1), "allow_anonymous", "bad_type"),
    ("client_keys string", _mod(client_keys="abc"), "client_keys", "bad_type"),
    ("client key empty", _mod(client_keys=["ok-key", ""]), "client_keys[1]", "bad_value"),
    ("client key blank", _mod(client_keys=["  "]), "client_keys[0]", "bad_value"),
    ("client key number", _mod(client_keys=[123]), "client_keys[0]", "bad_type"),
    (
        "env missing",
        _prov(openai={"api_key": "${NOPE_KEY}"}),
        "providers.openai.api_key",
        "env_missing",
    ),
    ("env missing in list", _mod(client_keys=["${NOPE_KEY}"]), "client_keys[0]", "env_missing"),
    ("unterminated reference", _mod(prefix="/${V"), "prefix", "bad_interpolation"),
    ("malformed reference", _mod(prefix="/${1V}"), "prefix", "bad_interpolation"),
    (
        "default_provider unknown",
        _mod(default_provider="openai"),
        "default_provider",
        "bad_default_provider",
    ),
    ("default_provider not str", _mod(default_provider=1), "default_provider", "bad_type"),
    (
        "authenticate no module",
        _mod(authenticate="no_such_mod_zz.auth:check"),
        "authenticate",
        "bad_authenticate",
    ),
    (
        "authenticate no attr",
        _mod(authenticate="os.path:no_such_fn"),
        "authenticate",
        "bad_authenticate",
    ),
    ("authenticate not callable", _mod(authenticate="os:sep"), "authenticate", "bad_authenticate"),
    (
        "authenticate bad syntax",
        _mod(authenticate="not a path"),
        "authenticate",
        "bad_authenticate",
    ),
    ("authenticate no attr part", _mod(authenticate="os:"), "authenticate", "bad_authenticate"),
    ("authenticate wrong type", _mod(authenticate=42), "authenticate", "bad_type"),
    ("prefix without slash", _mod(prefix="v1"), "prefix", "bad_prefix"),
    ("prefix trailing slash", _mod(prefix="/v1/"), "prefix", "bad_prefix"),
    ("prefix root", _mod(prefix="/"), "prefix", "bad_prefix"),
    ("prefix space", _mod(prefix="/v 1"), "prefix", "bad_prefix"),
    ("prefix not str", _mod(prefix=1), "prefix", "bad_type"),
    # timeouts.first_byte
    ("first_byte zero", _mod(timeouts={"first_byte": 0}), "timeouts.first_byte", "bad_value"),
    ("first_byte negative", _mod(timeouts={"first_byte": -5}), "timeouts.first_byte", "bad_value"),
    (
        "first_byte inf",
        _mod(timeouts={"first_byte": float("inf")}),
        "timeouts.first_byte",
        "bad_value",
    ),
    (
        "first_byte nan",
        _mod(timeouts={"first_byte": float("nan")}),
        "timeouts.first_byte",
        "bad_value",
    ),
    ("first_byte string", _mod(timeouts={"first_byte": "30"}), "timeouts.first_byte", "bad_type"),
    ("first_byte bool", _mod(timeouts={"first_byte": True}), "timeouts.first_byte", "bad_type"),
    ("first_byte typo", _mod(timeouts={"first_bite": 30}), "timeouts.first_bite", "unknown_key"),
    # breaker
    ("breaker not a table", _mod(breaker=5), "breaker", "bad_type"),
    ("breaker typo", _breaker(open_fro=3), "breaker.open_fro", "unknown_key"),
    (
        "consecutive_failures zero",
        _breaker(consecutive_failures=0),
        "breaker.consecutive_failures",
        "bad_value",
    ),
    (
        "consecutive_failures float",
        _breaker(consecutive_failures=2.0),
        "breaker.consecutive_failures",
        "bad_type",
    ),
    (
        "consecutive_failures string",
        _breaker(consecutive_failures="5"),
        "breaker.consecutive_failures",
        "bad_type",
    ),
    ("failure_rate zero", _breaker(failure_rate=0), "breaker.failure_rate", "bad_value"),
    ("failure_rate above 1", _breaker(failure_rate=1.01), "breaker.failure_rate", "bad_value"),
    ("failure_rate percent", _breaker(failure_rate=50), "breaker.failure_rate", "bad_value"),
    ("failure_rate negative", _breaker(failure_rate=-0.5), "breaker.failure_rate", "bad_value"),
    (
        "failure_rate nan",
        _breaker(failure_rate=float("nan")),
        "breaker.failure_rate",
        "bad_value",
    ),
    ("failure_rate string", _breaker(failure_rate="0.5"), "breaker.failure_rate", "bad_type"),
    ("min_requests zero", _breaker(min_requests=0), "breaker.min_requests", "bad_value"),
    ("min_requests float", _breaker(min_requests=10.5), "breaker.min_requests", "bad_type"),
    ("window zero", _breaker(window=0), "breaker.window", "bad_value"),
    ("window negative", _breaker(window=-60), "breaker.window", "bad_value"),
    ("window inf", _breaker(window=float("inf")), "breaker.window", "bad_value"),
    ("window string", _breaker(window="60s"), "breaker.window", "bad_type"),
    ("open_for zero", _breaker(open_for=0), "breaker.open_for", "bad_value"),
    ("open_for bool", _breaker(open_for=False), "breaker.open_for", "bad_type"),
    (
        "half_open_probes zero",
        _breaker(half_open_probes=0),
        "breaker.half_open_probes",
        "bad_value",
    ),
    (
        "half_open_probes float",
        _breaker(half_open_probes=1.5),
        "breaker.half_open_probes",
        "bad_type",
    ),
    # state
    ("state not a table", _mod(state="redis"), "state", "bad_type"),
    ("state typo", _state(key_prefx="x:"), "state.key_prefx", "unknown_key"),
    ("backend unknown", _state(backend="postgres"), "state.backend", "bad_value"),
    ("backend wrong case", _state(backend="Redis", url="redis://h"), "state.backend", "bad_value"),
    ("backend not a string", _state(backend=1), "state.backend", "bad_type"),
    ("redis without url", _state(backend="redis"), "state.url", "bad_value"),
    ("redis with empty url", _state(backend="redis", url=""), "state.url", "bad_value"),
    ("url http", _state(url="http://h:6379"), "state.url", "bad_value"),
    ("url without scheme", _state(url="localhost:6379"), "state.url", "bad_value"),
    ("url scheme case", _state(url="REDIS://h"), "state.url", "bad_value"),
    ("url with a space", _state(url="redis://h 1:6379"), "state.url", "bad_value"),
    ("url bad port", _state(url="redis://h:port/0"), "state.url", "bad_value"),
    ("url bad ipv6", _state(url="redis://[::1/0"), "state.url", "bad_value"),
    ("unix url without path", _state(url="unix://"), "state.url", "bad_value"),
    ("url not a string", _state(url=6379), "state.url", "bad_type"),
    ("url a list", _state(url=["redis://h"]), "state.url", "bad_type"),
    ("url env missing", _state(url="${NOPE_REDIS_URL}"), "state.url", "env_missing"),
    (
        "url checked with memory backend",
        _state(backend="memory", url="http://h"),
        "state.url",
        "bad_value",
    ),
    ("state timeout zero", _state(timeout=0), "state.timeout", "bad_value"),
    ("state timeout negative", _state(timeout=-0.1), "state.timeout", "bad_value"),
    ("state timeout string", _state(timeout="0.1"), "state.timeout", "bad_type"),
    ("retry_interval zero", _state(retry_interval=0), "state.retry_interval", "bad_value"),
    (
        "retry_interval inf",
        _state(retry_interval=float("inf")),
        "state.retry_interval",
        "bad_value",
    ),
    ("retry_interval bool", _state(retry_interval=True), "state.retry_interval", "bad_type"),
    ("key_prefix empty", _state(key_prefix=""), "state.key_prefix", "bad_value"),
    ("key_prefix blank", _state(key_prefix="  "), "state.key_prefix", "bad_value"),
    ("key_prefix not a string", _state(key_prefix=1), "state.key_prefix", "bad_type"),
    # targets: weight
    ("weight zero", _weight(0), "models.m[0].weight", "bad_value"),
    ("weight negative", _weight(-1), "models.m[0].weight", "bad_value"),
    ("weight inf", _weight(float("inf")), "models.m[0].weight", "bad_value"),
    ("weight nan", _weight(float("nan")), "models.m[0].weight", "bad_value"),
    ("weight string", _weight("3"), "models.m[0].weight", "bad_type"),
    ("weight bool", _weight(True), "models.m[0].weight", "bad_type"),
    (
        "weight typo",
        _mod(models={"m": [{"target": "local/x", "wieght": 2}]}),
        "models.m[0].wieght",
        "unknown_key",
    ),
    (
        "weight in single-target table",
        _mod(models={"m": {"targets": {"target": "local/x", "weight": 0}}}),
        "models.m.targets.weight",
        "bad_value",
    ),
    # aliases: routing and hedge_after
    ("routing unknown", _alias(routing="fastest"), "models.m.routing", "bad_value"),
    ("routing typo", _alias(routing="latncy"), "models.m.routing", "bad_value"),
    ("routing wrong case", _alias(routing="Weighted"), "models.m.routing", "bad_value"),
    ("routing not a string", _alias(routing=1), "models.m.routing", "bad_type"),
    ("routing a list", _alias(routing=["latency"]), "models.m.routing", "bad_type"),
    ("alias option typo", _alias(hedge_afer=1), "models.m.hedge_afer", "unknown_key"),
    ("alias routing typo key", _alias(routng="latency"), "models.m.routng", "unknown_key"),
    ("hedge_after zero", _alias(hedge_after=0), "models.m.hedge_after", "bad_value"),
    ("hedge_after negative", _alias(hedge_after=-0.5), "models.m.hedge_after", "bad_value"),
    ("hedge_after inf", _alias(hedge_after=float("inf")), "models.m.hedge_after", "bad_value"),
    ("hedge_after nan", _alias(hedge_after=float("nan")), "models.m.hedge_after", "bad_value"),
    ("hedge_after p99", _alias(hedge_after="p99"), "models.m.hedge_after", "bad_value"),
    ("hedge_after wrong case", _alias(hedge_after="P95"), "models.m.hedge_after", "bad_value"),
    ("hedge_after quoted number", _alias(hedge_after="0.5"), "models.m.hedge_after", "bad_value"),
    ("hedge_after empty", _alias(hedge_after=""), "models.m.hedge_after", "bad_value"),
    ("hedge_after bool", _alias(hedge_after=True), "models.m.hedge_after", "bad_type"),
    ("hedge_after list", _alias(hedge_after=[0.5]), "models.m.hedge_after", "bad_type"),
    # prices: a target's price, the prices table (see also the tests at the end)
    ("price not a table", _mod(models={"m": [{"target": "local/x", "price": 2.5}]}),
     "models.m[0].price", "bad_price"),
    ("price without output", _mod(models={"m": [{"target": "local/x", "price": {"input": 1}}]}),
     "models.m[0].price.output", "bad_price"),
    ("price negative", _mod(models={"m": [{"target": "local/x",
                                            "price": {"input": -1, "output": 1}}]}),
     "models.m[0].price.input", "bad_price"),
    ("price a string", _mod(models={"m": [{"target": "local/x",
                                            "price": {"input": "1", "output": 1}}]}),
     "models.m[0].price.input", "bad_price"),
    ("price typo", _mod(models={"m": [{"target": "local/x",
                                        "price": {"input": 1, "ouptut": 1}}]}),
     "models.m[0].price.ouptut", "unknown_key"),
    ("prices not a table", _mod(prices=["gpt-4o"]), "prices", "bad_type"),
    ("prices entry inf", _mod(prices={"gpt-4o": {"input": float("inf"), "output": 1}}),
     "prices.gpt-4o.input", "bad_price"),
    ("prices entry bool", _mod(prices={"gpt-4o": {"input": 1, "output": True}}),
     "prices.gpt-4o.output", "bad_price"),
    ("prices empty key", _mod(prices={"": {"input": 1, "output": 1}}), "prices", "bad_price"),
    # aliases: cost limits and resume
    ("max_price_ratio zero", _alias(max_price_ratio=0), "models.m.max_price_ratio", "bad_value"),
    ("max_price_ratio string", _alias(max_price_ratio="2"), "models.m.max_price_ratio",
     "bad_type"),
    ("max_cost negative", _alias(max_cost=-0.1), "models.m.max_cost", "bad_value"),
    ("max_cost nan", _alias(max_cost=float("nan")), "models.m.max_cost", "bad_value"),
    ("max_cost bool", _alias(max_cost=True), "models.m.max_cost", "bad_type"),
    ("resume string", _alias(resume="yes"), "models.m.resume", "bad_type"),
    ("resume tokens zero", _alias(resume={"max_sent_tokens": 0}),
     "models.m.resume.max_sent_tokens", "bad_value"),
    ("resume tokens float", _alias(resume={"max_sent_tokens": 2.5}),
     "models.m.resume.max_sent_tokens", "bad_type"),
    ("resume typo", _alias(resume={"max_tokens": 10}), "models.m.resume.max_tokens",
     "unknown_key"),
    # top level: attempts detail and quota reserve
    ("attempts_detail string", _mod(attempts_detail="true"), "attempts_detail", "bad_type"),
    ("quota_reserve negative", _mod(quota_reserve=-0.1), "quota_reserve", "bad_value"),
    ("quota_reserve one", _mod(quota_reserve=1), "quota_reserve", "bad_value"),
    ("quota_reserve percent", _mod(quota_reserve=5), "quota_reserve", "bad_value"),
    ("quota_reserve string", _mod(quota_reserve="5%"), "quota_reserve", "bad_type"),
]


@pytest.mark.parametrize(("label", "make", "path", "code"), RULES, ids=[r[0] for r in RULES])
def test_rule(label: str, make: Callable[[], dict[str, Any]], path: str, code: str) -> None:
    problems = problems_of(make())
    assert has(problems, path, code), [str(p) for p in problems]
    for problem in problems:
        assert problem.code in PROBLEM_CODES
        assert problem.severity == "error"
        assert problem.message and problem.fix


def test_rules_cover_every_problem_code() -> None:
    # kind_not_implemented is retired (every kind is routed now) but keeps its place
    retired = {"kind_not_implemented"}
    covered = {code for *_, code in RULES} | {"no_inbound_auth", "bad_file", "bad_toml"}
    covered |= {"bad_catalog"} | retired  # bad_catalog: tests/providers/test_catalog_bypass.py
    covered |= {"bad_status_page"}  # tests/status/test_status_config.py
    covered |= {"bad_limits"}  # tests/limits/test_limits_unit.py
    covered |= {"unknown_price"}  # a warning: test_unknown_price_is_a_warning_on_the_target
    assert covered == set(PROBLEM_CODES)


def test_problem_codes_are_stable_snake_case() -> None:
    assert len(PROBLEM_CODES) == len(set(PROBLEM_CODES))
    assert all(c.isidentifier() and c == c.lower() for c in PROBLEM_CODES)
    # Append-only: the first codes keep their positions.
    assert PROBLEM_CODES[:4] == (
        "no_providers",
        "unknown_key",
        "unknown_provider",
        "missing_api_key",
    )


@pytest.mark.parametrize(
    ("data", "path", "expected_fix"),
    [
        (valid(prefx="/v1"), "prefx", "did you mean 'prefix'?"),
        (valid(Providers={}), "Providers", "did you mean 'providers'?"),
        (valid(timeouts={"dedline": 3}), "timeouts.dedline", "did you mean 'deadline'?"),
        (valid(models={"m": ["opnrouter/x"]}), "models.m[0]", "did you mean 'openrouter'?"),
        (valid(default_provider="locl"), "default_provider", "did you mean 'local'?"),
        (valid(breker={}), "breker", "did you mean 'breaker'?"),
        (valid(stat={}), "stat", "did you mean 'state'?"),
        (valid(timeouts={"first_bite": 1}), "timeouts.first_bite", "did you mean 'first_byte'?"),
        (valid(breaker={"open_fro": 1}), "breaker.open_fro", "did you mean 'open_for'?"),
        (
            valid(breaker={"half_open_probe": 1}),
            "breaker.half_open_probe",
            "did you mean 'half_open_probes'?",
        ),
        (valid(state={"backnd": "redis"}), "state.backnd", "did you mean 'backend'?"),
        (valid(state={"backend": "redsi"}), "state.backend", "did you mean 'redis'?"),
        (valid(state={"backend": "Memory"}), "state.backend", "did you mean 'memory'?"),
        (
            valid(models={"m": [{"target": "local/x", "wieght": 1}]}),
            "models.m[0].wieght",
            "did you mean 'weight'?",
        ),
        (_alias(routng="latency")(), "models.m.routng", "did you mean 'routing'?"),
        (_alias(hedge_afer=1)(), "models.m.hedge_afer", "did you mean 'hedge_after'?"),
        (_alias(routing="latncy")(), "models.m.routing", "did you mean 'latency'?"),
        (_alias(routing="Weighted")(), "models.m.routing", "did you mean 'weighted'?"),
        (_alias(hedge_after="P95")(), "models.m.hedge_after", "did you mean 'p95'?"),
        (
            valid(providers={"groqq": {"api_key": "k"}}, models=None),
            "providers.groqq",
            "did you mean 'groq'?",
        ),
    ],
)
def test_did_you_mean(data: dict[str, Any], path: str, expected_fix: str) -> None:
    problems = [p for p in problems_of(data) if p.path == path]
    assert problems, "no problem at the expected path"
    assert expected_fix in problems[0].fix


def test_missing_providers_do_not_flood_every_target() -> None:
    data = valid(providers=None, models={"a": ["x/1", "y/2"]}, default_provider="x")
    assert [p.code for p in problems_of(data)] == ["no_providers"]


def test_unknown_provider_names_the_well_known_ones() -> None:
    (problem,) = problems_of(valid(providers={"acme": {}}, models=None))
    assert problem.code == "unknown_provider"
    for name in KNOWN_PROVIDERS:
        assert name in problem.message + problem.fix


def test_missing_api_key_fix_names_the_env_var() -> None:
    problems = problems_of(valid(providers={"deepseek": {}}, models=None))
    (problem,) = [p for p in problems if p.code == "missing_api_key"]
    assert 'api_key = "${DEEPSEEK_API_KEY}"' in problem.fix


def test_native_kinds_are_accepted() -> None:
    config = Config.from_dict(
        valid(
            providers={
                "anthropic": {"api_key": "k"},
                "gemini": {"api_key": "k"},
                "g2": {"kind": "gemini", "base_url": "https://g.example/v1beta"},
                "az": {"kind": "azure", "base_url": "https://r.openai.azure.com",
                       "api_key": "k", "api_version": "2024-10-21", "deployment": "gpt4o"},
                "openrouter": {"api_key": "k", "bypass": True},
            },
            models=None,
        ),
        env={},
    )
    kinds = {name: p.kind for name, p in config.providers.items()}
    assert kinds == {"anthropic": "anthropic", "gemini": "gemini", "g2": "gemini",
                     "az": "azure", "openrouter": "openai"}
    assert config.providers["az"].api_version == "2024-10-21"
    assert config.providers["az"].deployment == "gpt4o"
    assert config.providers["openrouter"].bypass is True
    assert config.providers["anthropic"].bypass is False


def test_anthropic_through_its_openai_compatible_endpoint_is_accepted() -> None:
    config = Config.from_dict(
        valid(
            providers={
                "anthropic": {
                    "kind": "openai",
                    "base_url": "https://api.anthropic.com/v1",
                    "api_key": "k",
                }
            },
            models=None,
        ),
        env={},
    )
    assert config.providers["anthropic"].kind == "openai"


def test_env_missing_message_wording() -> None:
    problems = problems_of(
        valid(providers={"openai": {"api_key": "${OPENAI_API_KEY}"}}, models=None)
    )
    assert problems == (
        ConfigProblem(
            "providers.openai.api_key",
            "environment variable OPENAI_API_KEY is not set",
            "export OPENAI_API_KEY=… or write the value in the config",
            "env_missing",
        ),
    )  # and no second "missing_api_key" problem for the same value


def test_authenticate_module_that_raises(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "badgr_broken_auth_mod.py").write_text("raise RuntimeError('boom')\n")
    (tmp_path / "badgr_dep_auth_mod.py").write_text("import no_such_dependency_zz\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (raised,) = problems_of(valid(authenticate="badgr_broken_auth_mod:check"))
    assert raised.code == "bad_authenticate"
    assert "RuntimeError" in raised.message
    (dep,) = problems_of(valid(authenticate="badgr_dep_auth_mod:check"))
    assert dep.code == "bad_authenticate"
    assert "no_such_dependency_zz" in dep.message


# --------------------------------------------------------------------------- routing and state


def test_new_dataclass_defaults() -> None:
    assert Timeouts().first_byte == 120.0
    assert Timeouts().read == 120.0
    assert Timeouts(1.0, 2.0, 3.0) == Timeouts(connect=1.0, read=2.0, deadline=3.0)  # positional
    assert BreakerPolicy() == BreakerPolicy(5, 0.5, 10, 60.0, 30.0, 1)
    assert StateConfig() == StateConfig("memory", None, 0.1, 5.0, "badgr:")
    assert TargetConfig("p", "m").weight is None
    assert TargetConfig("p", "m", 8) == TargetConfig("p", "m", context_window=8, weight=None)
    alias = AliasConfig("a", (TargetConfig("p", "m"),))
    assert (alias.routing, alias.hedge_after) == ("ordered", None)
    assert Config({}, {}).breaker == BreakerPolicy()
    assert Config({}, {}).state == StateConfig()
    for frozen in (BreakerPolicy(), StateConfig(), alias, Timeouts()):
        with pytest.raises(dataclasses.FrozenInstanceError):
            frozen.x = 1  # type: ignore[attr-defined]


VALID_NEW: list[tuple[str, Callable[[], dict[str, Any]], Callable[[Config], Any], Any]] = [
    # timeouts.first_byte
    ("first_byte int", _mod(timeouts={"first_byte": 30}), lambda c: c.timeouts.first_byte, 30.0),
    (
        "first_byte apart from read",
        _mod(timeouts={"first_byte": 0.5, "read": 600}),
        lambda c: (c.timeouts.first_byte, c.timeouts.read),
        (0.5, 600.0),
    ),
    # breaker
    (
        "consecutive_failures 1",
        _breaker(consecutive_failures=1),
        lambda c: c.breaker.consecutive_failures,
        1,
    ),
    ("failure_rate 1", _breaker(failure_rate=1), lambda c: c.breaker.failure_rate, 1.0),
    ("failure_rate small", _breaker(failure_rate=0.01), lambda c: c.breaker.failure_rate, 0.01),
    ("min_requests 1", _breaker(min_requests=1), lambda c: c.breaker.min_requests, 1),
    ("window fraction", _breaker(window=0.5), lambda c: c.breaker.window, 0.5),
    ("open_for int", _breaker(open_for=120), lambda c: c.breaker.open_for, 120.0),
    ("half_open_probes 3", _breaker(half_open_probes=3), lambda c: c.breaker.half_open_probes, 3),
    (
        "breaker keys default one by one",
        _breaker(window=10),
        lambda c: c.breaker,
        BreakerPolicy(window=10.0),
    ),
    ("breaker empty table", _breaker(), lambda c: c.breaker, BreakerPolicy()),
    # state
    ("state empty table", _state(), lambda c: c.state, StateConfig()),
    ("backend memory", _state(backend="memory"), lambda c: c.state, StateConfig()),
    (
        "backend redis",
        _state(backend="redis", url="redis://h:6379/0"),
        lambda c: (c.state.backend, c.state.url),
        ("redis", Secret("redis://h:6379/0")),
    ),
    (
        "rediss url",
        _state(backend="redis", url="rediss://:pw@h:6380/1"),
        lambda c: c.state.url.reveal(),
        "rediss://:pw@h:6380/1",
    ),
    (
        "unix url",
        _state(backend="redis", url="unix:///run/redis.sock?db=1"),
        lambda c: c.state.url.reveal(),
        "unix:///run/redis.sock?db=1",
    ),
    (
        "url without host means the client's default",
        _state(url="redis://"),
        lambda c: c.state.backend,
        "redis",
    ),
    ("url implies redis", _state(url="redis://h"), lambda c: c.state.backend, "redis"),
    ("empty url is no url", _state(url=""), lambda c: c.state, StateConfig()),
    (
        "memory backend keeps a given url",
        _state(backend="memory", url="redis://h"),
        lambda c: (c.state.backend, c.state.url),
        ("memory", Secret("redis://h")),
    ),
    (
        "url given as a Secret",
        _state(url=Secret("redis://h/2")),
        lambda c: c.state.url,
        Secret("redis://h/2"),
    ),
    ("state timeout", _state(timeout=0.02), lambda c: c.state.timeout, 0.02),
    ("retry_interval int", _state(retry_interval=30), lambda c: c.state.retry_interval, 30.0),
    ("key_prefix", _state(key_prefix="app:badgr:"), lambda c: c.state.key_prefix, "app:badgr:"),
    # weight
    ("weight int", _weight(3), lambda c: c.models["m"].targets[0].weight, 3.0),
    ("weight fraction", _weight(0.25), lambda c: c.models["m"].targets[0].weight, 0.25),
    ("missing weight is None", _weight(2), lambda c: c.models["m"].targets[1].weight, None),
    (
        "weight with context_window",
        _mod(models={"m": [{"target": "local/x", "weight": 2, "context_window": 8}]}),
        lambda c: c.models["m"].targets[0],
        TargetConfig("local", "x", context_window=8, weight=2.0),
    ),
    # routing
    ("list alias is ordered", _mod(), lambda c: c.models["fast"].routing, "ordered"),
    ("table alias is ordered", _alias(), lambda c: c.models["m"].routing, "ordered"),
    ("weights imply weighted", _weight(2), lambda c: c.models["m"].routing, "weighted"),
    (
        "weight in single-target table implies weighted",
        _mod(models={"m": {"targets": {"target": "local/x", "weight": 1}}}),
        lambda c: c.models["m"].routing,
        "weighted",
    ),
    (
        "explicit routing wins over weights",
        _mod(models={"m": {"targets": [{"target": "local/x", "weight": 2}], "routing": "ordered"}}),
        lambda c: (c.models["m"].routing, c.models["m"].targets[0].weight),
        ("ordered", 2.0),
    ),
    ("routing latency", _alias(routing="latency"), lambda c: c.models["m"].routing, "latency"),
    (
        "weighted without weights",
        _alias(routing="weighted"),
        lambda c: c.models["m"].routing,
        "weighted",
    ),
    ("routing ordered", _alias(routing="ordered"), lambda c: c.models["m"].routing, "ordered"),
    # hedge_after
    ("no hedging by default", _alias(), lambda c: c.models["m"].hedge_after, None),
    ("hedge_after seconds", _alias(hedge_after=0.5), lambda c: c.models["m"].hedge_after, 0.5),
    ("hedge_after int", _alias(hedge_after=2), lambda c: c.models["m"].hedge_after, 2.0),
    ("hedge_after p95", _alias(hedge_after="p95"), lambda c: c.models["m"].hedge_after, "p95"),
    (
        "hedge_after with latency routing",
        _alias(routing="latency", hedge_after="p95"),
        lambda c: (c.models["m"].routing, c.models["m"].hedge_after),
        ("latency", "p95"),
    ),
]


@pytest.mark.parametrize(
    ("label", "make", "get", "expected"), VALID_NEW, ids=[v[0] for v in VALID_NEW]
)
def test_new_keys_valid_values(
    label: str, make: Callable[[], dict[str, Any]], get: Callable[[Config], Any], expected: Any
) -> None:
    config = Config.from_dict(make(), env={})
    value = get(config)
    assert value == expected
    assert type(value) is type(expected)  # ints given for float fields come back as floats
    assert config.warnings == ()


def test_hedge_after_int_is_stored_as_float() -> None:
    config = Config.from_dict(_alias(hedge_after=2)(), env={})
    assert isinstance(config.models["m"].hedge_after, float)


def test_optional_redis_through_an_empty_default() -> None:
    data = valid(state={"url": "${REDIS_URL:-}"})
    assert Config.from_dict(data, env={}).state == StateConfig()
    on = Config.from_dict(data, env={"REDIS_URL": "redis://h:6379/0"}).state
    assert (on.backend, on.url) == ("redis", Secret("redis://h:6379/0"))


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "failure_rate must be a finite number greater than 0 and at most 1, got 0"),
        (1.5, "failure_rate must be a finite number greater than 0 and at most 1, got 1.5"),
    ],
)
def test_failure_rate_message(value: float, message: str) -> None:
    (problem,) = problems_of(valid(breaker={"failure_rate": value}))
    assert problem == ConfigProblem(
        "breaker.failure_rate", message, "e.g. failure_rate = 0.5", "bad_value"
    )


def test_redis_backend_requires_a_url_wording() -> None:
    (problem,) = problems_of(valid(state={"backend": "redis"}))
    assert (problem.path, problem.code) == ("state.url", "bad_value")
    assert problem.message == 'url is required when backend is "redis"'
    assert "BADGR_REDIS_URL" in problem.fix


def test_invalid_url_is_not_also_reported_as_missing() -> None:
    problems = problems_of(valid(state={"url": "http://h"}))
    assert [(p.path, p.code) for p in problems] == [("state.url", "bad_value")]
    assert "redis://, rediss:// or unix://" in problems[0].message
    env_missing = problems_of(valid(state={"backend": "redis", "url": "${NOPE_REDIS_URL}"}))
    assert [(p.path, p.code) for p in env_missing] == [("state.url", "env_missing")]


def test_new_keys_report_every_problem_at_once() -> None:
    data = valid(
        models={
            "m": {
                "targets": [
                    {"target": "local/x", "weight": 0, "context_window": 0},
                    {"target": "nowhere/y", "weight": -1},
                ],
                "routing": "random",
                "hedge_after": "p50",
                "hedge": 1,
            },
        },
        timeouts={"first_byte": 0},
        breaker={"failure_rate": 2, "min_requests": 0, "half_open_probes": 0.5},
        state={"backend": "redis", "timeout": 0, "retry_interval": -1, "key_prefix": ""},
    )
    assert {(p.path, p.code) for p in problems_of(data)} == {
        ("models.m.hedge", "unknown_key"),
        ("models.m.routing", "bad_value"),
        ("models.m.hedge_after", "bad_value"),
        ("models.m.targets[0].weight", "bad_value"),
        ("models.m.targets[0].context_window", "bad_value"),
        ("models.m.targets[1].weight", "bad_value"),
        ("timeouts.first_byte", "bad_value"),
        ("breaker.failure_rate", "bad_value"),
        ("breaker.min_requests", "bad_value"),
        ("breaker.half_open_probes", "bad_type"),
        ("state.url", "bad_value"),
        ("state.timeout", "bad_value"),
        ("state.retry_interval", "bad_value"),
        ("state.key_prefix", "bad_value"),
    }


# --------------------------------------------------------------------------- all at once


def test_every_problem_is_reported_at_once() -> None:
    data = {
        "providers": {
            "openai": {},
            "acme": {"api_key": "k"},
            "x": {"kind": "opnai", "base_url": "ftp://h"},
        },
        "models": {"empty": [], "bad": ["nowhere/model", "noslash"]},
        "timeouts": {"read": "120"},
        "retry": {"attempts_per_target": 0},
        "prefix": "v1/",
        "default_provider": "zzz",
        "bogus": True,
        "allow_anonymous": True,
    }
    with pytest.raises(ConfigError) as info:
        Config.from_dict(data, env={})
    error = info.value
    codes = {p.code for p in error.problems}
    assert len(codes) >= 10, codes
    assert len(error.problems) >= 12
    lines = str(error).splitlines()
    assert len(lines) == len(error.problems) + 1
    for problem in error.problems:
        assert f"{problem.path}: {problem.message} (fix: {problem.fix})" in lines
    assert isinstance(error, ValueError)


def test_warning_does_not_raise_and_is_kept() -> None:
    config = Config.from_dict(valid(allow_anonymous=None), env={})
    (warning,) = config.warnings
    assert warning.code == "no_inbound_auth"
    assert warning.severity == "warning"
    assert "401" in warning.message
    for silenced in (
        valid(allow_anonymous=None, client_keys=["key"]),
        valid(allow_anonymous=None, authenticate=lambda request: True),
        valid(allow_anonymous=True),
    ):
        assert Config.from_dict(silenced, env={}).warnings == ()


def test_error_carries_only_errors_and_keeps_warnings_apart() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_dict(valid(allow_anonymous=None, prefix="v1"), env={})
    assert [p.code for p in info.value.problems] == ["bad_prefix"]
    assert [p.code for p in info.value.warnings] == ["no_inbound_auth"]
    assert "no_inbound_auth" not in str(info.value) and "401" not in str(info.value)


def test_root_must_be_a_mapping() -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_dict(["not", "a", "dict"], env={})  # type: ignore[arg-type]
    assert has(info.value.problems, "config", "bad_type")


# --------------------------------------------------------------------------- interpolation


@pytest.mark.parametrize(
    ("raw", "env", "expected"),
    [
        ("${A}", {"A": "alpha"}, "alpha"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": ""}, "fallback"),
        ("${A:-fallback}", {"A": "set"}, "set"),
        ("${A:-}", {}, ""),
        ("${A:-with spaces/and:colons}", {}, "with spaces/and:colons"),
        ("${A}", {"A": ""}, ""),
        ("$$", {}, "$"),
        ("price $$5", {}, "price $5"),
        ("$${A}", {"A": "no"}, "${A}"),
        ("$$$${A}", {"A": "x"}, "$${A}"),
        ("$$${A}", {"A": "x"}, "$x"),
        ("lone $ sign", {}, "lone $ sign"),
        ("${A}", {"A": "${B}"}, "${B}"),  # substituted values are not expanded again
        ("no references", {}, "no references"),
    ],
)
def test_interpolation(raw: str, env: dict[str, str], expected: str) -> None:
    data = valid(providers={"local": {"base_url": "http://h/v1", "headers": {"X-V": raw}}})
    config = Config.from_dict(data, env=env)
    assert config.providers["local"].headers["X-V"] == expected


def test_interpolation_reaches_nested_lists_and_tables() -> None:
    env = {"P": "local", "M": "llama3", "H": "h.example", "K": FAKE_CLIENT_KEY, "PFX": "/llm"}
    data = {
        "providers": {
            "local": {"base_url": "http://${H}:8001/v1", "models": ["${M}"], "api_key": "${K}"}
        },
        "models": {"m": ["${P}/${M}", {"target": "${P}/other", "context_window": 8}]},
        "client_keys": ["${K}"],
        "prefix": "${PFX:-/v1}",
    }
    config = Config.from_dict(data, env=env)
    assert config.providers["local"].base_url == "http://h.example:8001/v1"
    assert config.providers["local"].models == ("llama3",)
    assert config.models["m"].targets == (
        TargetConfig("local", "llama3"),
        TargetConfig("local", "other", 8),
    )
    assert config.client_keys == (Secret(FAKE_CLIENT_KEY),)
    assert config.prefix == "/llm"
    assert config.providers["local"].api_key == FAKE_CLIENT_KEY


def test_interpolation_uses_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BADGR_TEST_ROUTER_KEY", FAKE_KEY)
    config = Config.from_dict(
        {"providers": {"openrouter": {"api_key": "${BADGR_TEST_ROUTER_KEY}"}}}
    )
    assert config.providers["openrouter"].api_key == FAKE_KEY


def test_non_strings_are_not_interpolated() -> None:
    config = Config.from_dict(valid(max_body_bytes=4096, allow_anonymous=True), env={})
    assert config.max_body_bytes == 4096


def test_every_missing_variable_is_reported() -> None:
    data = valid(
        providers={"openai": {"api_key": "${K1}"}, "local": {"base_url": "http://${HOST}/v1"}},
        client_keys=["${K2}", "ok"],
    )
    problems = problems_of(data)
    assert {(p.path, p.code) for p in problems} == {
        ("providers.openai.api_key", "env_missing"),
        ("providers.local.base_url", "env_missing"),
        ("client_keys[0]", "env_missing"),
    }


# --------------------------------------------------------------------------- TOML

TOML = """
client_keys = ["${BADGR_CLIENT_KEY}"]
default_provider = "openrouter"
prefix = "/v1"

[providers.openrouter]
api_key = "${OPENROUTER_API_KEY}"

[providers.local]
kind = "openai"
base_url = "http://127.0.0.1:8001/v1"
headers = { "X-Title" = "app" }
models = ["llama3"]

[models]
claude-sonnet = ["openrouter/anthropic/claude-sonnet-4.5", "local/llama3"]
big = [{ target = "openrouter/openai/gpt-4.1", context_window = 1000000 }, "local/llama3"]

[models.also-ok]
targets = ["local/llama3"]

[timeouts]
connect = 2
read = 60.5

[retry]
attempts_per_target = 3

[cooldowns]
quota = 120
"""


def test_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "badgr.toml"
    path.write_text(TOML, encoding="utf-8")
    env = {"OPENROUTER_API_KEY": FAKE_KEY, "BADGR_CLIENT_KEY": FAKE_CLIENT_KEY}
    for source in (path, str(path)):
        config = Config.from_toml(source, env=env)
        assert config.providers["openrouter"].api_key == FAKE_KEY
        assert config.providers["openrouter"].openrouter is True
        assert dict(config.providers["local"].headers) == {"X-Title": "app"}
        assert config.models["big"].targets[0] == TargetConfig(
            "openrouter", "openai/gpt-4.1", 1000000
        )
        assert config.models["also-ok"].targets == (TargetConfig("local", "llama3"),)
        assert config.timeouts == Timeouts(connect=2.0, read=60.5)
        assert config.retry.attempts_per_target == 3
        assert config.cooldowns.quota == 120.0
        assert config.client_keys == (Secret(FAKE_CLIENT_KEY),)


TOML_ROUTING_AND_STATE = """
allow_anonymous = true

[providers.local]
base_url = "http://127.0.0.1:8001/v1"

[models]
spread = [{ target = "local/a", weight = 3 }, { target = "local/b", weight = 1.5 }, "local/c"]

[models.quick]
targets = ["local/a", "local/b"]
routing = "latency"
hedge_after = 0.75

[models.tail]
targets = ["local/a", "local/b"]
hedge_after = "p95"

[timeouts]
first_byte = 20
read = 300

[breaker]
consecutive_failures = 3
failure_rate = 0.4
min_requests = 20
window = 120
open_for = 45
half_open_probes = 2

[state]
backend = "redis"
url = "${REDIS_URL}"
timeout = 0.05
retry_interval = 10
key_prefix = "myapp:badgr:"
"""


def test_from_toml_routing_breaker_and_state(tmp_path: Path) -> None:
    path = tmp_path / "badgr.toml"
    path.write_text(TOML_ROUTING_AND_STATE, encoding="utf-8")
    config = Config.from_toml(path, env={"REDIS_URL": FAKE_REDIS_URL})
    assert config.models["spread"] == AliasConfig(
        "spread",
        (
            TargetConfig("local", "a", weight=3.0),
            TargetConfig("local", "b", weight=1.5),
            TargetConfig("local", "c"),
        ),
        routing="weighted",
    )
    assert config.models["quick"] == AliasConfig(
        "quick",
        (TargetConfig("local", "a"), TargetConfig("local", "b")),
        routing="latency",
        hedge_after=0.75,
    )
    assert (config.models["tail"].routing, config.models["tail"].hedge_after) == ("ordered", "p95")
    assert config.timeouts == Timeouts(connect=5.0, read=300.0, deadline=300.0, first_byte=20.0)
    assert config.breaker == BreakerPolicy(3, 0.4, 20, 120.0, 45.0, 2)
    assert config.state == StateConfig(
        backend="redis",
        url=Secret(FAKE_REDIS_URL),
        timeout=0.05,
        retry_interval=10.0,
        key_prefix="myapp:badgr:",
    )


def test_toml_bad_routing_and_state_values(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text(
        "allow_anonymous = true\n[providers.ollama]\n"
        '[models.m]\ntargets = [{ target = "ollama/x", weight = 0 }]\nrouting = "fast"\n'
        'hedge_after = "0.5"\n'
        '[breaker]\nfailure_rate = "0.5"\n'
        '[state]\nbackend = "redis"\ntimeout = "0.1"\n'
    )
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path, env={})
    assert {(p.path, p.code) for p in info.value.problems} == {
        ("models.m.targets[0].weight", "bad_value"),
        ("models.m.routing", "bad_value"),
        ("models.m.hedge_after", "bad_value"),
        ("breaker.failure_rate", "bad_type"),
        ("state.url", "bad_value"),
        ("state.timeout", "bad_type"),
    }


def test_toml_number_in_quotes_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('allow_anonymous = true\n[providers.ollama]\n[timeouts]\nread = "120"\n')
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path, env={})
    assert [(p.path, p.code) for p in info.value.problems] == [("timeouts.read", "bad_type")]


def test_toml_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as info:
        Config.from_toml(missing, env={})
    assert [(p.path, p.code) for p in info.value.problems] == [(str(missing), "bad_file")]


def test_toml_syntax_error_does_not_echo_values(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(f"[providers.openai]\napi_key = {FAKE_KEY}\n")
    with pytest.raises(ConfigError) as info:
        Config.from_toml(path, env={})
    (problem,) = info.value.problems
    assert (problem.path, problem.code) == (str(path), "bad_toml")
    assert "line 2" in problem.message
    assert FAKE_KEY not in str(info.value)


# --------------------------------------------------------------------------- environment


def test_from_env_builds_well_known_providers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no ./badgr.toml here
    env = {"OPENAI_API_KEY": "sk-openai", "GROQ_API_KEY": "gsk", "MISTRAL_API_KEY": ""}
    config = Config.from_env(env)
    assert set(config.providers) == {"openai", "groq"}  # an empty variable does not count
    assert config.providers["openai"].api_key == "sk-openai"
    assert config.providers["groq"].base_url == "https://api.groq.com/openai/v1"
    assert config.default_provider is None  # two providers, none of them openrouter
    assert config.models == {}
    assert [w.code for w in config.warnings] == ["no_inbound_auth"]


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"OPENAI_API_KEY": "a"}, "openai"),
        ({"OPENAI_API_KEY": "a", "OPENROUTER_API_KEY": "b"}, "openrouter"),
        ({"OPENAI_API_KEY": "a", "GROQ_API_KEY": "b"}, None),
        (
            {"OPENAI_API_KEY": "a", "OPENROUTER_API_KEY": "b", "BADGR_DEFAULT_PROVIDER": "openai"},
            "openai",
        ),
    ],
)
def test_from_env_default_provider(
    env: dict[str, str],
    expected: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert Config.from_env(env).default_provider == expected


def test_from_env_overrides(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    env = {
        "OPENROUTER_API_KEY": "k$$${NOT_EXPANDED}",
        "BADGR_CLIENT_KEYS": f" {FAKE_CLIENT_KEY} , second-key,,",
        "BADGR_ALLOW_ANONYMOUS": "Yes",
        "BADGR_PREFIX": "/llm",
    }
    config = Config.from_env(env)
    assert config.providers["openrouter"].api_key == "k$$${NOT_EXPANDED}"
    assert config.client_keys == (Secret(FAKE_CLIENT_KEY), Secret("second-key"))
    assert config.allow_anonymous is True
    assert config.prefix == "/llm"
    assert config.warnings == ()


@pytest.mark.parametrize(
    ("value", "expected"),
    [("1", True), ("true", True), ("YES", True), ("0", False), ("false", False), ("no", False)],
)
def test_from_env_allow_anonymous_values(
    value: str, expected: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config.from_env({"OPENAI_API_KEY": "k", "BADGR_ALLOW_ANONYMOUS": value})
    assert config.allow_anonymous is expected


def test_from_env_bad_values_are_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        Config.from_env(
            {"OPENAI_API_KEY": "k", "BADGR_ALLOW_ANONYMOUS": "maybe", "BADGR_PREFIX": "v1/"}
        )
    assert {(p.path, p.code) for p in info.value.problems} == {
        ("allow_anonymous", "bad_value"),
        ("prefix", "bad_prefix"),
    }


REDIS_FILE = """
allow_anonymous = true
[providers.ollama]
[state]
backend = "memory"
url = "redis://file-host:6379/0"
timeout = 0.5
key_prefix = "app:"
"""


@pytest.mark.parametrize(
    ("file_text", "redis_url", "expected"),
    [
        (None, None, StateConfig()),
        (None, "", StateConfig()),  # set but empty: treated as unset
        (None, FAKE_REDIS_URL, StateConfig("redis", Secret(FAKE_REDIS_URL))),
        (None, "unix:///run/redis.sock", StateConfig("redis", Secret("unix:///run/redis.sock"))),
        (
            None,
            "redis://:pa$${NOT_EXPANDED}@h/0",  # environment values are not interpolated
            StateConfig("redis", Secret("redis://:pa$${NOT_EXPANDED}@h/0")),
        ),
        (
            REDIS_FILE,
            None,
            StateConfig("memory", Secret("redis://file-host:6379/0"), 0.5, 5.0, "app:"),
        ),
        (
            REDIS_FILE,
            "",
            StateConfig("memory", Secret("redis://file-host:6379/0"), 0.5, 5.0, "app:"),
        ),
        # The variable wins over the file's backend and url; the file's other keys still apply.
        (
            REDIS_FILE,
            FAKE_REDIS_URL,
            StateConfig("redis", Secret(FAKE_REDIS_URL), 0.5, 5.0, "app:"),
        ),
        (
            "allow_anonymous = true\n[providers.ollama]\n",
            FAKE_REDIS_URL,
            StateConfig("redis", Secret(FAKE_REDIS_URL)),
        ),
        (
            'allow_anonymous = true\n[providers.ollama]\n[state]\nbackend = "redis"\n',
            "redis://env-host/1",
            StateConfig("redis", Secret("redis://env-host/1")),
        ),
    ],
)
def test_from_env_badgr_redis_url(
    file_text: str | None,
    redis_url: str | None,
    expected: StateConfig,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    env = {"BADGR_ALLOW_ANONYMOUS": "1", "GROQ_API_KEY": "g"}  # GROQ_API_KEY: when no file
    if file_text is not None:
        (tmp_path / "badgr.toml").write_text(file_text)
    if redis_url is not None:
        env["BADGR_REDIS_URL"] = redis_url
    config = Config.from_env(env)
    assert config.state == expected
    assert type(config.state.url) is type(expected.url)


@pytest.mark.parametrize(
    "redis_url",
    [
        f"http://:{FAKE_REDIS_PASSWORD}@h:6379",
        f"{FAKE_REDIS_PASSWORD}@h:6379",
        f"redis://:{FAKE_REDIS_PASSWORD}@h:port/0",
        f"redis://:{FAKE_REDIS_PASSWORD}@h /0",
        "unix://",
    ],
)
def test_from_env_bad_badgr_redis_url(
    redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for file_text in (None, REDIS_FILE):
        if file_text is not None:
            (tmp_path / "badgr.toml").write_text(file_text)
        with pytest.raises(ConfigError) as info:
            Config.from_env({"GROQ_API_KEY": "g", "BADGR_REDIS_URL": redis_url})
        (problem,) = info.value.problems
        assert (problem.path, problem.code) == ("state.url", "bad_value")
        assert "BADGR_REDIS_URL" in problem.message and "BADGR_REDIS_URL" in problem.fix
        rendered = str(info.value) + repr(info.value.problems) + repr(info.value.warnings)
        assert FAKE_REDIS_PASSWORD not in rendered


def test_from_env_without_any_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        Config.from_env({})
    assert [p.code for p in info.value.problems] == ["no_providers"]


def test_from_env_adds_native_kinds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = Config.from_env(
        {"ANTHROPIC_API_KEY": FAKE_KEY, "OPENAI_API_KEY": "k", "GEMINI_API_KEY": "g"}
    )
    assert set(config.providers) == {"openai", "anthropic", "gemini"}
    assert config.providers["anthropic"].kind == "anthropic"
    assert not [w for w in config.warnings if w.code == "kind_not_implemented"]


def test_from_env_loads_badgr_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "elsewhere.toml"
    path.write_text(TOML)
    env = {
        "BADGR_CONFIG": str(path),
        "OPENROUTER_API_KEY": FAKE_KEY,
        "BADGR_CLIENT_KEY": "from-file",
        "BADGR_CLIENT_KEYS": "from-env",
        "BADGR_PREFIX": "/other",
        "GROQ_API_KEY": "ignored when a file is used",
    }
    config = Config.from_env(env)
    assert set(config.providers) == {"openrouter", "local"}
    assert config.client_keys == (Secret("from-env"),)  # the environment wins
    assert config.prefix == "/other"
    assert "claude-sonnet" in config.models


def test_from_env_loads_badgr_toml_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "badgr.toml").write_text(TOML)
    monkeypatch.chdir(tmp_path)
    config = Config.from_env({"OPENROUTER_API_KEY": FAKE_KEY, "BADGR_CLIENT_KEY": "c"})
    assert "local" in config.providers
    assert config.default_provider == "openrouter"


def test_from_env_missing_badgr_config(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError) as info:
        Config.from_env({"BADGR_CONFIG": missing, "BADGR_ALLOW_ANONYMOUS": "perhaps"})
    assert {(p.path, p.code) for p in info.value.problems} == {
        (missing, "bad_file"),
        ("allow_anonymous", "bad_value"),
    }


def test_from_env_defaults_to_os_environ(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in (
        "BADGR_CONFIG",
        "BADGR_DEFAULT_PROVIDER",
        "BADGR_PREFIX",
        "BADGR_CLIENT_KEYS",
        "BADGR_REDIS_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    for known in KNOWN_PROVIDERS.values():
        if known.api_key_env:
            monkeypatch.delenv(known.api_key_env, raising=False)
    monkeypatch.setenv("XAI_API_KEY", "xai-key")
    monkeypatch.setenv("BADGR_ALLOW_ANONYMOUS", "1")
    config = Config.from_env()
    assert set(config.providers) == {"xai"}
    assert config.default_provider == "xai"
    assert config.state == StateConfig()
    monkeypatch.setenv("BADGR_REDIS_URL", "redis://h:6379/0")
    assert Config.from_env().state == StateConfig("redis", Secret("redis://h:6379/0"))


# --------------------------------------------------------------------------- secrets


def test_secrets_never_appear_in_repr_or_str() -> None:
    config = Config.from_dict(FULL_EXAMPLE, env=FULL_ENV)
    for text in (repr(config), str(config), repr(config.providers), str(config.client_keys)):
        assert FAKE_KEY not in text
        assert FAKE_CLIENT_KEY not in text
    assert "****3456" in repr(config)
    assert isinstance(config.providers["openrouter"].api_key, Secret)
    assert all(isinstance(k, Secret) for k in config.client_keys)


def test_redis_url_never_appears_in_repr_or_str(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from_dict = Config.from_dict(FULL_EXAMPLE, env=FULL_ENV)
    monkeypatch.chdir(tmp_path)
    from_env = Config.from_env({"GROQ_API_KEY": "g", "BADGR_REDIS_URL": FAKE_REDIS_URL})
    for config in (from_dict, from_env):
        assert config.state.url is not None
        assert config.state.url.reveal() == FAKE_REDIS_URL
        url = config.state.url
        for text in (repr(config), str(config), repr(config.state), str(config.state)):
            assert FAKE_REDIS_URL not in text
            assert FAKE_REDIS_PASSWORD not in text
            assert "cache.example" not in text
        for text in (repr(url), str(url), f"{url}", f"{url!r}", str([url])):
            assert FAKE_REDIS_PASSWORD not in text
    built = StateConfig(backend="redis", url=Secret(FAKE_REDIS_URL))
    assert FAKE_REDIS_PASSWORD not in repr(built)


BAD_REDIS_URLS = [
    f"http://:{FAKE_REDIS_PASSWORD}@h:6379",
    f"{FAKE_REDIS_PASSWORD}",
    f"redis://:{FAKE_REDIS_PASSWORD}@h:port/0",
    f"redis://:{FAKE_REDIS_PASSWORD}@h:{FAKE_REDIS_PASSWORD}/0",
    f"redis://:{FAKE_REDIS_PASSWORD}@[h/0",
    f"redis://:{FAKE_REDIS_PASSWORD} @h/0",
    f"REDIS://:{FAKE_REDIS_PASSWORD}@h/0",
]


@pytest.mark.parametrize("url", BAD_REDIS_URLS)
@pytest.mark.parametrize("backend", [None, "redis", "memory", "bogus"])
def test_problems_never_echo_the_redis_url(url: str, backend: str | None) -> None:
    state: dict[str, Any] = {"url": url}
    if backend is not None:
        state["backend"] = backend
    with pytest.raises(ConfigError) as info:
        Config.from_dict(valid(state=state), env={})
    assert has(info.value.problems, "state.url", "bad_value")
    rendered = str(info.value) + repr(info.value.problems) + repr(info.value.warnings)
    assert FAKE_REDIS_PASSWORD not in rendered


def test_a_valid_redis_url_stays_out_of_other_problems() -> None:
    data = valid(state={"url": FAKE_REDIS_URL, "backend": "bogus", "timeout": -1}, prefix="v1")
    with pytest.raises(ConfigError) as info:
        Config.from_dict(data, env={})
    assert {p.path for p in info.value.problems} == {"state.backend", "state.timeout", "prefix"}
    assert FAKE_REDIS_PASSWORD not in str(info.value) + repr(info.value.problems)


def test_header_values_stay_out_of_repr() -> None:
    provider = ProviderConfig(
        "p", "openai", "http://h", headers={"Authorization": f"Bearer {FAKE_KEY}"}
    )
    assert FAKE_KEY not in repr(provider)


SECRET_MISPLACED: list[dict[str, Any]] = [
    valid(providers={"openai": FAKE_KEY}, models=None),
    valid(providers={"openai": {"api_key": [FAKE_KEY]}}, models=None),
    valid(providers={"local": {"base_url": FAKE_KEY, "api_key": FAKE_KEY}}, models=None),
    valid(providers={"local": {"base_url": f"https://user:{FAKE_KEY}@h/v1"}}, models=None),
    valid(providers={"local": {"kind": FAKE_KEY, "base_url": "http://h"}}, models=None),
    valid(providers={"local": {"base_url": "http://h", "headers": {"X": [FAKE_KEY]}}}),
    valid(providers={"local": {"base_url": "http://h", "openrouter": FAKE_KEY}}),
    valid(models={"m": [FAKE_KEY, f"{FAKE_KEY}/model", {"target": FAKE_KEY}]}),
    valid(client_keys=FAKE_KEY),
    valid(client_keys=[FAKE_KEY, 5, ""]),
    valid(default_provider=FAKE_KEY),
    valid(prefix=FAKE_KEY),
    valid(authenticate=FAKE_KEY),
    valid(authenticate=f"{FAKE_KEY.replace('-', '_')}:check"),
    valid(allow_anonymous=FAKE_KEY),
    valid(max_body_bytes=FAKE_KEY),
    valid(timeouts={"read": FAKE_KEY}),
    valid(prefix=f"/${{{FAKE_KEY}"),
    valid(prefix=f"/${{{FAKE_KEY}-x}}"),
    valid(timeouts={"first_byte": FAKE_KEY}),
    valid(breaker={"failure_rate": FAKE_KEY, "window": [FAKE_KEY]}),
    valid(breaker=FAKE_KEY),
    valid(state=FAKE_KEY),
    valid(state={"backend": FAKE_KEY}),
    valid(state={"url": FAKE_KEY}),
    valid(state={"url": [FAKE_KEY]}),
    valid(state={"url": f"redis://:{FAKE_KEY}@h:x/0"}),
    valid(state={"url": f"https://:{FAKE_KEY}@h/0", "backend": "redis"}),
    valid(state={"key_prefix": [FAKE_KEY], "timeout": FAKE_KEY, "retry_interval": FAKE_KEY}),
    valid(models={"m": [{"target": "local/x", "weight": FAKE_KEY}]}),
    valid(models={"m": {"targets": ["local/x"], "routing": FAKE_KEY, "hedge_after": FAKE_KEY}}),
    valid(models={"m": {"targets": ["local/x"], "routing": [FAKE_KEY], "hedge_after": [FAKE_KEY]}}),
]


@pytest.mark.parametrize("data", SECRET_MISPLACED)
def test_problems_never_echo_secrets(data: dict[str, Any]) -> None:
    with pytest.raises(ConfigError) as info:
        Config.from_dict(data, env={})
    rendered = str(info.value) + repr(info.value.problems)
    assert FAKE_KEY not in rendered
    assert FAKE_KEY.replace("-", "_") not in rendered


# --------------------------------------------------------------------------- load_config


def test_load_config_dispatch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    existing = Config.from_dict(valid(), env={})
    assert load_config(existing) is existing

    from_mapping = load_config(valid(prefix="${P}"), env={"P": "/d"})
    assert from_mapping.prefix == "/d"

    path = tmp_path / "x.toml"
    path.write_text('prefix = "${P}"\nallow_anonymous = true\n[providers.ollama]\n')
    assert load_config(path, env={"P": "/p"}).prefix == "/p"
    assert load_config(str(path), env={"P": "/s"}).prefix == "/s"

    from_env = load_config(None, env={"GROQ_API_KEY": "g", "BADGR_ALLOW_ANONYMOUS": "1"})
    assert set(from_env.providers) == {"groq"}
    assert load_config(env={"GROQ_API_KEY": "g"}).default_provider == "groq"

    with pytest.raises(TypeError):
        load_config(42)  # type: ignore[arg-type]


def test_config_is_frozen() -> None:
    config = Config.from_dict(valid(), env={})
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.prefix = "/x"  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.providers["new"] = config.providers["local"]  # type: ignore[index]


def test_a_secret_url_shows_nothing_of_itself() -> None:
    from badgr_middleware.secret import Secret

    url = Secret("unix:///run/redis.sock?password=hunter2-secret")
    assert str(url) == "****" and repr(url) == "Secret('****')"


# --------------------------------------------------------------------------- prices, cost, resume


def test_cost_resume_and_quota_defaults() -> None:
    config = Config.from_dict(valid(), env={})
    assert (config.prices, config.attempts_detail, config.quota_reserve) == ({}, False, 0.05)
    alias = config.models["fast"]
    assert (alias.max_price_ratio, alias.max_cost, alias.resume) == (None, None, None)
    assert alias.targets[0].price is None
    assert ResumePolicy().max_sent_tokens == 4000


def test_cost_resume_and_quota_values() -> None:
    config = Config.from_dict(valid(
        models={"m": {"targets": [{"target": "local/x", "price": {"input": 2.5, "output": 10}},
                                  {"target": "local/y", "price": {"input": 0, "output": 0}}],
                      "max_price_ratio": 2, "max_cost": 0.05,
                      "resume": {"max_sent_tokens": 2000}}},
        prices={"gpt-4o": {"input": 2, "output": 8}, "my-model": {"input": 0.1, "output": 0.2}},
        attempts_detail=True,
        quota_reserve=0,
    ), env={})
    alias = config.models["m"]
    assert alias.targets[0] == TargetConfig("local", "x", price=Price(2.5, 10.0))
    assert alias.targets[1].price == Price(0.0, 0.0)
    assert isinstance(alias.targets[0].price.output, float)  # type: ignore[union-attr]
    assert (alias.max_price_ratio, alias.max_cost) == (2.0, 0.05)
    assert isinstance(alias.max_price_ratio, float)
    assert alias.resume == ResumePolicy(2000)
    assert dict(config.prices) == {"gpt-4o": Price(2.0, 8.0), "my-model": Price(0.1, 0.2)}
    assert (config.attempts_detail, config.quota_reserve) == (True, 0.0)
    assert config.warnings == ()


@pytest.mark.parametrize(("value", "expected"), [
    (True, ResumePolicy()), (False, None), ({}, ResumePolicy()),
    ({"max_sent_tokens": 1}, ResumePolicy(1)),
])
def test_resume_forms(value: Any, expected: ResumePolicy | None) -> None:
    assert Config.from_dict(_alias(resume=value)(), env={}).models["m"].resume == expected


def test_unknown_price_is_a_warning_on_the_target() -> None:
    config = Config.from_dict(_alias(max_cost=0.1)(), env={})
    assert [(w.path, w.code, w.severity) for w in config.warnings] == [
        ("models.m.targets[0]", "unknown_price", "warning"),
        ("models.m.targets[1]", "unknown_price", "warning"),
    ]
    assert "max_cost" in config.warnings[0].message
    assert "price" in config.warnings[0].fix
    assert config.models["m"].max_cost == 0.1


def test_known_prices_silence_the_unknown_price_warning() -> None:
    data = valid(
        models={"m": {"targets": ["openrouter/openai/gpt-4o-2024-08-06",  # shipped price
                                  "local/mine",  # a prices entry
                                  {"target": "local/x", "price": {"input": 0, "output": 0}}],
                      "max_price_ratio": 1.5, "max_cost": 1}},
        prices={"mine": {"input": 1, "output": 1}},
    )
    assert Config.from_dict(data, env={}).warnings == ()


def test_no_price_limit_no_price_warning() -> None:
    assert Config.from_dict(_alias(resume=True)(), env={}).warnings == ()


def test_price_problems_are_reported_at_once() -> None:
    data = valid(
        models={"m": {"targets": [{"target": "local/x", "price": {"input": -1}}],
                      "max_price_ratio": -1, "max_cost": "1", "resume": {"max_sent_tokens": 0}}},
        prices={"gpt-4o": {"input": "2.5", "output": 10}, "x": 3},
        attempts_detail=1,
        quota_reserve=1.5,
    )
    assert {(p.path, p.code) for p in problems_of(data)} == {
        ("models.m.targets[0].price.input", "bad_price"),
        ("models.m.targets[0].price.output", "bad_price"),
        ("models.m.max_price_ratio", "bad_value"),
        ("models.m.max_cost", "bad_type"),
        ("models.m.resume.max_sent_tokens", "bad_value"),
        ("prices.gpt-4o.input", "bad_price"),
        ("prices.x", "bad_price"),
        ("attempts_detail", "bad_type"),
        ("quota_reserve", "bad_value"),
    }


def test_price_messages_do_not_echo_strings() -> None:
    (problem,) = problems_of(valid(prices={"m": {"input": FAKE_KEY, "output": 1}}))
    assert FAKE_KEY not in str(problem)
    assert problem.message.endswith("got a string")


def test_prices_cost_and_resume_from_toml(tmp_path: Path) -> None:
    path = tmp_path / "badgr.toml"
    path.write_text("""
allow_anonymous = true
attempts_detail = true
quota_reserve = 0.1

[providers.local]
base_url = "http://127.0.0.1:8001/v1"

[prices]
"gpt-4o" = { input = 2.5, output = 10 }

[models.m]
targets = [{ target = "local/x", price = { input = 0.5, output = 1.5 } }, "local/gpt-4o"]
max_price_ratio = 2
max_cost = 0.05
resume = { max_sent_tokens = 2000 }

[models.n]
targets = ["local/gpt-4o"]
resume = true
""", encoding="utf-8")
    config = Config.from_toml(path, env={})
    assert config.models["m"].targets[0].price == Price(0.5, 1.5)
    assert (config.models["m"].max_price_ratio, config.models["m"].max_cost) == (2.0, 0.05)
    assert config.models["m"].resume == ResumePolicy(2000)
    assert config.models["n"].resume == ResumePolicy(4000)
    assert config.prices == {"gpt-4o": Price(2.5, 10.0)}
    assert (config.attempts_detail, config.quota_reserve) == (True, 0.1)
    assert config.warnings == ()


def test_new_fields_keep_secrets_out_of_repr() -> None:
    config = Config.from_dict(valid(
        providers={"openai": {"api_key": FAKE_KEY}},
        models={"m": {"targets": [{"target": "openai/gpt-4o", "price": {"input": 1, "output": 2}}],
                      "max_cost": 1, "resume": True}},
        prices={"gpt-4o": {"input": 2.5, "output": 10}},
        client_keys=[FAKE_CLIENT_KEY],
    ), env={})
    text = repr(config)
    assert FAKE_KEY not in text and FAKE_CLIENT_KEY not in text
    assert "Price(input=2.5, output=10.0)" in text
