"""badgr's plain WSGI app (``BadgrWSGIApp``), served by gunicorn (the plain-WSGI row)."""

from __future__ import annotations

from bench_config import bench_config

from badgr_middleware import BadgrWSGIApp

app = BadgrWSGIApp(bench_config())
