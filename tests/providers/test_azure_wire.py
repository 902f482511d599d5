"""Azure OpenAI: deployment URLs, api-version, api-key; bodies pass through as OpenAI's."""

from __future__ import annotations

import json

from badgr_middleware.config import Config
from badgr_middleware.providers import wire_for
from badgr_middleware.providers.azure import AzureOpenAI
from badgr_middleware.routing.outcomes import FailureKind
from badgr_middleware.routing.plan import Plan, RoutedRequest, Target

KEY = "azure-key-0123456789"
CONFIG = Config.from_dict({
    "providers": {
        "az": {"kind": "azure", "base_url": "https://res.openai.azure.com/", "api_key": KEY,
               "api_version": "2024-10-21"},
        "pinned": {"kind": "azure", "base_url": "https://res.openai.azure.com/openai",
                   "api_key": KEY, "api_version": "2025-01-01-preview", "deployment": "prod-4o",
                   "headers": {"X-Trace": "1"}},
        "entra": {"kind": "azure", "base_url": "https://res.openai.azure.com",
                  "api_version": "2024-10-21", "headers": {"Authorization": "Bearer entra"}},
    },
    "allow_anonymous": True,
})


def request(route: str = "chat/completions", stream: bool = False) -> RoutedRequest:
    body = {"model": "x", "messages": [{"role": "user", "content": "Hi"}], "stream": stream,
            "provider": {"sort": "price"}}
    return RoutedRequest(route, body, Plan((Target("az", "gpt-4o"),)), "r", stream, "x")


def test_deployment_url_version_and_key_header() -> None:
    wire = wire_for(CONFIG.providers["az"])
    assert isinstance(wire, AzureOpenAI)
    upstream = wire.build_request(request(), Target("az", "gpt-4o"))
    assert upstream.url == (
        "https://res.openai.azure.com/openai/deployments/gpt-4o/chat/completions"
        "?api-version=2024-10-21")
    assert upstream.headers["api-key"] == KEY and "authorization" not in upstream.headers
    assert json.loads(upstream.content) == {
        "model": "gpt-4o", "messages": [{"role": "user", "content": "Hi"}], "stream": False}


def test_configured_deployment_and_routes() -> None:
    wire = wire_for(CONFIG.providers["pinned"])
    upstream = wire.build_request(request("embeddings", stream=False), Target("pinned", "x"))
    assert upstream.url == ("https://res.openai.azure.com/openai/deployments/prod-4o/embeddings"
                            "?api-version=2025-01-01-preview")
    assert upstream.headers["x-trace"] == "1"
    streamed = wire.build_request(request(stream=True), Target("pinned", "x"))
    assert streamed.headers["accept"] == "text/event-stream"


def test_entra_token_header_wins() -> None:
    upstream = wire_for(CONFIG.providers["entra"]).build_request(request(), Target("entra", "d"))
    assert upstream.headers["authorization"] == "Bearer entra"
    assert "api-key" not in upstream.headers


def test_content_filter_is_the_clients_answer() -> None:
    wire = wire_for(CONFIG.providers["az"])
    body = json.dumps({"error": {"message": "The response was filtered", "type": None,
                                 "param": "prompt", "code": "content_filter",
                                 "status": 400}}).encode()
    failure = wire.classify_error(400, {}, body, 0.0)
    assert (failure.kind, failure.code, failure.param) == (FailureKind.CLIENT, "content_filter",
                                                           "prompt")
