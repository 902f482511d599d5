"""What every wire format provides: the interface the drivers talk to.

A wire format turns an OpenAI-shaped request into the upstream's HTTP request, and the
upstream's answer back into OpenAI shape: errors into :class:`Failure`, a body into the
client's body, and a byte stream into OpenAI ``chat.completion.chunk`` events. None of it does
I/O; the drivers do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ..routing.outcomes import Failure

if TYPE_CHECKING:
    from ..routing.plan import RoutedRequest, Target

__all__ = ["StreamTranslator", "UpstreamRequest", "Wire"]


@dataclass(slots=True)  # not frozen: built per request, and frozen ones cost 5x to build
class UpstreamRequest:
    method: str
    url: str
    headers: dict[str, str]
    content: bytes


class StreamTranslator(Protocol):
    """Watches (and, for non-OpenAI formats, translates) one upstream stream.

    ``feed`` returns the OpenAI-format bytes to forward, whole events only. ``started`` turns
    true at the first event that carries the answer; ``error`` is set by an in-band error
    (``error_in_band``: its event is in the returned bytes) or by :meth:`close` when the
    stream ended unfinished; ``usage`` is the answer's usage when the upstream sent it.
    """

    started: bool
    finished: bool
    error: Failure | None
    error_in_band: bool
    usage: dict[str, Any] | None

    def feed(self, chunk: bytes) -> bytes: ...

    def close(self) -> bytes: ...


class Wire(Protocol):
    name: str
    # whether the upstream continues a final assistant message natively (Anthropic's
    # prefill); otherwise a resumed stream also asks in words to continue
    prefill: bool

    def build_request(self, request: RoutedRequest, target: Target) -> UpstreamRequest: ...

    def classify_error(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> Failure: ...

    def check_body(
        self, route: str, body: bytes
    ) -> tuple[Failure | None, dict[str, Any] | None]: ...

    def response_body(self, request: RoutedRequest, target: Target, body: bytes) -> bytes:
        """The body the client gets for a checked upstream body (OpenAI: the same bytes)."""
        ...

    def stream(self, request: RoutedRequest, target: Target) -> StreamTranslator: ...

    def scrub(self, text: str) -> str: ...
