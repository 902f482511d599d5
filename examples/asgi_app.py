"""Any ASGI app (here a bare one) with the badgr endpoint mounted under /v1.

    pip install 'badgr-middleware[server]'
    BADGR_CLIENT_KEY=dev OPENAI_API_KEY=sk-... uvicorn examples.asgi_app:app

Everything under /v1 is served by badgr; every other path still reaches your app.
"""

from __future__ import annotations

from typing import Any

from badgr_middleware import BadgrMiddleware


async def my_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"my app\n"})


app = BadgrMiddleware(my_app, {
    "providers": {"openai": {"api_key": "${OPENAI_API_KEY}"}},
    "models": {"default": ["openai/gpt-4o-mini"]},
    "client_keys": ["${BADGR_CLIENT_KEY}"],
})
