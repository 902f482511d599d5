"""Shared pieces of the native-provider end-to-end suite (fixtures are in conftest.py).

Real HTTP on 127.0.0.1 throughout: a fake Anthropic API and a fake Gemini API that validate
requests like the real ones, a simulated OpenAI-compatible OpenRouter, badgr itself served by
``SimulatedServer``, and the official ``openai`` SDK as the client.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import openai

from badgr_middleware import BadgrApp
from badgr_middleware.simulator import (
    SimulatedAnthropic,
    SimulatedGemini,
    SimulatedProvider,
    SimulatedServer,
    closed_port,
)

CLIENT_KEY = "native-client-key"
ANTHROPIC_KEY = "sk-ant-native-0123456789abcdef"
GEMINI_KEY = "AIza-native-0123456789abcdef"
OPENROUTER_KEY = "sk-or-v1-native-0123456789abcdef"
OPENAI_KEY = "sk-openai-native-0123456789abcdef"


@dataclass
class Upstreams:
    anthropic: SimulatedAnthropic
    gemini: SimulatedGemini
    openrouter: SimulatedProvider
    openai: SimulatedProvider
    servers: dict[str, SimulatedServer]

    def clear(self) -> None:
        for fake in (self.anthropic, self.gemini, self.openrouter, self.openai):
            fake.clear()


def native_config(upstreams: Upstreams, *, openrouter_down: str | None = None,
                  **overrides: Any) -> dict[str, Any]:
    """``openrouter_down="refused"`` points OpenRouter at a closed port."""
    servers = upstreams.servers
    openrouter_url = servers["openrouter"].base_url
    if openrouter_down == "refused":
        openrouter_url = f"http://127.0.0.1:{closed_port()}/api/v1"
    config: dict[str, Any] = {
        "providers": {
            "anthropic": {"api_key": ANTHROPIC_KEY, "base_url": servers["anthropic"].base_url},
            "gemini": {"api_key": GEMINI_KEY, "base_url": f"{servers['gemini'].url}/v1beta"},
            "openai": {"api_key": OPENAI_KEY, "base_url": servers["openai"].base_url},
            "openrouter": {"api_key": OPENROUTER_KEY, "base_url": openrouter_url,
                           "bypass": True},
        },
        "models": {
            "claude": ["anthropic/claude-sonnet-4-5"],
            "claude-then-openai": ["anthropic/claude-sonnet-4-5", "openai/gpt-4o"],
            "flash": ["gemini/gemini-2.5-flash"],
            "flash-then-openai": ["gemini/gemini-2.5-flash", "openai/gpt-4o"],
            "embed": ["gemini/text-embedding-004"],
        },
        "client_keys": [CLIENT_KEY],
        "timeouts": {"connect": 1, "read": 2, "deadline": 8},
        "retry": {"backoff_base": 0.01, "backoff_max": 0.02, "max_retry_after": 1},
    }
    config.update(overrides)
    return config


class Gateway:
    def __init__(self, app: BadgrApp, server: SimulatedServer) -> None:
        self.app = app
        self.server = server

    def client(self, **options: Any) -> openai.OpenAI:
        options.setdefault("max_retries", 0)
        return openai.OpenAI(base_url=self.server.base_url, api_key=CLIENT_KEY, **options)

    def async_client(self, **options: Any) -> openai.AsyncOpenAI:
        options.setdefault("max_retries", 0)
        return openai.AsyncOpenAI(base_url=self.server.base_url, api_key=CLIENT_KEY, **options)

    def reset_health(self) -> None:
        self.app.engine.store.clear()  # type: ignore[attr-defined]
