"""The async driver keeps upstream connections: after a whole stream, and after an error body.

A raw asyncio upstream on 127.0.0.1 counts the TCP connections it accepts; the engine serves
requests one after another, so every request after the first must reuse the pooled one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator

import pytest

from badgr_middleware.engine import Engine
from badgr_middleware.messages import HttpRequest

SSE = b"".join(
    b"data: " + json.dumps({"choices": [{"index": 0, "delta": {"content": f"t{i}"},
                                         "finish_reason": "stop" if i == 2 else None}]}
                           ).encode() + b"\n\n"
    for i in range(3)
) + b"data: [DONE]\n\n"
ERROR = b'{"error":{"message":"overloaded","type":"server_error"}}'
JSON_OK = json.dumps({"id": "x", "object": "chat.completion", "choices": [
    {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
]}).encode()


class Upstream(asyncio.Protocol):
    connections = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        type(self).connections += 1
        self.transport = transport
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        head, sep, rest = self.buffer.partition(b"\r\n\r\n")
        if not sep:
            return
        length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                      if line.lower().startswith(b"content-length"))
        if len(rest) < length:
            return
        self.buffer = rest[length:]
        if b"/fail/" in head.split(b"\r\n")[0]:
            self.transport.write(b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: "
                                 b"application/json\r\ncontent-length: %d\r\n\r\n%s"
                                 % (len(ERROR), ERROR))
        elif b'"stream":true' in rest:
            chunk = b"%x\r\n%s\r\n0\r\n\r\n" % (len(SSE), SSE)
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n" + chunk)
        else:
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(JSON_OK), JSON_OK))


@pytest.fixture
async def upstream() -> AsyncIterator[str]:
    Upstream.connections = 0
    server = await asyncio.get_running_loop().create_server(Upstream, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


def engine_for(base: str) -> Engine:
    return Engine({
        "providers": {
            "up": {"kind": "openai", "base_url": f"{base}/v1", "api_key": "x"},
            "down": {"kind": "openai", "base_url": f"{base}/fail/v1", "api_key": "x"},
        },
        "models": {"plain": ["up/m"], "failover": ["down/m", "up/m"]},
        "allow_anonymous": True,
        "breaker": {"consecutive_failures": 1000, "min_requests": 1000},
    })


def request(model: str, stream: bool) -> HttpRequest:
    body = json.dumps({"model": model, "stream": stream,
                       "messages": [{"role": "user", "content": "hi"}]},
                      separators=(",", ":")).encode()
    return HttpRequest("POST", "chat/completions", {"content-type": "application/json"}, body)


@pytest.mark.anyio
async def test_streams_give_their_connection_back(upstream: str) -> None:
    engine = engine_for(upstream)
    try:
        for _ in range(3):
            response = await engine.handle_async(request("plain", stream=True))
            assert response.status == 200
            body = response.body
            async for chunk in response.stream:  # type: ignore[union-attr]
                body += chunk
            await response.stream.aclose()  # type: ignore[union-attr]
            assert body.endswith(b"data: [DONE]\n\n")
        assert Upstream.connections == 1
    finally:
        await engine.aclose()


@pytest.mark.anyio
async def test_failed_attempts_give_their_connection_back(upstream: str) -> None:
    engine = engine_for(upstream)
    try:
        for _ in range(3):
            response = await engine.handle_async(request("failover", stream=False))
            assert response.status == 200
            assert ("x-badgr-attempts", "2") in response.headers
        assert Upstream.connections == 2  # one per provider: each has its own pool
    finally:
        await engine.aclose()
