"""What an upstream attempt can end in."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

__all__ = ["Delivered", "Failure", "FailureKind"]


class FailureKind(StrEnum):
    """The classes of the failure policy; each row of DESIGN.md's table is one kind."""

    CONNECT = "connect_error"  # refused, reset before a response, DNS, connect timeout
    TIMEOUT = "timeout"  # no first byte (or no next byte) in time
    SERVER = "server_error"  # 500/502/503/504/520-524/529/408: retryable
    RATE_LIMITED = "rate_limited"  # 429
    QUOTA = "quota_exhausted"  # 402, or a 429 that is really a billing stop
    AUTH = "unauthorized"  # 401/403: the provider key is wrong
    NOT_FOUND = "model_not_found"  # 404
    CONTEXT_LENGTH = "context_length_exceeded"  # 400 because the prompt is too long
    CLIENT = "invalid_request"  # other 400/422: the client's own error
    BAD_RESPONSE = "bad_response"  # 200 with an error body, unparseable body, odd status
    STREAM_BROKEN = "stream_broken"  # the connection broke mid-stream
    STREAM_INCOMPLETE = "stream_incomplete"  # ended without [DONE]/finish reason/message_stop
    STREAM_IDLE = "stream_idle"  # silent mid-stream for longer than the read (idle) timeout
    STREAM_MALFORMED = "stream_malformed"  # an event that is not valid for its format
    STREAM_ERROR = "stream_error"  # the upstream sent an error event after content
    CLIENT_DISCONNECTED = "client_disconnected"  # not the upstream's fault
    CIRCUIT_OPEN = "circuit_open"  # skipped: a breaker is open or its probe slots are taken
    UNSUPPORTED = "unsupported"  # this target's wire format cannot serve the request as asked
    # not a failure: the target's rate-limit headers say its quota is nearly used up, so it
    # is tried last until the limit resets (kept in the health store like a cooldown)
    QUOTA_LOW = "quota_low"


@dataclass(frozen=True, slots=True)
class Failure:
    """One failed attempt. ``message`` is safe to show a client (keys are scrubbed)."""

    kind: FailureKind
    status: int | None = None
    message: str = ""
    code: str | None = None
    retry_after: float | None = None  # seconds, counted from when the response arrived
    param: str | None = None


@dataclass(slots=True)  # not frozen: built per request, and frozen ones cost 5x to build
class Delivered:
    """What the driver reports once the response has been handed to the client."""

    usage: dict[str, Any] | None = field(default=None, hash=False)
    failure: Failure | None = None  # a stream that broke after its first byte
