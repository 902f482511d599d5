"""Playing a prepared response to the client, distorted by a fault."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from . import payloads
from .exchange import Exchange, SimulatedConnectionAbort
from .faults import Fault
from .payloads import Headers, StreamPlan

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
TRUNCATED_JSON = b'{"id": "chatcmpl-'


@dataclass(frozen=True)
class Reply:
    """A prepared healthy response plus what the faults need to know about the request."""

    headers: Headers  # sent with every response (x-sim-provider, x-request-id)
    body: bytes  # the JSON body; unused when ``stream`` is set
    stream: StreamPlan | None
    model: str | None
    prompt_tokens: int
    provider: str
    chunk_delay: float = 0.0


async def play(ex: Exchange, reply: Reply, fault: Fault | None) -> None:
    """Send ``reply`` to the client as ``fault`` dictates (healthy when ``fault`` is None)."""
    if fault is None:
        await _healthy(ex, reply)
        return
    match fault.kind:
        case "slow":
            await ex.pause(fault.seconds)
            await _healthy(ex, reply)
        case "status":
            body = payloads.status_error(
                fault, model=reply.model, prompt_tokens=reply.prompt_tokens
            )
            extra = payloads.retry_after_headers(fault, time.time())
            await send_json(ex, fault.status, body, reply.headers + extra)
        case "invalid-json":
            await send_bytes(ex, 200, TRUNCATED_JSON, reply.headers + JSON_HEADERS)
        case "hang":
            await ex.pause(math.inf)
        case "hang-after-headers":
            await ex.start(200, reply.headers + (SSE_HEADERS if reply.stream else JSON_HEADERS))
            await ex.pause(math.inf)
        case "dribble":
            await _dribble(ex, reply, fault.seconds)
        case _ if reply.stream is None:
            await _distorted_json(ex, reply, fault)
        case _:
            await _distorted_stream(ex, reply, reply.stream, fault)


async def send_json(ex: Exchange, status: int, body: payloads.JsonObject, headers: Headers) -> None:
    """A complete JSON response."""
    await send_bytes(ex, status, payloads.encode_json(body), headers + JSON_HEADERS)


async def send_bytes(ex: Exchange, status: int, body: bytes, headers: Headers) -> None:
    """A complete response with a Content-Length."""
    await ex.start(status, _with_length(headers, body))
    await ex.body(body, more=False)


async def _healthy(ex: Exchange, reply: Reply) -> None:
    if reply.stream is None:
        await send_bytes(ex, 200, reply.body, reply.headers + JSON_HEADERS)
        return
    await ex.start(200, reply.headers + SSE_HEADERS)
    await _events(ex, reply.stream.events, reply.chunk_delay)
    await ex.body(b"", more=False)


async def _events(ex: Exchange, events: tuple[bytes, ...], delay: float) -> None:
    for i, event in enumerate(events):
        if i:
            await ex.pause(delay)
        await ex.body(event)


def _with_length(headers: Headers, body: bytes) -> Headers:
    return [*headers, (b"content-length", str(len(body)).encode())]


async def _dribble(ex: Exchange, reply: Reply, seconds: float) -> None:
    if reply.stream is None:
        data = reply.body
        await ex.start(200, _with_length(reply.headers + JSON_HEADERS, data))
    else:
        data = b"".join(reply.stream.events)
        await ex.start(200, reply.headers + SSE_HEADERS)
    for i in range(len(data)):
        if i:
            await ex.pause(seconds)
        await ex.body(data[i : i + 1])
    await ex.body(b"", more=False)


async def _distorted_json(ex: Exchange, reply: Reply, fault: Fault) -> None:
    """Stream-shaped faults applied to a JSON body (see docs/simulator.md)."""
    data = reply.body
    if fault.kind == "cut":
        # Promise the whole body, deliver part of it, drop the connection.
        await ex.start(200, _with_length(reply.headers + JSON_HEADERS, data))
        await ex.body(data[: min(fault.count, len(data) - 1)])
        raise SimulatedConnectionAbort(f"simulated fault {fault.spec!r}")
    if fault.kind == "idle":
        half = len(data) // 2
        await ex.start(200, reply.headers + JSON_HEADERS)
        await ex.body(data[:half])
        await ex.pause(fault.seconds)
        await ex.body(data[half:], more=False)
        return
    # error-body and midstream-error: OpenRouter's "200 with an error inside".
    await send_json(ex, 200, {"error": payloads.upstream_error(reply.provider)}, reply.headers)


async def _distorted_stream(ex: Exchange, reply: Reply, plan: StreamPlan, fault: Fault) -> None:
    await ex.start(200, reply.headers + SSE_HEADERS)
    delay = reply.chunk_delay
    if fault.kind == "error-body":
        await ex.body(payloads.sse_event({"error": payloads.upstream_error(reply.provider)}))
    elif fault.kind == "idle":
        await _events(ex, (*plan.head, *plan.content[:1]), delay)
        await ex.pause(fault.seconds)
        await _events(ex, (*plan.content[1:], *plan.tail), delay)
    else:  # cut and midstream-error
        await _events(ex, (*plan.head, *plan.content[: fault.count]), delay)
        if fault.kind == "cut":
            raise SimulatedConnectionAbort(f"simulated fault {fault.spec!r}")
        await ex.pause(delay)
        await ex.body(plan.error_event)
    await ex.body(b"", more=False)
