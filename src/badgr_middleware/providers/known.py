"""Well-known providers: a configured provider with one of these names needs only its key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

__all__ = ["IMPLEMENTED_KINDS", "KINDS", "KNOWN_PROVIDERS", "KnownProvider"]

KINDS: tuple[str, ...] = ("openai", "anthropic", "gemini", "azure")
"""Wire formats the configuration schema accepts."""

IMPLEMENTED_KINDS: frozenset[str] = frozenset(KINDS)
"""Wire formats this version can route to (all of them)."""


@dataclass(frozen=True)
class KnownProvider:
    """Defaults implied by a well-known provider name."""

    kind: str
    base_url: str
    api_key_env: str | None
    key_required: bool
    openrouter: bool = False


def _cloud(kind: str, base_url: str, api_key_env: str) -> KnownProvider:
    return KnownProvider(kind=kind, base_url=base_url, api_key_env=api_key_env, key_required=True)


KNOWN_PROVIDERS: Mapping[str, KnownProvider] = MappingProxyType(
    {
        "openai": _cloud("openai", "https://api.openai.com/v1", "OPENAI_API_KEY"),
        "openrouter": KnownProvider(
            kind="openai",
            base_url="https://openrouter.ai/api/v1",
            api_key_env="OPENROUTER_API_KEY",
            key_required=True,
            openrouter=True,
        ),
        "anthropic": _cloud("anthropic", "https://api.anthropic.com/v1", "ANTHROPIC_API_KEY"),
        "gemini": _cloud(
            "gemini", "https://generativelanguage.googleapis.com/v1beta", "GEMINI_API_KEY"
        ),
        "groq": _cloud("openai", "https://api.groq.com/openai/v1", "GROQ_API_KEY"),
        "together": _cloud("openai", "https://api.together.xyz/v1", "TOGETHER_API_KEY"),
        "mistral": _cloud("openai", "https://api.mistral.ai/v1", "MISTRAL_API_KEY"),
        "deepseek": _cloud("openai", "https://api.deepseek.com/v1", "DEEPSEEK_API_KEY"),
        "fireworks": _cloud("openai", "https://api.fireworks.ai/inference/v1", "FIREWORKS_API_KEY"),
        "xai": _cloud("openai", "https://api.x.ai/v1", "XAI_API_KEY"),
        "perplexity": _cloud("openai", "https://api.perplexity.ai", "PERPLEXITY_API_KEY"),
        "cerebras": _cloud("openai", "https://api.cerebras.ai/v1", "CEREBRAS_API_KEY"),
        "ollama": KnownProvider(
            kind="openai",
            base_url="http://127.0.0.1:11434/v1",
            api_key_env=None,
            key_required=False,
        ),
    }
)
"""Well-known provider name -> its defaults, in documentation order."""
