"""Prices, name normalisation, token estimates, usage costs, and prices resolved into plans."""

from __future__ import annotations

import math
from typing import Any

import pytest

from badgr_middleware.config import Config
from badgr_middleware.pricing import (
    DEFAULT_PRICES,
    PART_TOKENS,
    Price,
    estimate_prompt_tokens,
    estimate_tokens,
    lookup_price,
    usage_cost,
)
from badgr_middleware.routing.plan import Target, resolve_plan

# --------------------------------------------------------------------------- Price


def test_price_cost_is_per_million_tokens() -> None:
    price = Price(2.5, 10.0)
    assert price.cost(1_000_000, 0) == 2.5
    assert price.cost(0, 1_000_000) == 10.0
    assert math.isclose(price.cost(1000, 500), 0.0025 + 0.005)
    assert price.cost(0, 0) == 0.0


def test_price_is_frozen_and_hashable() -> None:
    price = Price(1.0, 2.0)
    with pytest.raises(AttributeError):
        price.input = 3.0  # type: ignore[misc]
    assert {price: 1}[Price(1.0, 2.0)] == 1


def test_default_prices_are_sane() -> None:
    assert len(DEFAULT_PRICES) >= 20
    for name, price in DEFAULT_PRICES.items():
        assert name == name.lower().strip(), name
        assert price.input > 0 and price.output >= 0, name
        assert price.output >= price.input or price.output == 0, name
    with pytest.raises(TypeError):
        DEFAULT_PRICES["x"] = Price(0, 0)  # type: ignore[index]


@pytest.mark.parametrize("name", [
    "gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3", "o4-mini",
    "gpt-5", "gpt-5-mini", "claude-opus-4", "claude-opus-4.1", "claude-sonnet-4",
    "claude-sonnet-4.5", "claude-3-7-sonnet", "claude-haiku-4.5", "claude-3-5-haiku",
    "gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.0-flash",
])
def test_major_models_are_priced(name: str) -> None:
    assert name in DEFAULT_PRICES


def test_a_few_list_prices() -> None:
    assert DEFAULT_PRICES["gpt-4o"] == Price(2.5, 10.0)
    assert DEFAULT_PRICES["claude-sonnet-4.5"] == Price(3.0, 15.0)
    assert DEFAULT_PRICES["gemini-2.5-flash"] == Price(0.3, 2.5)


# --------------------------------------------------------------------------- lookup_price


@pytest.mark.parametrize(("model", "priced_as"), [
    ("gpt-4o", "gpt-4o"),
    ("GPT-4o", "gpt-4o"),
    (" gpt-4o ", "gpt-4o"),
    ("openai/gpt-4o", "gpt-4o"),
    ("openai/gpt-4o-mini", "gpt-4o-mini"),
    ("gpt-4o-2024-08-06", "gpt-4o"),
    ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
    ("gpt-4.1-2025-04-14", "gpt-4.1"),
    ("anthropic/claude-sonnet-4.5", "claude-sonnet-4.5"),
    ("claude-sonnet-4-5", "claude-sonnet-4.5"),
    ("claude-sonnet-4-5-20250929", "claude-sonnet-4.5"),
    ("claude-sonnet-4-20250514", "claude-sonnet-4"),
    ("claude-opus-4-1-20250805", "claude-opus-4.1"),
    ("anthropic/claude-opus-4.1", "claude-opus-4.1"),
    ("anthropic/claude-3.7-sonnet", "claude-3-7-sonnet"),
    ("claude-3-7-sonnet-latest", "claude-3-7-sonnet"),
    ("claude-3-5-haiku-20241022", "claude-3-5-haiku"),
    ("claude-haiku-4-5", "claude-haiku-4.5"),
    ("google/gemini-2.5-pro", "gemini-2.5-pro"),
    ("models/gemini-2.5-flash", "gemini-2.5-flash"),
    ("gemini-2.0-flash-001", "gemini-2.0-flash"),
])
def test_lookup_normalises_the_name(model: str, priced_as: str) -> None:
    assert lookup_price(model) == DEFAULT_PRICES[priced_as]


