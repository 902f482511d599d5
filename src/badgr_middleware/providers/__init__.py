"""Upstream wire formats and the table of well-known providers."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .base import StreamTranslator, UpstreamRequest, Wire

if TYPE_CHECKING:
    from ..config import ProviderConfig

__all__ = ["StreamTranslator", "UpstreamRequest", "Wire", "wire_for"]


def wire_for(provider: ProviderConfig) -> Wire:
    """The wire format that speaks to ``provider``, by its ``kind``."""
    if provider.kind == "anthropic":
        from .anthropic import AnthropicWire

        return AnthropicWire(provider)
    if provider.kind == "gemini":
        from .gemini import GeminiWire

        return GeminiWire(provider)
    if provider.kind == "azure":
        from .azure import AzureOpenAI

        return AzureOpenAI(provider)
    from .openai import OpenAICompatible

    return OpenAICompatible(provider)
