"""Fake OpenAI-compatible upstream for benchmarks: a raw asyncio HTTP/1.1 server.

``POST /v1/chat/completions`` answers with a small fixed ``chat.completion`` JSON body, or,
when the request body contains ``"stream": true``, with a chunked ``text/event-stream`` of
50 ``chat.completion.chunk`` events followed by ``data: [DONE]``.
``POST /fail503/v1/chat/completions`` answers ``503`` with an OpenAI-style error body (the
failing first target of the failover benchmark). Every response is pre-encoded at import
time, so the server spends almost no CPU per request.

Run: ``python benchmarks/upstream.py --port 8001 [--chunk-delay 0.02]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections.abc import Callable

STREAM_EVENTS = 50
MAX_HEADER_BYTES = 64 * 1024
COMPLETION_ID = "chatcmpl-bench0000000000000000000000"
MODEL = "bench-model"
CREATED = 1_700_000_000


def _completion_body() -> bytes:
    """Return the fixed non-streaming ``chat.completion`` JSON body."""
    payload = {
        "id": COMPLETION_ID,
        "object": "chat.completion",
        "created": CREATED,
        "model": MODEL,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello from the fake upstream."},
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 9, "completion_tokens": 7, "total_tokens": 16},
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def _sse_events() -> list[bytes]:
    """Return the SSE events of one streamed completion, ``[DONE]`` included."""
    events: list[bytes] = []
    for i in range(STREAM_EVENTS):
        if i == 0:
            delta: dict[str, str] = {"role": "assistant", "content": ""}
        elif i == STREAM_EVENTS - 1:
            delta = {}
        else:
            delta = {"content": f"tok{i} "}
        chunk = {
            "id": COMPLETION_ID,
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "delta": delta,
                    "logprobs": None,
                    "finish_reason": "stop" if i == STREAM_EVENTS - 1 else None,
                }
            ],
        }
        events.append(b"data: " + json.dumps(chunk, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def _chunk(data: bytes) -> bytes:
    """Frame ``data`` as one HTTP/1.1 chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


COMPLETION_BODY = _completion_body()
SSE_EVENTS = _sse_events()
SSE_BODY = b"".join(SSE_EVENTS)

COMPLETION_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: application/json\r\n"
    b"content-length: %d\r\n"
    b"connection: keep-alive\r\n"
    b"\r\n" % len(COMPLETION_BODY)
) + COMPLETION_BODY

STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"content-type: text/event-stream; charset=utf-8\r\n"
    b"cache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\n"
    b"connection: keep-alive\r\n"
    b"\r\n"
)
STREAM_CHUNKS = [_chunk(event) for event in SSE_EVENTS]
STREAM_END = b"0\r\n\r\n"
STREAM_RESPONSE = STREAM_HEAD + b"".join(STREAM_CHUNKS) + STREAM_END

NOT_FOUND_RESPONSE = (
    b"HTTP/1.1 404 Not Found\r\n"
    b"content-type: application/json\r\n"
    b"content-length: 21\r\n"
    b"\r\n"
    b'{"error":"not found"}\n'
)
UNAVAILABLE_BODY = b'{"error":{"message":"overloaded","type":"server_error","code":null}}'
UNAVAILABLE_RESPONSE = (
    b"HTTP/1.1 503 Service Unavailable\r\n"
    b"content-type: application/json\r\n"
    b"content-length: %d\r\n"
    b"connection: keep-alive\r\n"
    b"\r\n" % len(UNAVAILABLE_BODY)
) + UNAVAILABLE_BODY
FAIL_PATH = b"/fail503/v1/chat/completions"
BAD_REQUEST_RESPONSE = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def is_stream_request(body: bytes) -> bool:
    """Cheap check for ``"stream": true`` in a JSON request body."""
    return b'"stream": true' in body or b'"stream":true' in body


