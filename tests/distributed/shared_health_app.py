"""One badgr server process for the distributed tests: ``BadgrApp`` under uvicorn.

Run as ``python shared_health_app.py --port P`` with the badgr configuration, as JSON, in the
environment variable ``BADGR_DISTRIBUTED_CONFIG``. Everything under ``/v1`` is badgr itself,
exactly as ``badgr serve`` would serve it. One extra route lets the test look inside the
process without touching its health: ``GET /_test/store`` answers
``{"store": <class name>, "degraded": <bool or null>, "events": [...]}``, where ``events``
lists every ``store_degraded`` / ``store_recovered`` signal this process has sent, in order.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn

from badgr_middleware import BadgrApp, signals
from badgr_middleware.signals import StoreChanged

CONFIG_ENV = "BADGR_DISTRIBUTED_CONFIG"
INTROSPECTION_PATH = "/_test/store"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

badgr = BadgrApp(json.loads(os.environ[CONFIG_ENV]))

_events: list[dict[str, Any]] = []
_events_lock = threading.Lock()


def _on_store_changed(sender: object, event: StoreChanged) -> None:
    with _events_lock:
        _events.append({"state": event.state, "error": event.error})


# blinker keeps weak references by default; these module-level functions live as long as we do
signals.store_degraded.connect(_on_store_changed)
signals.store_recovered.connect(_on_store_changed)


def _introspection() -> bytes:
    store = badgr.engine.store
    with _events_lock:
        events = list(_events)
    body = {
        "store": type(store).__name__,
        "degraded": getattr(store, "degraded", None),
        "events": events,
    }
    return json.dumps(body).encode()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """badgr, plus the read-only introspection route."""
    if scope["type"] == "http" and scope.get("path") == INTROSPECTION_PATH:
        body = _introspection()
        headers = [(b"content-type", b"application/json"),
                   (b"content-length", str(len(body)).encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return
    await badgr(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning", access_log=False,
                lifespan="on", timeout_graceful_shutdown=2)


if __name__ == "__main__":
    main()
