"""badgr-middleware: an OpenAI-compatible LLM endpoint inside your app, with failover.

Mount it with :class:`BadgrApp` / :class:`BadgrMiddleware` (ASGI) or
:class:`BadgrWSGIApp` / :class:`BadgrWSGIMiddleware` (WSGI); Django and Flask users add
``django_badgr`` or ``flask_badgr``. Routing decisions are published as blinker signals in
:mod:`badgr_middleware.signals`.
"""

from __future__ import annotations

from . import signals
from .config import Config, ConfigError, ConfigProblem, load_config
from .engine import Engine
from .errors import ApiError
from .http.asgi import BadgrApp, BadgrMiddleware
from .http.wsgi import BadgrWSGIApp, BadgrWSGIMiddleware
from .messages import HttpRequest, HttpResponse
from .secret import Secret

__all__ = [
    "ApiError",
    "BadgrApp",
    "BadgrMiddleware",
    "BadgrWSGIApp",
    "BadgrWSGIMiddleware",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "Engine",
    "HttpRequest",
    "HttpResponse",
    "Secret",
    "load_config",
    "signals",
]

__version__ = "0.1.0"
