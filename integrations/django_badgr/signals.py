"""Django signals mirroring every core signal of :mod:`badgr_middleware.signals`.

::

    from django.dispatch import receiver
    from django_badgr import signals

    @receiver(signals.failover)
    def on_failover(sender, event, **kwargs):
        log.warning("LLM failover %s -> %s", event.from_provider, event.to_provider)

``sender`` is django_badgr's :class:`~django.apps.AppConfig`; ``event`` is the core's frozen
dataclass payload (:class:`~badgr_middleware.signals.Failover`, ...): no message content,
no keys. Each signal is sent with ``send_robust``: a receiver that raises is logged (Django
logs it on ``django.dispatch``) and never breaks a request. Receivers run inline, in the
thread or event loop serving the request, so keep them quick and synchronous.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import blinker
from django.dispatch import Signal

from badgr_middleware import signals as core

__all__ = [
    "SIGNALS",
    "attempt_failed",
    "circuit_closed",
    "circuit_half_opened",
    "circuit_opened",
    "connect_core",
    "failover",
    "request_failed",
    "request_finished",
    "request_started",
    "retry_scheduled",
    "store_degraded",
    "store_recovered",
    "stream_resumed",
]

logger = logging.getLogger(__name__)

request_started = Signal()
attempt_failed = Signal()
retry_scheduled = Signal()
failover = Signal()
circuit_opened = Signal()
circuit_half_opened = Signal()
circuit_closed = Signal()
request_finished = Signal()
request_failed = Signal()
store_degraded = Signal()
store_recovered = Signal()
stream_resumed = Signal()

SIGNALS: dict[str, Signal] = {
    "request_started": request_started,
    "attempt_failed": attempt_failed,
    "retry_scheduled": retry_scheduled,
    "failover": failover,
    "circuit_opened": circuit_opened,
    "circuit_half_opened": circuit_half_opened,
    "circuit_closed": circuit_closed,
    "request_finished": request_finished,
    "request_failed": request_failed,
    "store_degraded": store_degraded,
    "store_recovered": store_recovered,
    "stream_resumed": stream_resumed,
}
"""Each Django signal by the name of the core signal it mirrors."""


def _forwarder(name: str, signal: Signal) -> Callable[..., None]:
    def forward(sender: Any, event: object = None, **kwargs: Any) -> None:
        try:
            signal.send_robust(sender=sender, event=event)
        except Exception:  # send_robust itself failing (e.g. an async receiver in a loop)
            logger.exception("django_badgr could not send the %s signal", name)

    forward.__name__ = forward.__qualname__ = f"forward_{name}"
    return forward


# built once, so connecting again is a no-op for blinker (it keys receivers by identity)
_FORWARDERS = {name: _forwarder(name, signal) for name, signal in SIGNALS.items()}


def connect_core(sender: object) -> None:
    """Re-send every core signal whose sender is ``sender`` (the AppConfig) as Django's.

    Only this app's engine uses that sender, so a plain :class:`BadgrMiddleware` elsewhere
    in the process does not show up in Django receivers. Idempotent.
    """
    for name, forward in _FORWARDERS.items():
        core_signal = getattr(core, name)
        assert isinstance(core_signal, blinker.Signal)
        core_signal.connect(forward, sender=sender, weak=False)
