"""Django's ASGI application with django_badgr mounted at ``/v1/`` (see django_settings.py)."""

from __future__ import annotations

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "django_settings")

from django.core.asgi import get_asgi_application  # noqa: E402

application = get_asgi_application()