@pytest.mark.parametrize("model", [
    "llama3", "local-model", "", "gpt-4o:free", "meta-llama/llama-3.1-8b-instruct",
    "claude-sonnet-4-6", "gemini-2.5-pro-preview-06-05",
])
def test_unknown_models_have_no_price(model: str) -> None:
    assert lookup_price(model) is None


def test_a_dated_mini_is_not_priced_as_the_big_model() -> None:
    assert lookup_price("gpt-4o-mini-2024-07-18") != DEFAULT_PRICES["gpt-4o"]


def test_overrides_come_first_with_the_same_normalisation() -> None:
    mine = Price(1.0, 1.0)
    assert lookup_price("gpt-4o", {"gpt-4o": mine}) == mine
    assert lookup_price("openai/gpt-4o-2024-08-06", {"GPT-4o": mine}) == mine
    assert lookup_price("claude-sonnet-4-5-20250929", {"claude-sonnet-4.5": mine}) == mine
    assert lookup_price("anthropic/claude-sonnet-4.5", {"claude-sonnet-4-5": mine}) == mine
    # the exact override wins over a less specific one
    exact = Price(9.0, 9.0)
    assert lookup_price("openai/gpt-4o", {"gpt-4o": mine, "openai/gpt-4o": exact}) == exact
    # overrides add models
    assert lookup_price("my-llama", {"my-llama": Price(0, 0)}) == Price(0, 0)
    # and leave the others alone
    assert lookup_price("gpt-4.1", {"gpt-4o": mine}) == DEFAULT_PRICES["gpt-4.1"]


# --------------------------------------------------------------------------- estimates


@pytest.mark.parametrize(("text", "tokens"), [
    ("", 0), ("a", 1), ("abcd", 1), ("abcde", 2), ("x" * 400, 100), ("x" * 401, 101),
])
def test_estimate_tokens(text: str, tokens: int) -> None:
    assert estimate_tokens(text) == tokens


def test_estimate_prompt_tokens_of_chat_messages() -> None:
    body = {"messages": [
        {"role": "system", "content": "x" * 40},
        {"role": "user", "content": [
            {"type": "text", "text": "y" * 80},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
        ]},
    ]}
    assert estimate_prompt_tokens(body) == (4 + 10) + (4 + 20 + PART_TOKENS)


def test_estimate_counts_tool_calls_names_and_tools() -> None:
    plain = {"messages": [{"role": "user", "content": "hi"}]}
    richer: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": "hi", "name": "alice"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "c1", "type": "function",
                 "function": {"name": "lookup", "arguments": '{"q": "weather in Paris"}'}},
            ]},
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
        ],
        "tools": [{"type": "function", "function": {"name": "lookup", "parameters": {}}}],
    }
    assert estimate_prompt_tokens(richer) > estimate_prompt_tokens(plain) + 20


@pytest.mark.parametrize(("body", "tokens"), [
    ({"prompt": "x" * 8}, 2),
    ({"prompt": ["x" * 8, "y" * 4]}, 3),
    ({"prompt": [1, 2, 3]}, 3),
    ({"input": "x" * 12}, 3),
    ({"input": ["ab", "cd"]}, 2),
    ({"input": [[1, 2], [3, 4, 5]]}, 5),
    ({}, 0),
    ({"messages": "not a list", "prompt": 5, "input": {"x": 1}}, 0),
    ({"messages": [None, "x", 3]}, 0),
])
def test_estimate_prompt_tokens_of_prompts_and_inputs(body: dict[str, Any], tokens: int) -> None:
    assert estimate_prompt_tokens(body) == tokens


# --------------------------------------------------------------------------- usage_cost


def test_usage_cost_of_a_chat_completion() -> None:
    usage = {"prompt_tokens": 1000, "completion_tokens": 500, "total_tokens": 1500}
    assert math.isclose(usage_cost(Price(2.5, 10.0), usage) or 0, 0.0075)


