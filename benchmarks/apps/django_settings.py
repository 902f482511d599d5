"""A minimal Django project around django_badgr: the benchmark's Django-ASGI row.

Served by uvicorn as ``django_asgi:application``. No middleware and no database, so the row
measures Django's ASGI handler, URL resolution and the badgr view; a real project's middleware
comes on top.
"""

from __future__ import annotations

from bench_config import bench_config

SECRET_KEY = "benchmark-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
INSTALLED_APPS = ["django_badgr"]
MIDDLEWARE: list[str] = []
ROOT_URLCONF = "django_urls"
DATABASES: dict[str, object] = {}
USE_TZ = True
BADGR = bench_config()
