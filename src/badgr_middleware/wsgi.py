"""WSGI entry points: ``from badgr_middleware.wsgi import BadgrWSGIMiddleware``.

:class:`BadgrWSGIApp` serves the endpoint alone; :class:`BadgrWSGIMiddleware` wraps any WSGI
app (Flask, Django's ``wsgi.py``, Pyramid, Bottle, Falcon) and serves the endpoint under its
prefix. Both live in :mod:`badgr_middleware.http.wsgi`; this module only names them.
"""

from __future__ import annotations

from .http.wsgi import BadgrWSGIApp, BadgrWSGIMiddleware

__all__ = ["BadgrWSGIApp", "BadgrWSGIMiddleware"]
