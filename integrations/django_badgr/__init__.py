"""django_badgr: badgr's OpenAI-compatible endpoint as a Django app.

::

    INSTALLED_APPS += ["django_badgr"]
    BADGR = {"providers": {...}, "models": {...}, "client_keys": ["${BADGR_CLIENT_KEY}"]}
    urlpatterns += [path("v1/", include("django_badgr.urls"))]

The modules, one concern each: :mod:`~django_badgr.apps` (checks and the signal bridge),
:mod:`~django_badgr.conf` (settings and the engine), :mod:`~django_badgr.checks`,
:mod:`~django_badgr.signals`, :mod:`~django_badgr.auth`, :mod:`~django_badgr.views`,
:mod:`~django_badgr.urls` and the ``manage.py badgr`` command. See docs/django.md.
"""

from __future__ import annotations

try:
    import django  # noqa: F401
except ImportError:  # pragma: no cover - exercised only where Django is absent
    raise ImportError(
        "django_badgr needs Django: pip install 'badgr-middleware[django]'"
    ) from None

__all__: list[str] = []
