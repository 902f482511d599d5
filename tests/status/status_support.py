"""Helpers for the status tests: a fake official status server (Statuspage JSON, RSS feeds,
broken and slow pages, on 127.0.0.1), page bodies, and the simulated upstreams' config."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import Counter
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from badgr_middleware.simulator import SimulatedProvider

CLIENT_KEY = "client-key-for-status-tests"
STATUS_KEY = "operator-key-for-status-tests"
UPSTREAM_KEY = "sk-upstream-secret-never-shown"


@dataclass
class Page:
    body: bytes
    content_type: str = "application/json"
    status: int = 200
    delay: float = 0.0  # seconds before the headers
    drip: float = 0.0  # seconds between body bytes (a page that never quite finishes)


class StatusServer:
    """A fake status-page host: Statuspage JSON, RSS/Atom feeds, broken and slow pages."""

    def __init__(self) -> None:
        self.pages: dict[str, Page] = {}
        self.hits: Counter[str] = Counter()
        self._closing = threading.Event()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                server.hits[self.path] += 1
                page = server.pages.get(self.path)
                if page is None:
                    self.send_error(404)
                    return
                if page.delay and server._closing.wait(page.delay):
                    return
                self.send_response(page.status)
                self.send_header("content-type", page.content_type)
                self.send_header("content-length", str(len(page.body)))
                self.end_headers()
                with contextlib.suppress(OSError):
                    if page.drip:
                        for byte in page.body:
                            if server._closing.wait(page.drip):
                                return
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                    else:
                        self.wfile.write(page.body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def page(self, path: str, body: bytes | str, **options: Any) -> str:
        self.pages[path] = Page(body.encode() if isinstance(body, str) else body, **options)
        return self.url + path

    def close(self) -> None:
        self._closing.set()
        self.httpd.shutdown()
        self.httpd.server_close()


def statuspage(indicator: str, description: str = "", incidents: tuple[str, ...] = ()) -> str:
    """An Atlassian Statuspage v2 ``summary.json`` body."""
    import json

    return json.dumps({
        "page": {"id": "x", "name": "Fake", "url": "http://127.0.0.1", "updated_at": "now"},
        "status": {"indicator": indicator, "description": description or indicator},
        "components": [{"id": "c1", "name": "API", "status": "operational"}],
        "incidents": [{"id": f"i{n}", "name": name, "status": "investigating",
                       "impact": indicator} for n, name in enumerate(incidents)],
        "scheduled_maintenances": [],
    })


def rss(*items: tuple[str, float]) -> str:
    """An RSS 2.0 incident feed: (title, unix time) per item."""
    from email.utils import formatdate

    entries = "".join(
        f"<item><title>{title}</title><description>{title}</description>"
        f"<pubDate>{formatdate(at, usegmt=True)}</pubDate></item>" for title, at in items
    )
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Fake incidents</title>'
            f"{entries}</channel></rss>")


@dataclass
class Upstreams:
    a: SimulatedProvider
    b: SimulatedProvider
    urls: dict[str, str]

    def config(self, **extra: Any) -> dict[str, Any]:
        return {
            "providers": {name: {"kind": "openai", "base_url": url, "api_key": UPSTREAM_KEY}
                          for name, url in self.urls.items()},
            "models": {"m": ["a/x", "b/x"]},
            "client_keys": [CLIENT_KEY],
            "retry": {"attempts_per_target": 1},
            **extra,
        }


def wait_for(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