class UpstreamProtocol(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; handles Content-Length and chunked bodies."""

    def __init__(
        self,
        chunk_delay: float = 0.0,
        on_disconnect: Callable[[float], None] | None = None,
    ) -> None:
        self.chunk_delay = chunk_delay
        self.on_disconnect = on_disconnect
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.streaming: asyncio.Task[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Remember the transport."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def connection_lost(self, exc: Exception | None) -> None:
        """Stop any slow stream and report the disconnect time."""
        self.transport = None
        if self.streaming is not None:
            self.streaming.cancel()
        if self.on_disconnect is not None:
            self.on_disconnect(time.perf_counter())

    def data_received(self, data: bytes) -> None:
        """Buffer bytes and answer every complete request in the buffer."""
        self.buffer += data
        while self.transport is not None and self.streaming is None:
            request = self._take_request()
            if request is None:
                return
            self._respond(*request)

    def _take_request(self) -> tuple[bytes, bytes, bool] | None:
        """Pop one complete request (head line, body, close?) or return None."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self.buffer) > MAX_HEADER_BYTES:
                self._fail()
            return None
        head = bytes(self.buffer[:end])
        lines = head.split(b"\r\n")
        length = 0
        chunked = False
        close = False
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        start = end + 4
        if chunked:
            decoded = self._decode_chunked(start)
            if decoded is None:
                return None
            body, consumed = decoded
        else:
            if len(self.buffer) < start + length:
                return None
            body = bytes(self.buffer[start : start + length])
            consumed = start + length
        del self.buffer[:consumed]
        return lines[0], body, close

    def _decode_chunked(self, pos: int) -> tuple[bytes, int] | None:
        """Decode a chunked body starting at ``pos``; None while incomplete."""
        parts: list[bytes] = []
        while True:
            eol = self.buffer.find(b"\r\n", pos)
            if eol < 0:
                return None
            size = int(bytes(self.buffer[pos:eol]).split(b";")[0], 16)
            pos = eol + 2
            if size == 0:
                trailer_end = self.buffer.find(b"\r\n\r\n", pos - 2)
                if trailer_end < 0:
                    return None
                return b"".join(parts), trailer_end + 4
            if len(self.buffer) < pos + size + 2:
                return None
            parts.append(bytes(self.buffer[pos : pos + size]))
            pos += size + 2

    def _respond(self, request_line: bytes, body: bytes, close: bool) -> None:
        """Write the pre-encoded response for one request."""
        assert self.transport is not None
        method, _, rest = request_line.partition(b" ")
        path = rest.partition(b" ")[0]
        if method == b"POST" and path.partition(b"?")[0] == FAIL_PATH:
            self.transport.write(UNAVAILABLE_RESPONSE)
        elif method != b"POST" or path.partition(b"?")[0] != b"/v1/chat/completions":
            self.transport.write(NOT_FOUND_RESPONSE)
        elif not is_stream_request(body):
            self.transport.write(COMPLETION_RESPONSE)
        elif self.chunk_delay > 0:
            self.streaming = asyncio.get_running_loop().create_task(self._slow_stream(close))
            return
        else:
            self.transport.write(STREAM_RESPONSE)
        if close:
            self.transport.close()

    async def _slow_stream(self, close: bool) -> None:
        """Send the SSE stream one event at a time with ``chunk_delay`` between events."""
        try:
            assert self.transport is not None
            self.transport.write(STREAM_HEAD)
            for chunk in STREAM_CHUNKS:
                if self.transport is None:
                    return
                self.transport.write(chunk)
                await asyncio.sleep(self.chunk_delay)
            if self.transport is None:
                return
            self.transport.write(STREAM_END)
            if close:
                self.transport.close()
        finally:
            self.streaming = None
        if self.transport is not None and self.buffer:
            self.data_received(b"")

    def _fail(self) -> None:
        """Answer 400 and drop the connection."""
        if self.transport is not None:
            self.transport.write(BAD_REQUEST_RESPONSE)
            self.transport.close()


async def start_server(
    host: str = "127.0.0.1",
    port: int = 0,
    chunk_delay: float = 0.0,
    on_disconnect: Callable[[float], None] | None = None,
) -> asyncio.Server:
    """Start the fake upstream in the running loop and return the server."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(
        lambda: UpstreamProtocol(chunk_delay, on_disconnect),
        host,
        port,
        backlog=1024,
        reuse_address=True,
    )


async def _serve(host: str, port: int, chunk_delay: float) -> None:
    """Serve forever."""
    server = await start_server(host, port, chunk_delay)
    bound = server.sockets[0].getsockname()
    print(f"upstream listening on http://{bound[0]}:{bound[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8001)
    parser.add_argument(
        "--chunk-delay", type=float, default=0.0, help="seconds between SSE events (default 0)"
    )
    args = parser.parse_args()
    try:
        import uvloop  # type: ignore[import-not-found]
    except ImportError:
        runner: Callable[..., None] = asyncio.run
    else:
        runner = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        runner(_serve(args.host, args.port, args.chunk_delay))


if __name__ == "__main__":
    main()
