"""Model prices and token estimates, for cost-safe fallback and per-request cost limits.

Pure: no I/O, no clock. Prices are in US dollars per million tokens, input and output apart.

:data:`DEFAULT_PRICES` holds the providers' public **list prices as of November 2025**, for
standard (not batch, not cached, not priority) requests, and for Gemini 2.5 Pro the tier of
prompts up to 200,000 tokens. They are there to *compare* targets with each other and to
estimate what a request may cost, not to bill anyone: prices change, discounts and negotiated
rates are not known here, and OpenRouter adds its own fee. Override or extend them with the
``prices`` table of the configuration, or a target's own ``price``.

Token counts before a request is sent are estimates too (:func:`estimate_tokens`: about four
characters a token), good enough to tell a cent from a dollar.
"""

from __future__ import annotations

import functools
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

__all__ = [
    "DEFAULT_PRICES",
    "PART_TOKENS",
    "Price",
    "estimate_prompt_tokens",
    "estimate_tokens",
    "lookup_price",
    "usage_cost",
]

PART_TOKENS = 1000
"""Tokens counted for each non-text part of a message (an image, audio, a file): OpenAI bills
765 for a 1024x1024 image at high detail, Anthropic about 1,600 for a 1.15-megapixel one."""

_MESSAGE_OVERHEAD = 4  # role and separators, per message (OpenAI's cookbook counts 3 or 4)


@dataclass(frozen=True, slots=True)
class Price:
    """A model's price in US dollars per million tokens: ``input`` (prompt) and ``output``
    (completion, reasoning included)."""

    input: float
    output: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        """US dollars for ``prompt_tokens`` in and ``completion_tokens`` out."""
        return (prompt_tokens * self.input + completion_tokens * self.output) / 1_000_000


def _table(entries: Mapping[str, tuple[float, float]]) -> Mapping[str, Price]:
    return MappingProxyType({name: Price(*prices) for name, prices in entries.items()})


DEFAULT_PRICES: Mapping[str, Price] = _table({
    # OpenAI: platform.openai.com/docs/pricing (standard tier)
    "gpt-5": (1.25, 10.0),
    "gpt-5-mini": (0.25, 2.0),
    "gpt-5-nano": (0.05, 0.40),
    "gpt-4.1": (2.0, 8.0),
    "gpt-4.1-mini": (0.40, 1.60),
    "gpt-4.1-nano": (0.10, 0.40),
    "gpt-4o": (2.50, 10.0),
    "gpt-4o-mini": (0.15, 0.60),
    "o1": (15.0, 60.0),
    "o3": (2.0, 8.0),
    "o3-mini": (1.10, 4.40),
    "o4-mini": (1.10, 4.40),
    "text-embedding-3-small": (0.02, 0.0),
    "text-embedding-3-large": (0.13, 0.0),
    # Anthropic: docs.anthropic.com pricing (base input, output; no cache writes or reads)
    "claude-opus-4.5": (5.0, 25.0),
    "claude-opus-4.1": (15.0, 75.0),
    "claude-opus-4": (15.0, 75.0),
    "claude-sonnet-4.5": (3.0, 15.0),
    "claude-sonnet-4": (3.0, 15.0),
    "claude-3-7-sonnet": (3.0, 15.0),
    "claude-3-5-sonnet": (3.0, 15.0),
    "claude-haiku-4.5": (1.0, 5.0),
    "claude-3-5-haiku": (0.80, 4.0),
    "claude-3-haiku": (0.25, 1.25),
    # Google: ai.google.dev/gemini-api/docs/pricing (paid tier, text input)
    "gemini-2.5-pro": (1.25, 10.0),
    "gemini-2.5-flash": (0.30, 2.50),
    "gemini-2.5-flash-lite": (0.10, 0.40),
    "gemini-2.0-flash": (0.10, 0.40),
    "gemini-2.0-flash-lite": (0.075, 0.30),
})
"""List prices (USD per million tokens) of major models as of November 2025; see the module
docstring for what they are and are not."""

# A trailing snapshot date or version: -20250929, -2024-08-06, -0613, -001, -latest.
_SUFFIX = re.compile(r"-(?:\d{8}|\d{4}-\d{2}-\d{2}|\d{4}|\d{3}|latest)$")
# "-" or "." between two digits: claude-sonnet-4-5 and claude-sonnet-4.5 are one name.
_VERSION_SEPARATOR = re.compile(r"(?<=\d)[-.](?=\d)")


def _canonical(name: str) -> str:
    return _VERSION_SEPARATOR.sub(".", name.strip().lower())


@functools.lru_cache(maxsize=1024)
def _candidates(model: str) -> tuple[str, ...]:
    """The names *model* may be priced under, most specific first, in canonical form."""
    name = model.strip().lower()
    names = [_canonical(name)]
    # "openai/gpt-4o" (OpenRouter), "models/gemini-2.5-pro" (Gemini): the last segment
    bare = name.rsplit("/", 1)[-1]
    if bare != name:
        names.append(_canonical(bare))
    undated = _SUFFIX.sub("", bare)
    if undated and undated != bare:
        names.append(_canonical(undated))
    return tuple(names)


_DEFAULT_INDEX: Mapping[str, Price] = MappingProxyType(
    {_canonical(name): price for name, price in DEFAULT_PRICES.items()}
)


