"""Know what happened: every failover badgr makes is logged here."""

from __future__ import annotations

import logging
from typing import Any

from django.dispatch import receiver

from badgr_middleware.signals import Failover
from django_badgr import signals

logger = logging.getLogger("mysite.llm")


@receiver(signals.failover)
def log_failover(sender: Any, event: Failover, **kwargs: Any) -> None:
    logger.warning(
        "LLM failover %s/%s -> %s/%s after %s (request %s)",
        event.from_provider, event.from_model, event.to_provider, event.to_model,
        event.error_kind, event.request_id,
    )
