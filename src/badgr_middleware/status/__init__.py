"""Status: the health snapshot as JSON and as an HTML page, and the official status pages.

- :func:`build_status` turns a health-store snapshot into the ``GET {prefix}/status`` document;
- :func:`render_page` is the self-contained HTML page served when a browser asks for HTML;
- :class:`StatusPoller` polls the providers' official status pages in the background.
"""

from __future__ import annotations

from .official import DEFAULT_SOURCES, StatusPoller, parse_feed, parse_statuspage, sources_for
from .page import render_page, wants_html
from .snapshot import build_status, health_entry, status_keys

__all__ = [
    "DEFAULT_SOURCES",
    "StatusPoller",
    "build_status",
    "health_entry",
    "parse_feed",
    "parse_statuspage",
    "render_page",
    "sources_for",
    "status_keys",
    "wants_html",
]
