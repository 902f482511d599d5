"""django_badgr.signals: every core signal re-sent as a Django signal, with send_robust."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import blinker
import pytest
from django.apps import apps
from django.dispatch import Signal, receiver
from django.test import AsyncClient, Client
from djbadgr_support import CLIENT_KEY, MESSAGES, Upstreams, run_async

from badgr_middleware import signals as core
from badgr_middleware.engine import Engine
from badgr_middleware.messages import HttpRequest
from django_badgr import signals

pytestmark = pytest.mark.usefixtures("badgr_config")

CORE_SIGNALS = [name for name in core.__all__ if isinstance(getattr(core, name), blinker.Signal)]
BODY = json.dumps({"model": "chat", "messages": MESSAGES})
AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


@pytest.fixture
def received() -> Iterator[list[tuple[str, Any, Any]]]:
    """(signal name, sender, event) for every Django signal sent during the test."""
    log: list[tuple[str, Any, Any]] = []
    receivers = []
    for name, signal in signals.SIGNALS.items():

        def record(sender: Any, event: Any, _name: str = name, **kwargs: Any) -> None:
            log.append((_name, sender, event))

        signal.connect(record, weak=False)
        receivers.append((signal, record))
    yield log
    for signal, record in receivers:
        signal.disconnect(record)


def test_every_core_signal_is_mirrored() -> None:
    assert set(signals.SIGNALS) == set(CORE_SIGNALS)
    for name in CORE_SIGNALS:
        assert isinstance(getattr(signals, name), Signal)
        assert signals.SIGNALS[name] is getattr(signals, name)
    assert set(signals.__all__) == {*CORE_SIGNALS, "SIGNALS", "connect_core"}


def test_a_failover_fires_the_django_signals(sims: Upstreams,
                                             received: list[tuple[str, Any, Any]]) -> None:
    sims.primary.fail_next("503")
    response = Client().post("/v1/chat/completions", BODY, content_type="application/json",
                             headers={**AUTH, "x-request-id": "rid-failover"})
    assert response["x-badgr-provider"] == "backup"
    assert [name for name, _, _ in received] == [
        "request_started", "attempt_failed", "failover", "request_finished",
    ]
    app_config = apps.get_app_config("django_badgr")
    assert all(sender is app_config for _, sender, _ in received)
    event = received[2][2]
    assert isinstance(event, core.Failover)
    assert (event.request_id, event.from_provider, event.to_provider, event.error_kind) == (
        "rid-failover", "primary", "backup", "server_error",
    )


def test_the_decorator_in_a_users_signals_py(sims: Upstreams) -> None:
    seen: list[core.Failover] = []

    @receiver(signals.failover, weak=False, dispatch_uid="test-users-signals-py")
    def on_failover(sender: Any, event: core.Failover, **kwargs: Any) -> None:
        seen.append(event)

    try:
        sims.primary.fail_next("503")

        async def call() -> Any:
            return await AsyncClient().post("/v1/chat/completions", BODY,
                                            content_type="application/json", headers=AUTH)

        assert run_async(call)["x-badgr-provider"] == "backup"  # the async driver's path
    finally:
        signals.failover.disconnect(dispatch_uid="test-users-signals-py")
    assert [(e.from_provider, e.to_provider) for e in seen] == [("primary", "backup")]


def test_a_failing_receiver_is_logged_and_never_breaks_a_request(
    sims: Upstreams, received: list[tuple[str, Any, Any]], caplog: pytest.LogCaptureFixture
) -> None:
    def broken(sender: Any, **kwargs: Any) -> None:
        raise RuntimeError("receiver bug")

    signals.request_started.connect(broken, weak=False)
    signals.request_finished.connect(broken, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="django.dispatch"):
            response = Client().post("/v1/chat/completions", BODY,
                                     content_type="application/json", headers=AUTH)
    finally:
        signals.request_started.disconnect(broken)
        signals.request_finished.disconnect(broken)
    assert response.status_code == 200
    assert [name for name, _, _ in received] == ["request_started", "request_finished"]
    failures = [r for r in caplog.records if r.exc_info and "receiver bug" in str(r.exc_info[1])]
    assert len(failures) == 2


def test_other_engines_in_the_process_are_not_bridged(
    sims: Upstreams, received: list[tuple[str, Any, Any]]
) -> None:
    engine = Engine(sims.config())  # e.g. a BadgrMiddleware elsewhere in the same process
    try:
        response = engine.handle(HttpRequest(
            "POST", "/chat/completions", {"authorization": f"Bearer {CLIENT_KEY}"}, BODY.encode()
        ))
    finally:
        engine.close()
    assert response.status == 200
    assert received == []


def test_ready_connects_the_bridge_once(sims: Upstreams,
                                        received: list[tuple[str, Any, Any]]) -> None:
    apps.get_app_config("django_badgr").ready()  # again
    Client().post("/v1/chat/completions", BODY, content_type="application/json", headers=AUTH)
    assert [name for name, _, _ in received] == ["request_started", "request_finished"]
