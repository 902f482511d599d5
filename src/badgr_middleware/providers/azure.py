"""Azure OpenAI: the OpenAI wire format at deployment URLs (wire-formats.md §7).

``POST {endpoint}/openai/deployments/{deployment}/{route}?api-version={api_version}`` with the
key in an ``api-key`` header. The deployment is the provider's ``deployment`` if configured,
else the target's model (Azure names deployments, not models). Bodies, streams and errors are
OpenAI's (content-filter refusals come back as a 400 with ``code: "content_filter"``, which is
the client's answer, not an outage).
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from .base import UpstreamRequest
from .openai import OpenAICompatible

if TYPE_CHECKING:
    from ..config import ProviderConfig
    from ..routing.plan import RoutedRequest, Target

__all__ = ["AzureOpenAI"]


class AzureOpenAI(OpenAICompatible):
    """An Azure OpenAI resource; ``config.base_url`` is its endpoint."""

    kind = "azure"

    def __init__(self, config: ProviderConfig) -> None:
        super().__init__(config)
        for headers in (self._json_headers, self._sse_headers):
            if self._key and headers.get("authorization") == f"Bearer {self._key}":
                del headers["authorization"]
                headers.setdefault("api-key", self._key)

    def build_request(self, request: RoutedRequest, target: Target) -> UpstreamRequest:
        upstream = super().build_request(request, target)
        deployment = quote(self.config.deployment or target.model, safe="")
        version = quote(self.config.api_version or "", safe="")
        endpoint = self.config.base_url.removesuffix("/openai")
        url = (f"{endpoint}/openai/deployments/{deployment}/{request.route}"
               f"?api-version={version}")
        return UpstreamRequest(upstream.method, url, upstream.headers, upstream.content)
