"""The framework-neutral request and response every adapter translates to and from."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field

__all__ = ["HttpRequest", "HttpResponse"]


@dataclass(slots=True)
class HttpRequest:
    """One inbound request. ``path`` is relative to the mount prefix (``/chat/completions``)."""

    method: str
    path: str
    headers: Mapping[str, str]  # lower-cased names
    body: bytes = b""
    query: str = ""
    principal: object | None = None  # set by an adapter that already authenticated the caller
    prefix: str = ""  # where the endpoint is mounted, for messages that name the full URL


@dataclass(slots=True)
class HttpResponse:
    """One outbound response: ``body`` bytes, then, for a stream, the byte ``stream``.

    A stream is an async iterator for async servers and a sync one for sync servers. It is
    already started, so closing it (``aclose()``/``close()``) always closes the upstream.
    """

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: AsyncIterator[bytes] | Iterator[bytes] | None = None

    def header(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.headers:
            if key == name:
                return value
        return None
