"""Minimal pass-through ASGI proxies: the performance floor of each async upstream client.

One module, three clients:

* ``httpx``          plain ``httpx.AsyncClient`` (httpcore connection pool)
* ``httpx-aiohttp``  ``httpx.AsyncClient(transport=httpx_aiohttp.AiohttpTransport(...))``
* ``aiohttp``        ``aiohttp.ClientSession`` used directly

Each proxy reads the request body, POSTs it to ``<upstream>/v1/chat/completions`` with one
shared client per process (created lazily on the first request, in the running loop) and
returns the upstream status, content-type and body. Streamed (``text/event-stream``)
responses are forwarded chunk by chunk as they arrive.

Run: ``python benchmarks/floors.py --client aiohttp --upstream http://127.0.0.1:8001 --port 8002``
or ``BENCH_CLIENT=aiohttp BENCH_UPSTREAM=http://127.0.0.1:8001 python -m uvicorn
benchmarks.floors:app --port 8002``.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import aiohttp
import httpx
import httpx_aiohttp

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

CLIENTS = ("httpx", "httpx-aiohttp", "aiohttp")
# upstream connections per process: comfortably above 64 concurrent requests (0: no limit,
# for the memory-per-1,000-streams measurement; set with --pool or BENCH_POOL_SIZE)
POOL_SIZE = int(os.environ.get("BENCH_POOL_SIZE", "100"))
KEEPALIVE_SECONDS = 30.0
TIMEOUT_SECONDS = 30.0
REQUEST_HEADERS = {"content-type": "application/json"}


class Config:
    """Process-wide proxy settings (set by ``main`` or from the environment)."""

    client: str = os.environ.get("BENCH_CLIENT", "aiohttp")
    upstream: str = os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8001")

    @classmethod
    def url(cls) -> str:
        """Full upstream chat-completions URL."""
        return cls.upstream.rstrip("/") + "/v1/chat/completions"


_httpx_client: httpx.AsyncClient | None = None
_aiohttp_session: aiohttp.ClientSession | None = None


def _httpx_limits() -> httpx.Limits:
    """Explicit pool limits shared by both httpx-based candidates."""
    return httpx.Limits(
        max_connections=POOL_SIZE,
        max_keepalive_connections=POOL_SIZE,
        keepalive_expiry=KEEPALIVE_SECONDS,
    )


def get_httpx_client() -> httpx.AsyncClient:
    """Return the shared httpx client for the configured candidate (created lazily)."""
    global _httpx_client
    if _httpx_client is None:
        timeout = httpx.Timeout(TIMEOUT_SECONDS)
        if Config.client == "httpx-aiohttp":
            transport = httpx_aiohttp.AiohttpTransport(limits=_httpx_limits())
            _httpx_client = httpx.AsyncClient(transport=transport, timeout=timeout)
        else:
            _httpx_client = httpx.AsyncClient(limits=_httpx_limits(), timeout=timeout)
    return _httpx_client


def get_aiohttp_session() -> aiohttp.ClientSession:
    """Return the shared aiohttp session (created lazily in the running loop)."""
    global _aiohttp_session
    if _aiohttp_session is None:
        connector = aiohttp.TCPConnector(
            limit=POOL_SIZE, limit_per_host=POOL_SIZE, keepalive_timeout=KEEPALIVE_SECONDS
        )
        _aiohttp_session = aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=TIMEOUT_SECONDS),
            auto_decompress=False,
        )
    return _aiohttp_session


async def close_clients() -> None:
    """Close whichever shared client exists."""
    global _httpx_client, _aiohttp_session
    if _httpx_client is not None:
        await _httpx_client.aclose()
        _httpx_client = None
    if _aiohttp_session is not None:
        await _aiohttp_session.close()
        _aiohttp_session = None


def _start(status: int, content_type: str, length: int | None = None) -> Message:
    """Build an ``http.response.start`` message."""
    headers = [(b"content-type", content_type.encode("latin-1"))]
    if length is not None:
        headers.append((b"content-length", str(length).encode()))
    return {"type": "http.response.start", "status": status, "headers": headers}


def _is_event_stream(content_type: str) -> bool:
    """True for an SSE response."""
    return content_type.startswith("text/event-stream")


async def proxy_httpx(body: bytes, send: Send) -> None:
    """Forward one request through an ``httpx.AsyncClient`` (either transport)."""
    client = get_httpx_client()
    request = client.build_request("POST", Config.url(), content=body, headers=REQUEST_HEADERS)
    response = await client.send(request, stream=True)
    try:
        content_type = response.headers.get("content-type", "application/octet-stream")
        if _is_event_stream(content_type):
            await send(_start(response.status_code, content_type))
            async for chunk in response.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            data = await response.aread()
            await send(_start(response.status_code, content_type, len(data)))
            await send({"type": "http.response.body", "body": data, "more_body": False})
    finally:
        await response.aclose()


async def proxy_aiohttp(body: bytes, send: Send) -> None:
    """Forward one request through an ``aiohttp.ClientSession``."""
    session = get_aiohttp_session()
    async with session.post(Config.url(), data=body, headers=REQUEST_HEADERS) as response:
        content_type = response.headers.get("content-type", "application/octet-stream")
        if _is_event_stream(content_type):
            await send(_start(response.status, content_type))
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        else:
            data = await response.read()
            await send(_start(response.status, content_type, len(data)))
            await send({"type": "http.response.body", "body": data, "more_body": False})


async def _read_body(receive: Receive) -> bytes:
    """Read the whole ASGI request body."""
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(parts)


async def _lifespan(receive: Receive, send: Send) -> None:
    """Handle ASGI lifespan; close the shared client on shutdown."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await close_clients()
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """The ASGI pass-through proxy."""
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    body = await _read_body(receive)
    if Config.client == "aiohttp":
        await proxy_aiohttp(body, send)
    else:
        await proxy_httpx(body, send)


def main() -> None:
    """Run one proxy under uvicorn (single worker, quiet logs)."""
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--client", choices=CLIENTS, default=Config.client)
    parser.add_argument("--upstream", default=Config.upstream, help="base URL of the upstream")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8002)
    parser.add_argument("--pool", type=int, default=POOL_SIZE, help="upstream connections")
    args = parser.parse_args()
    globals()["POOL_SIZE"] = args.pool
    Config.client = args.client
    Config.upstream = args.upstream
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        backlog=1024,
    )


if __name__ == "__main__":
    main()
