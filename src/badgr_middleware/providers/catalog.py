"""OpenRouter model ids and the same models at their own providers, for the OpenRouter bypass.

When the OpenRouter provider has ``bypass = true``, a request for one of these ids is served
by OpenRouter first and, if OpenRouter fails, by the native provider with the team's own key
(see docs/providers.md). The table covers the major Anthropic, OpenAI and Google models; it is
small on purpose and may lag new models: extend or override it with the top-level ``catalog``
setting (an entry set to ``false`` switches a shipped one off).

Native targets name the well-known providers ``anthropic``, ``openai`` and ``gemini``; a
provider configured under another name needs its own ``catalog`` entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

__all__ = ["CATALOG", "native_target"]

CATALOG: Mapping[str, str] = MappingProxyType({
    # Anthropic: OpenRouter writes versions with dots, Anthropic's aliases use dashes
    "anthropic/claude-opus-4.1": "anthropic/claude-opus-4-1",
    "anthropic/claude-opus-4": "anthropic/claude-opus-4-0",
    "anthropic/claude-sonnet-4.5": "anthropic/claude-sonnet-4-5",
    "anthropic/claude-sonnet-4": "anthropic/claude-sonnet-4-0",
    "anthropic/claude-haiku-4.5": "anthropic/claude-haiku-4-5",
    "anthropic/claude-3.7-sonnet": "anthropic/claude-3-7-sonnet-latest",
    "anthropic/claude-3.5-haiku": "anthropic/claude-3-5-haiku-latest",
    # OpenAI: the same ids without the vendor prefix
    "openai/gpt-5": "openai/gpt-5",
    "openai/gpt-5-mini": "openai/gpt-5-mini",
    "openai/gpt-5-nano": "openai/gpt-5-nano",
    "openai/gpt-4.1": "openai/gpt-4.1",
    "openai/gpt-4.1-mini": "openai/gpt-4.1-mini",
    "openai/gpt-4.1-nano": "openai/gpt-4.1-nano",
    "openai/gpt-4o": "openai/gpt-4o",
    "openai/gpt-4o-mini": "openai/gpt-4o-mini",
    "openai/o3": "openai/o3",
    "openai/o3-mini": "openai/o3-mini",
    "openai/o4-mini": "openai/o4-mini",
    "openai/text-embedding-3-small": "openai/text-embedding-3-small",
    "openai/text-embedding-3-large": "openai/text-embedding-3-large",
    # Google: OpenRouter's vendor is "google", the native provider is "gemini"
    "google/gemini-2.5-pro": "gemini/gemini-2.5-pro",
    "google/gemini-2.5-flash": "gemini/gemini-2.5-flash",
    "google/gemini-2.5-flash-lite": "gemini/gemini-2.5-flash-lite",
    "google/gemini-2.0-flash-001": "gemini/gemini-2.0-flash-001",
    "google/gemini-2.0-flash-lite-001": "gemini/gemini-2.0-flash-lite-001",
})
"""OpenRouter model id -> ``"<provider>/<native model>"``."""


def native_target(
    openrouter_id: str, overrides: Mapping[str, object] | None = None
) -> tuple[str, str] | None:
    """``(provider, native model)`` for an OpenRouter id, user ``overrides`` first.

    An override is a ``TargetConfig`` (anything with ``provider`` and ``model``), a
    ``"<provider>/<model>"`` string, or ``False`` to switch the shipped entry off.
    """
    if overrides is not None and openrouter_id in overrides:
        entry = overrides[openrouter_id]
        if entry is False or entry is None:
            return None
        if isinstance(entry, str):
            provider, _, model = entry.partition("/")
            return (provider, model) if provider and model else None
        provider, model = getattr(entry, "provider", None), getattr(entry, "model", None)
        return (provider, model) if isinstance(provider, str) and isinstance(model, str) else None
    shipped = CATALOG.get(openrouter_id)
    if shipped is None:
        return None
    provider, _, model = shipped.partition("/")
    return provider, model
