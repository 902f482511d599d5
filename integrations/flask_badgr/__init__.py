"""flask_badgr: badgr's OpenAI-compatible endpoint, with failover, inside a Flask app.

::

    from flask import Flask
    from flask_badgr import Badgr

    app = Flask(__name__)
    app.config["BADGR"] = {"providers": {...}, "models": {...}, "client_keys": [...]}
    badgr = Badgr(app)        # the app now serves /v1/chat/completions, /v1/models, ...

Routing decisions are the core's blinker signals (:mod:`badgr_middleware.signals`, also
importable as ``flask_badgr.signals``), sent with the Flask app as sender:
``signals.failover.connect(receiver, sender=app)``. See docs/flask.md.
"""

from __future__ import annotations

try:
    import flask as _flask  # noqa: F401
except ImportError as _error:  # pragma: no cover - exercised in a subprocess
    raise ImportError(
        "flask_badgr needs Flask: pip install 'badgr-middleware[flask]'", name="flask"
    ) from _error

from badgr_middleware import signals

from .extension import AuthenticateCallable, Badgr, BadgrState

__all__ = ["AuthenticateCallable", "Badgr", "BadgrState", "signals"]
