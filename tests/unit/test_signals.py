"""Signals: receivers get (sender, event=...), and a failing receiver never breaks a request."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from blinker import NamedSignal, Signal

from badgr_middleware import signals

EVENT = signals.Failover("req_1", "chat/completions", "a", "x", "b", "y", "server_error", 1)


class Sender:
    pass


@pytest.fixture
def signal() -> Iterator[Signal]:
    """A real namespace signal; the test must leave no receiver connected to it."""
    before = dict(signals.failover.receivers)
    yield signals.failover
    assert dict(signals.failover.receivers) == before


def test_receivers_get_the_sender_and_the_event(signal: Signal) -> None:
    calls: list[tuple[Any, dict[str, Any]]] = []

    def receiver(sender: Any, **kwargs: Any) -> None:
        calls.append((sender, kwargs))

    signal.connect(receiver, weak=False)
    try:
        sender = Sender()
        signals.emit(signal, sender, EVENT)
        assert calls == [(sender, {"event": EVENT})]
    finally:
        signal.disconnect(receiver)


def test_a_raising_receiver_is_logged_and_the_others_still_run(
    signal: Signal, caplog: pytest.LogCaptureFixture
) -> None:
    calls: list[str] = []

    def first(sender: Any, event: object) -> None:
        calls.append("first")

    def broken(sender: Any, event: object) -> None:
        calls.append("broken")
        raise RuntimeError("receiver bug")

    def last(sender: Any, event: object) -> None:
        calls.append("last")

    for receiver in (first, broken, last):
        signal.connect(receiver, weak=False)
    try:
        with caplog.at_level(logging.ERROR, logger="badgr_middleware.signals"):
            signals.emit(signal, Sender(), EVENT)  # does not raise
    finally:
        for receiver in (first, broken, last):
            signal.disconnect(receiver)
    assert sorted(calls) == ["broken", "first", "last"]
    records = [r for r in caplog.records if r.name == "badgr_middleware.signals"]
    assert len(records) == 1
    record = records[0]
    assert record.levelno == logging.ERROR
    assert "failover" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)


def test_nothing_happens_without_receivers() -> None:
    class Watched(Signal):
        def receivers_for(self, sender: Any) -> Any:
            raise AssertionError("emit must not look for receivers when there are none")

    signals.emit(Watched(), Sender(), EVENT)


def test_a_receiver_for_one_sender_only_hears_that_sender() -> None:
    sig = Signal()
    mine, other = Sender(), Sender()
    heard: list[Any] = []

    def receiver(sender: Any, event: object) -> None:
        heard.append(sender)

    sig.connect(receiver, sender=mine, weak=False)
    signals.emit(sig, other, EVENT)
    signals.emit(sig, mine, EVENT)
    assert heard == [mine]


def test_weakly_connected_receivers_go_away_with_their_owner() -> None:
    sig = Signal()
    heard: list[object] = []

    class Listener:
        def on(self, sender: Any, event: object) -> None:
            heard.append(event)

    listener = Listener()
    sig.connect(listener.on)
    signals.emit(sig, Sender(), EVENT)
    del listener
    signals.emit(sig, Sender(), EVENT)
    assert heard == [EVENT]


SIGNAL_NAMES = [
    "request_started", "attempt_failed", "retry_scheduled", "failover", "circuit_opened",
    "circuit_half_opened", "circuit_closed", "request_finished", "request_failed",
]


@pytest.mark.parametrize("name", SIGNAL_NAMES)
def test_every_documented_signal_exists_under_its_name(name: str) -> None:
    sig = getattr(signals, name)
    assert isinstance(sig, Signal)
    assert sig.name == name
    assert name in signals.__all__


def test_payloads_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        EVENT.attempt = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    "payload",
    [signals.RequestStarted, signals.AttemptFailed, signals.RetryScheduled, signals.Failover,
     signals.CircuitChanged, signals.RequestFinished, signals.RequestFailed],
)
def test_payloads_carry_no_content_or_keys(payload: type) -> None:
    names = {f.name for f in dataclasses.fields(payload)}
    assert not names & {"messages", "body", "content", "prompt", "api_key", "key_value",
                        "authorization", "headers"}


# -- the start and finish payloads are built only when somebody listens -------------------------


def _actions_of_a_plain_success(receiver: Any = None) -> list[str]:
    """The action types a driver's flow yields for one request answered at once."""
    from badgr_middleware.engine import Engine
    from badgr_middleware.messages import HttpRequest
    from badgr_middleware.routing.outcomes import Delivered

    engine = Engine({"providers": {"up": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1"}},
                     "models": {"m": ["up/m"]}, "allow_anonymous": True})
    request = HttpRequest("POST", "/chat/completions", {"content-type": "application/json"},
                          b'{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')
    routed = engine.endpoint.parse(request, "chat/completions", "req_1")
    flow = engine.async_driver.flow(routed, {})
    kinds = []
    action = next(flow)
    try:
        while True:
            kinds.append(type(action).__name__)
            if kinds[-1] == "Emit":
                kinds[-1] = f"Emit:{action.signal.name}"
            action = flow.send(Delivered(None) if kinds[-1] == "Respond" else None)
    except StopIteration:
        return kinds


@pytest.fixture
def fresh_signals(monkeypatch: pytest.MonkeyPatch) -> tuple[Signal, Signal]:
    """request_started/request_finished without the receivers other tests' imports connect
    (the Django app forwards every signal)."""
    started, finished = NamedSignal("request_started"), NamedSignal("request_finished")
    monkeypatch.setattr(signals, "request_started", started)
    monkeypatch.setattr(signals, "request_finished", finished)
    return started, finished


def test_nobody_listening_means_no_start_or_finish_payload_is_built(
    fresh_signals: tuple[Signal, Signal],
) -> None:
    assert _actions_of_a_plain_success() == ["Attempt", "Respond", "Record"]


def test_a_receiver_gets_the_start_and_finish_events(
    fresh_signals: tuple[Signal, Signal],
) -> None:
    def receiver(sender: Any, event: object) -> None:
        pass

    for signal in fresh_signals:
        signal.connect(receiver, weak=False)
    assert _actions_of_a_plain_success() == [
        "Emit:request_started", "Attempt", "Respond", "Record", "Emit:request_finished"]
