"""HTTP adapters over the neutral endpoint: pure ASGI and WSGI apps and middlewares."""

from __future__ import annotations


def subpath(path: str, prefix: str) -> str | None:
    """``path`` relative to the mount ``prefix``, or None when it lies outside it."""
    if not prefix:
        return path or "/"
    if path == prefix:
        return "/"
    if path.startswith(prefix) and path[len(prefix)] == "/":
        return path[len(prefix) :]
    return None