class _Lookups:
    """One ``overrides`` mapping by canonical name, and the answers given for it."""

    __slots__ = ("overrides", "index", "answers")

    def __init__(self, overrides: Mapping[str, Price]) -> None:
        self.overrides = overrides  # held, so its id is not reused while cached
        self.index = {_canonical(name): price for name, price in overrides.items()}
        self.answers: dict[str, Price | None] = {}


_LOOKUPS: dict[int, _Lookups] = {}
_NO_OVERRIDES: Mapping[str, Price] = MappingProxyType({})


def _lookups(overrides: Mapping[str, Price]) -> _Lookups:
    """Per ``overrides`` mapping (a config's lives as long as the config): built once."""
    cached = _LOOKUPS.get(id(overrides))
    if cached is None or cached.overrides is not overrides:
        if len(_LOOKUPS) > 64:
            _LOOKUPS.clear()
        cached = _LOOKUPS[id(overrides)] = _Lookups(overrides)
    return cached


def lookup_price(model: str, overrides: Mapping[str, Price] = _NO_OVERRIDES) -> Price | None:
    """The price of *model*, or None when it is not known.

    Tried in order: the name as given; without a vendor path (``openai/gpt-4o`` is
    ``gpt-4o``); without a trailing snapshot date or version (``claude-sonnet-4-5-20250929``
    is ``claude-sonnet-4-5``, ``gpt-4o-2024-08-06`` is ``gpt-4o``, ``gemini-2.0-flash-001`` is
    ``gemini-2.0-flash``). Names compare case-insensitively, and ``-`` and ``.`` between two
    digits are the same (``claude-sonnet-4-5`` finds ``claude-sonnet-4.5``). *overrides* are
    searched that way first, then :data:`DEFAULT_PRICES`. Answers are cached (plans look
    prices up on every request).
    """
    lookups = _lookups(overrides)
    try:
        return lookups.answers[model]
    except KeyError:
        pass
    price = _find(_candidates(model), lookups.index)
    if len(lookups.answers) < 4096:
        lookups.answers[model] = price
    return price


def _find(candidates: tuple[str, ...], index: Mapping[str, Price]) -> Price | None:
    for name in candidates:
        if name in index:
            return index[name]
    for name in candidates:
        if name in _DEFAULT_INDEX:
            return _DEFAULT_INDEX[name]
    return None


def estimate_tokens(text: str) -> int:
    """About four characters a token: ``ceil(len(text) / 4)``, at least 1 unless empty."""
    return math.ceil(len(text) / 4)


def estimate_prompt_tokens(body: Mapping[str, Any]) -> int:
    """A rough count of the input tokens of an OpenAI-shaped request body.

    Counted: the text of every message (its content, text parts, name, tool calls'
    names and arguments) plus 4 tokens a message, and :data:`PART_TOKENS` for each non-text
    part (image, audio, file); the ``tools`` and
    ``functions`` definitions as JSON; a completions ``prompt``; an embeddings ``input``
    (strings by their length, token-id arrays by their length).
    """
    total = 0
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, Mapping):
                total += _MESSAGE_OVERHEAD + _message_tokens(message)
    for key in ("tools", "functions"):
        definitions = body.get(key)
        if definitions:
            total += estimate_tokens(_json(definitions))
    for key in ("prompt", "input"):
        total += _input_tokens(body.get(key))
    return total


def _message_tokens(message: Mapping[str, Any]) -> int:
    tokens = 0
    content = message.get("content")
    if isinstance(content, str):
        tokens += estimate_tokens(content)
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, str):
                tokens += estimate_tokens(part)
            elif isinstance(part, Mapping):
                text = part.get("text", part.get("refusal"))
                if isinstance(text, str):
                    tokens += estimate_tokens(text)
                else:
                    tokens += PART_TOKENS
    name = message.get("name")
    if isinstance(name, str):
        tokens += estimate_tokens(name)
    calls = message.get("tool_calls")
    if isinstance(calls, list):
        tokens += estimate_tokens(_json(calls))
    call = message.get("function_call")
    if isinstance(call, Mapping):
        tokens += estimate_tokens(_json(call))
    return tokens


def _input_tokens(value: object) -> int:
    """A ``prompt`` or ``input``: a string, token ids, or a list of either."""
    if isinstance(value, str):
        return estimate_tokens(value)
    if isinstance(value, list):
        if all(isinstance(item, int) and not isinstance(item, bool) for item in value):
            return len(value)
        return sum(_input_tokens(item) for item in value if isinstance(item, str | list))
    return 0


def _json(value: object) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    except (TypeError, ValueError, RecursionError):
        return ""


def usage_cost(price: Price | None, usage: Mapping[str, Any] | None) -> float | None:
    """US dollars for an OpenAI ``usage`` object at *price*; None when either is unknown.

    Reads ``prompt_tokens`` and ``completion_tokens`` (``input_tokens`` and ``output_tokens``
    too). Without completion tokens, ``total_tokens - prompt_tokens`` is used, so an
    embeddings usage (``prompt_tokens``, ``total_tokens``) costs its input only.
    """
    if price is None or not isinstance(usage, Mapping):
        return None
    prompt = _count(usage, "prompt_tokens", "input_tokens")
    completion = _count(usage, "completion_tokens", "output_tokens")
    total = _count(usage, "total_tokens")
    if completion is None and prompt is not None and total is not None:
        completion = max(0, total - prompt)
    if prompt is None and completion is None:
        return None
    return price.cost(prompt or 0, completion or 0)


def _count(usage: Mapping[str, Any], *names: str) -> int | None:
    for name in names:
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            return value
    return None
