"""The app: ``INSTALLED_APPS += ["django_badgr"]``."""

from __future__ import annotations

from django.apps import AppConfig

__all__ = ["BadgrConfig"]


class BadgrConfig(AppConfig):
    """Registers the system checks and bridges the core's signals to Django's, once.

    This object is the engine's signal ``sender``: Django receivers of
    :mod:`django_badgr.signals` get it as ``sender``.
    """

    name = "django_badgr"
    label = "django_badgr"
    verbose_name = "badgr LLM endpoint"

    def ready(self) -> None:
        from django.core import checks as django_checks

        from . import (
            checks,
            conf,  # noqa: F401  (connects its setting_changed receiver)
            signals,
        )

        django_checks.register(checks.check_settings)  # a set: registering twice is a no-op
        signals.connect_core(self)
