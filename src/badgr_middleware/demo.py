"""``badgr demo``: failover you can watch, with no keys and no internet.

Three simulated providers run on 127.0.0.1 — one answering 503, one answering 429 with a
Retry-After, one healthy — behind the badgr endpoint, itself served by uvicorn. The official
``openai`` SDK sends requests to it, and every routing decision is printed from the signals.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from . import signals
from .http.asgi import BadgrApp
from .simulator import SimulatedProvider, SimulatedServer

__all__ = ["run_demo"]

DEMO_KEY = "demo-client-key"
ALIAS = "demo-chat"


class SignalPrinter:
    """Prints each routing signal as one readable line."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self._lock = threading.Lock()
        self._ended = threading.Event()
        self._receivers: list[tuple[Any, Callable[..., None]]] = [
            (signals.request_started, self._started),
            (signals.attempt_failed, self._attempt_failed),
            (signals.retry_scheduled, self._retry),
            (signals.failover, self._failover),
            (signals.request_finished, self._finished),
            (signals.request_failed, self._failed),
        ]

    def __enter__(self) -> SignalPrinter:
        for signal, receiver in self._receivers:
            signal.connect(receiver)
        return self

    def __exit__(self, *exc: object) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)

    def wait_for_end(self, timeout: float = 5.0) -> None:
        """Wait until the request in flight has sent its last signal (a stream ends later)."""
        self._ended.wait(timeout)
        self._ended.clear()

    def _say(self, line: str) -> None:
        with self._lock:
            print(line, file=self.out, flush=True)

    def _started(self, sender: object, event: signals.RequestStarted) -> None:
        kind = "stream" if event.stream else "request"
        self._say(f"  -> {kind} {event.request_id} for '{event.model}'; "
                  f"route: {' > '.join(event.targets)}")

    def _attempt_failed(self, sender: object, event: signals.AttemptFailed) -> None:
        status = f"HTTP {event.status}" if event.status else "no response"
        hint = f", retry after {event.retry_after:g}s" if event.retry_after else ""
        self._say(f"     x attempt {event.attempt} {event.provider}/{event.model}: "
                  f"{event.error_kind} ({status}{hint}) in {event.latency * 1000:.0f} ms")

    def _retry(self, sender: object, event: signals.RetryScheduled) -> None:
        self._say(f"     ~ retry {event.provider}/{event.model} in {event.delay:.2f}s "
                  f"({event.error_kind})")

    def _failover(self, sender: object, event: signals.Failover) -> None:
        self._say(f"     > failover {event.from_provider} -> {event.to_provider} "
                  f"(because {event.error_kind})")

    def _finished(self, sender: object, event: signals.RequestFinished) -> None:
        tokens = (event.usage or {}).get("total_tokens")
        usage = f", {tokens} tokens" if tokens is not None else ""
        self._say(f"     ok served by {event.provider}/{event.model} after {event.attempts} "
                  f"attempt(s) in {event.latency * 1000:.0f} ms{usage}")
        self._ended.set()

    def _failed(self, sender: object, event: signals.RequestFailed) -> None:
        self._say(f"     !! failed with HTTP {event.status} ({event.error_kind}) after "
                  f"{event.attempts} attempt(s)")
        self._ended.set()


def demo_config(flaky: str, limited: str, healthy: str) -> dict[str, Any]:
    """The demo's configuration, as a user would write it."""
    return {
        "providers": {
            "flaky": {"kind": "openai", "base_url": flaky, "api_key": "sk-demo-flaky"},
            "limited": {"kind": "openai", "base_url": limited, "api_key": "sk-demo-limited"},
            "healthy": {"kind": "openai", "base_url": healthy, "api_key": "sk-demo-healthy"},
        },
        "models": {ALIAS: ["flaky/sim-large", "limited/sim-large", "healthy/sim-small"]},
        "client_keys": [DEMO_KEY],
        "retry": {"backoff_base": 0.05},
    }


def run_demo(out: TextIO = sys.stdout) -> int:
    """Run the demo; returns a process exit code (0 when every request was served)."""
    try:
        import openai
    except ImportError:
        print("badgr demo needs the openai SDK: pip install 'badgr-middleware[demo]'", file=out)
        return 2
    providers = [
        SimulatedProvider("flaky", fault="503"),
        SimulatedProvider("limited", fault="429:retry-after=30"),
        SimulatedProvider("healthy", stream_chunks=6, chunk_delay=0.05,
                          reply="Failover worked: you are reading the healthy provider."),
    ]
    servers = [SimulatedServer(p).start() for p in providers]
    try:
        config = demo_config(*(s.base_url for s in servers))
        with SimulatedServer(BadgrApp(config)) as gateway, SignalPrinter(out) as printer:
            client = openai.OpenAI(base_url=gateway.base_url, api_key=DEMO_KEY, max_retries=0)
            print(f"badgr demo: endpoint {gateway.base_url}, model alias '{ALIAS}'", file=out)
            print("  providers: flaky (always 503), limited (429, Retry-After 30 s), healthy\n",
                  file=out)
            messages = [{"role": "user", "content": "Say hello."}]

            print("1. A plain request:", file=out)
            raw = client.chat.completions.with_raw_response.create(model=ALIAS,
                                                                   messages=messages)
            reply = raw.parse().choices[0].message.content
            printer.wait_for_end()
            print(f"     client got: {reply!r} from {raw.headers['x-badgr-provider']} "
                  f"(x-badgr-attempts: {raw.headers['x-badgr-attempts']})\n", file=out)

            print("2. A streaming request (limited is now cooling down, so it is skipped):",
                  file=out)
            stream = client.chat.completions.create(
                model=ALIAS, messages=messages, stream=True,
                stream_options={"include_usage": True},
            )
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
            printer.wait_for_end()
            print(f"     client streamed: {text!r}\n", file=out)

            print("3. OpenRouter-style fallbacks via extra_body={'models': [...]}:", file=out)
            raw = client.chat.completions.with_raw_response.create(
                model="flaky/sim-large", messages=messages,
                extra_body={"models": ["healthy/sim-small"]},
            )
            printer.wait_for_end()
            print(f"     client got an answer from {raw.headers['x-badgr-provider']}\n",
                  file=out)
        print("Every request succeeded although two of three providers were failing; the client "
              "only changed its base_url.", file=out)
        return 0
    finally:
        for server in servers:
            server.stop()
