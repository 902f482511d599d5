"""A WSGI module for gunicorn: ``gunicorn --chdir tests/wsgi wsgi_app:application``.

Configured entirely by environment variables, so one file serves every test server:

- ``BADGR_WSGI_CONFIG``: the badgr config, as JSON.
- ``BADGR_WSGI_MODE``: ``app`` (default) serves :class:`BadgrWSGIApp` alone; ``middleware``
  wraps :func:`hello_app` in :class:`BadgrWSGIMiddleware`.
- ``BADGR_WSGI_SIGNAL_LOG``: a file that gets one JSON line per badgr signal (its name, the
  worker's pid and the payload's scalar fields), plus a ``worker_booted`` line when a worker
  imports this module. The test process reads it to see what happened inside gunicorn.
"""

from __future__ import annotations

import dataclasses
import json
import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

import blinker

from badgr_middleware import signals
from badgr_middleware.http.wsgi import BadgrWSGIApp, BadgrWSGIMiddleware

CONFIG_ENV = "BADGR_WSGI_CONFIG"
MODE_ENV = "BADGR_WSGI_MODE"
SIGNAL_LOG_ENV = "BADGR_WSGI_SIGNAL_LOG"

# every signal badgr exports, so a new one is logged without touching this file
SIGNAL_NAMES = tuple(
    name for name in signals.__all__ if isinstance(getattr(signals, name), blinker.Signal)
)

_log_path = os.environ[SIGNAL_LOG_ENV]
_log_lock = threading.Lock()


def write_line(record: dict[str, Any]) -> None:
    """Append one JSON line; one write() per line, so workers never interleave."""
    line = json.dumps({**record, "pid": os.getpid()}) + "\n"
    with _log_lock, open(_log_path, "a", encoding="utf-8") as log:
        log.write(line)


def _receiver(name: str) -> Callable[..., None]:
    def receive(sender: object, event: object) -> None:
        fields = {
            f.name: getattr(event, f.name)
            for f in dataclasses.fields(event)  # type: ignore[arg-type]
            if isinstance(getattr(event, f.name), str | int | float | bool | None)
        }
        write_line({"signal": name, **fields})

    return receive


# blinker holds receivers weakly: this list keeps them alive for the worker's lifetime
_receivers = [_receiver(name) for name in SIGNAL_NAMES]
for _name, _receive in zip(SIGNAL_NAMES, _receivers, strict=True):
    getattr(signals, _name).connect(_receive)


def hello_app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The app badgr's middleware wraps: ``hello`` on every path, with what it was given."""
    start_response(
        "200 OK",
        [
            ("content-type", "text/plain"),
            ("content-length", "5"),
            ("x-script-name", environ.get("SCRIPT_NAME", "")),
            ("x-path-info", environ.get("PATH_INFO", "")),
        ],
    )
    return [b"hello"]


_config = json.loads(os.environ[CONFIG_ENV])
if os.environ.get(MODE_ENV, "app") == "middleware":
    application: Any = BadgrWSGIMiddleware(hello_app, _config)
else:
    application = BadgrWSGIApp(_config)

write_line({"signal": "worker_booted"})
