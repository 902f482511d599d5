"""``settings.BADGR``, read on every access, and the one :class:`Engine` built from it.

``BADGR`` is the core schema (docs/configuration.md) plus two keys only Django understands,
``auth`` and ``permission`` (see :mod:`django_badgr.auth`); they are stripped before the dict
reaches the core loader. The engine is built on first use, kept for the life of the process,
and dropped when ``BADGR`` changes (``setting_changed``, so ``override_settings`` works).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from badgr_middleware.config import Config, ConfigError, load_config
from badgr_middleware.engine import Engine

__all__ = [
    "APP_LABEL",
    "AUTH_DJANGO",
    "AUTH_KEYS",
    "DJANGO_ONLY_KEYS",
    "SETTING",
    "BadgrSettings",
    "badgr_settings",
    "get_engine",
    "reset_engine",
]

SETTING = "BADGR"
APP_LABEL = "django_badgr"
AUTH_KEYS = "keys"
AUTH_DJANGO = "django"
DJANGO_ONLY_KEYS = ("auth", "permission")

_MISSING = object()


class BadgrSettings:
    """Every property reads ``settings.BADGR`` again, so overridden settings are seen."""

    @property
    def raw(self) -> Any:
        """``settings.BADGR`` as written, or :data:`None` when it is not set."""
        return getattr(settings, SETTING, None)

    @property
    def auth(self) -> Any:
        """``BADGR["auth"]``: ``"keys"`` (the default), ``"django"``, a dotted path or a
        callable."""
        raw = self.raw
        value = raw.get("auth") if isinstance(raw, Mapping) else None
        return AUTH_KEYS if value is None else value

    @property
    def permission(self) -> Any:
        """``BADGR["permission"]``: the permission a logged-in user needs, or None."""
        raw = self.raw
        return raw.get("permission") if isinstance(raw, Mapping) else None

    def core_dict(self) -> dict[str, Any]:
        """``BADGR`` without the Django-only keys, for the core loader."""
        raw = self.raw
        if raw is None:
            raise ImproperlyConfigured(
                "settings.BADGR is not set: add BADGR = {'providers': {...}, ...} to your "
                "settings (see docs/django.md)."
            )
        if not isinstance(raw, Mapping):
            raise ImproperlyConfigured(
                f"settings.BADGR must be a dict, not {type(raw).__name__}."
            )
        return {key: value for key, value in raw.items() if key not in DJANGO_ONLY_KEYS}

    def load(self) -> Config:
        """Validate ``BADGR``; raise ImproperlyConfigured naming every problem."""
        try:
            return load_config(self.core_dict())
        except ConfigError as error:
            raise ImproperlyConfigured(
                f"{error} (run 'manage.py check' for each problem and its fix)"
            ) from error


badgr_settings = BadgrSettings()

_lock = threading.Lock()
_engine: Engine | None = None


def get_engine() -> Engine:
    """The engine serving ``BADGR``, built once (thread-safe) and kept until it changes.

    Its signal ``sender`` is this app's :class:`~django.apps.AppConfig`, which is what
    :mod:`django_badgr.signals` receivers get as ``sender``.
    """
    global _engine
    engine = _engine
    if engine is not None:
        return engine
    with _lock:
        if _engine is None:
            try:
                app_config = apps.get_app_config(APP_LABEL)
            except LookupError:
                raise ImproperlyConfigured(
                    "django_badgr is not in INSTALLED_APPS: add it, so its checks and "
                    "signals are set up."
                ) from None
            _engine = Engine(badgr_settings.load(), sender=app_config)
        return _engine


def reset_engine() -> None:
    """Drop the engine (closing its sync connection pools); the next request builds anew.

    The async driver's pools belong to the event loop that opened them; an ASGI server's
    loop outlives this call, so they are left to close with it.
    """
    global _engine
    with _lock:
        engine, _engine = _engine, None
    if engine is not None:
        engine.close()


@receiver(setting_changed, dispatch_uid="django_badgr.conf.reset_engine")
def _setting_changed(*, setting: str, **kwargs: Any) -> None:
    if setting == SETTING:
        reset_engine()
