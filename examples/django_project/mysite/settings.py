"""Settings of the example project: django_badgr in front of two providers.

``run.py`` starts two simulated providers and points ``MYSITE_PRIMARY_URL`` and
``MYSITE_BACKUP_URL`` at them. For real providers, replace ``BADGR`` with something like::

    BADGR = {
        "providers": {
            "openrouter": {"api_key": "${OPENROUTER_API_KEY}"},
            "openai": {"api_key": "${OPENAI_API_KEY}"},
        },
        "models": {"smart": ["openrouter/openai/gpt-4o", "openai/gpt-4o"]},
        "client_keys": ["${BADGR_CLIENT_KEY}"],
    }
"""

from __future__ import annotations

import os

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "example-project-not-a-secret")
DEBUG = os.environ.get("DJANGO_DEBUG") == "1"
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]

INSTALLED_APPS = [
    "django_badgr",
    "mysite",  # its apps.py connects the failover receiver in signals.py
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.gzip.GZipMiddleware",  # badgr's event streams skip it
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",  # badgr's view is exempt: clients send keys
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "mysite.urls"
ASGI_APPLICATION = "mysite.asgi.application"
WSGI_APPLICATION = "mysite.wsgi.application"
DATABASES: dict[str, object] = {}  # badgr needs no database
USE_TZ = True

BADGR = {
    "providers": {
        "primary": {
            "kind": "openai",
            "base_url": "${MYSITE_PRIMARY_URL:-http://127.0.0.1:8101/v1}",
            "api_key": "sim",
        },
        "backup": {
            "kind": "openai",
            "base_url": "${MYSITE_BACKUP_URL:-http://127.0.0.1:8102/v1}",
            "api_key": "sim",
        },
    },
    "models": {
        "chat": ["primary/sim-small", "backup/sim-small"],
        # run.py makes the primary answer 503 for sim-flaky: every request fails over
        "flaky": ["primary/sim-flaky", "backup/sim-small"],
    },
    "client_keys": ["${BADGR_CLIENT_KEY:-dev-key-change-me}"],
    "retry": {"backoff_base": 0.05, "backoff_max": 0.2},
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "mysite": {"handlers": ["console"], "level": "INFO"},
        "django_badgr": {"handlers": ["console"], "level": "WARNING"},
    },
}