def test_usage_cost_of_embeddings_counts_input_only() -> None:
    usage = {"prompt_tokens": 2000, "total_tokens": 2000}
    assert math.isclose(usage_cost(Price(0.02, 0.0), usage) or 0, 0.00004)
    assert usage_cost(Price(1.0, 100.0), usage) == pytest.approx(0.002)


def test_usage_cost_accepts_input_and_output_tokens() -> None:
    assert usage_cost(Price(1.0, 2.0), {"input_tokens": 1_000_000, "output_tokens": 1_000_000}) \
        == 3.0


@pytest.mark.parametrize(("price", "usage"), [
    (None, {"prompt_tokens": 1, "completion_tokens": 1}),
    (Price(1, 1), None),
    (Price(1, 1), {}),
    (Price(1, 1), {"prompt_tokens": "10", "completion_tokens": None}),
    (Price(1, 1), {"prompt_tokens": True}),
    (Price(1, 1), {"prompt_tokens": -5}),
    (Price(1, 1), "not a mapping"),
])
def test_usage_cost_unknown(price: Price | None, usage: Any) -> None:
    assert usage_cost(price, usage) is None


# --------------------------------------------------------------------------- plans


def _config(**extra: Any) -> Config:
    data: dict[str, Any] = {
        "providers": {
            "openrouter": {"api_key": "k", "bypass": True},
            "openai": {"api_key": "k"},
            "anthropic": {"api_key": "k"},
            "local": {"base_url": "http://127.0.0.1:9/v1"},
        },
        "allow_anonymous": True,
        **extra,
    }
    return Config.from_dict(data, env={})


def test_plan_targets_carry_their_price() -> None:
    config = _config(
        models={"m": [
            {"target": "local/llama", "price": {"input": 0.1, "output": 0.2}},
            "openrouter/openai/gpt-4o",
            "anthropic/claude-sonnet-4-5-20250929",
            "local/unknown",
            "local/mine",
        ]},
        prices={"mine": {"input": 7, "output": 8}, "gpt-4o": {"input": 3, "output": 11}},
    )
    targets = resolve_plan({"model": "m"}, config).targets
    assert [t.price for t in targets] == [
        Price(0.1, 0.2),  # the target's own price
        Price(3.0, 11.0),  # Config.prices, through the vendor path
        DEFAULT_PRICES["claude-sonnet-4.5"],  # the shipped list price
        None,
        Price(7.0, 8.0),
    ]


def test_a_targets_own_price_wins_over_the_prices_table() -> None:
    config = _config(
        models={"m": [{"target": "openai/gpt-4o", "price": {"input": 0, "output": 0}}]},
        prices={"gpt-4o": {"input": 3, "output": 11}},
    )
    assert resolve_plan({"model": "m"}, config).targets[0].price == Price(0.0, 0.0)


def test_provider_slash_model_default_provider_and_bypass_are_priced() -> None:
    config = _config(default_provider="openai")
    assert resolve_plan({"model": "openai/gpt-4.1"}, config).targets[0].price == \
        DEFAULT_PRICES["gpt-4.1"]
    assert resolve_plan({"model": "gpt-4o-mini"}, config).targets[0].price == \
        DEFAULT_PRICES["gpt-4o-mini"]
    bypass = resolve_plan({"model": "anthropic/claude-sonnet-4.5"}, config).targets
    assert [t.provider for t in bypass] == ["openrouter", "anthropic"]
    assert all(t.price == DEFAULT_PRICES["claude-sonnet-4.5"] for t in bypass)


def test_price_takes_no_part_in_target_equality() -> None:
    priced = Target("openai", "gpt-4o", price=Price(2.5, 10.0))
    assert priced == Target("openai", "gpt-4o")
    assert hash(priced) == hash(Target("openai", "gpt-4o"))
    assert {priced: 1}[Target("openai", "gpt-4o")] == 1
    with pytest.raises(AttributeError):
        priced.price = None  # type: ignore[misc]
