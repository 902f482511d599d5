from __future__ import annotations

from django.apps import AppConfig


class MysiteConfig(AppConfig):
    name = "mysite"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (connects the receivers)
