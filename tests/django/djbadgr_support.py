"""Helpers shared by the tests in tests/django (imported by name: no package here)."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from badgr_middleware.simulator import SimulatedProvider, closed_port

CLIENT_KEY = "django-tests-client-key"
UPSTREAM_KEY = "sk-django-tests-upstream-0123456789"
MESSAGES = [{"role": "user", "content": "Say hello"}]
# Django's own warning when it has to buffer a stream: it must fail the test that caused it
BUFFERING_WARNING = "StreamingHttpResponse must consume"

T = TypeVar("T")


def django_test_settings() -> dict[str, Any]:
    """The settings tests/django/conftest.py configures Django with."""
    import django

    middleware = [
        "django.middleware.security.SecurityMiddleware",
        "django.middleware.gzip.GZipMiddleware",
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.common.CommonMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
    ]
    if django.VERSION >= (5, 1):
        middleware.append("django.contrib.auth.middleware.LoginRequiredMiddleware")
    return {
        "SECRET_KEY": "django-badgr-tests-only",
        "DEBUG": False,
        "ALLOWED_HOSTS": ["testserver", "127.0.0.1", "localhost"],
        "ROOT_URLCONF": "badgr_test_urls",
        "INSTALLED_APPS": [
            "django.contrib.contenttypes",
            "django.contrib.auth",
            "django.contrib.sessions",
            "django_badgr",
        ],
        "MIDDLEWARE": middleware,
        "DATABASES": {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
        "DEFAULT_AUTO_FIELD": "django.db.models.AutoField",
        "PASSWORD_HASHERS": ["django.contrib.auth.hashers.MD5PasswordHasher"],
        "USE_TZ": True,
        "BADGR": {  # replaced in each test by the badgr_config fixture
            "providers": {"nowhere": {"kind": "openai", "api_key": UPSTREAM_KEY,
                                      "base_url": f"http://127.0.0.1:{closed_port()}/v1"}},
            "client_keys": [CLIENT_KEY],
        },
    }


@dataclass
class Upstreams:
    """Simulated providers on loopback servers: ``primary`` and ``backup`` answer at once,
    ``slow`` streams 8 content chunks 0.1 s apart."""

    primary: SimulatedProvider
    backup: SimulatedProvider
    slow: SimulatedProvider
    urls: dict[str, str]

    def all(self) -> list[SimulatedProvider]:
        return [self.primary, self.backup, self.slow]

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A ``BADGR`` routing to these upstreams."""
        config: dict[str, Any] = {
            "providers": {
                name: {"kind": "openai", "base_url": url, "api_key": UPSTREAM_KEY}
                for name, url in self.urls.items()
            },
            "models": {
                "chat": ["primary/sim-small", "backup/sim-small"],
                "solo": ["primary/sim-small"],
                "slow": ["slow/sim-small"],
            },
            "client_keys": [CLIENT_KEY],
            "max_body_bytes": 4 * 1024 * 1024,
            "retry": {"backoff_base": 0.01, "backoff_max": 0.02},
            "timeouts": {"connect": 2, "read": 5, "deadline": 10},
        }
        config.update(overrides)
        return config


def run_async(make: Callable[[], Awaitable[T]]) -> T:
    """Run async test code in a fresh event loop; the engine's async pools are closed in
    that loop before it ends (an aiohttp session must never outlive its loop)."""
    from asgiref.sync import async_to_sync
    from django.core.exceptions import ImproperlyConfigured

    from django_badgr.conf import get_engine

    async def main() -> T:
        try:
            return await make()
        finally:
            with contextlib.suppress(ImproperlyConfigured):
                await get_engine().aclose()

    return async_to_sync(main)()
