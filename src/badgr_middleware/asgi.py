"""ASGI entry points: ``from badgr_middleware.asgi import BadgrMiddleware``.

:class:`BadgrApp` serves the endpoint alone; :class:`BadgrMiddleware` wraps any ASGI app
(Starlette, FastAPI, Django's ``asgi.py``, Quart) and serves the endpoint under its prefix.
Both live in :mod:`badgr_middleware.http.asgi`; this module only names them.
"""

from __future__ import annotations

from .http.asgi import BadgrApp, BadgrMiddleware

__all__ = ["BadgrApp", "BadgrMiddleware"]
