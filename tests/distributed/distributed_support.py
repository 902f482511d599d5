"""Helpers of the distributed suite: a private Redis, simulated upstreams, badgr processes.

* :class:`RedisServer`: a ``redis-server`` subprocess on a free 127.0.0.1 port (no
  persistence) that a test may SIGKILL and start again on the same port.
* :class:`Upstreams`: the simulated providers ``a`` and ``b`` (``SimulatedProvider`` served by
  ``SimulatedServer`` in the test process, so their request logs are visible to the test).
* :class:`Gateway`: one badgr server process (``shared_health_app.py``: ``BadgrApp`` under
  uvicorn) and a client for it.

Every wait here is bounded; nothing but 127.0.0.1 is used. The fixtures are in conftest.py.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

HERE = Path(__file__).resolve().parent
APP_SCRIPT = HERE / "shared_health_app.py"
CONFIG_ENV = "BADGR_DISTRIBUTED_CONFIG"
INTROSPECTION_PATH = "/_test/store"
HOST = "127.0.0.1"

ALIAS = "ab"  # a/x first, b/y second
MESSAGES = [{"role": "user", "content": "Say hello please"}]

REDIS_INSTALL_HINT = (
    "no redis-server binary on PATH: the distributed health tests run a Redis of their own. "
    "Install Redis 7 (apt-get install redis-server, brew install redis, or build it from "
    "redis.io) so that `redis-server` is on PATH; the tests start, kill and restart it "
    "themselves on a free 127.0.0.1 port"
)
REDIS_START_LIMIT = 5.0  # seconds a redis-server may take to answer PING
GATEWAY_START_LIMIT = 20.0  # seconds a badgr process may take to answer
GATEWAY_STOP_LIMIT = 5.0  # seconds after SIGTERM before SIGKILL
REQUEST_TIMEOUT = 10.0  # seconds any one HTTP request of a test may take

# Small limits, so that every failure is fast and every test stays short.
TIMEOUTS = {"connect": 1, "first_byte": 5, "read": 5, "deadline": 8}
RETRY = {"attempts_per_target": 2, "backoff_base": 0.01, "backoff_max": 0.02,
         "max_retry_after": 1}
BREAKER = {"consecutive_failures": 2, "min_requests": 100, "window": 60, "open_for": 30,
           "half_open_probes": 1}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def stop_process(process: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM, wait up to ``grace`` seconds, then SIGKILL; always reaps the process."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait(timeout=GATEWAY_STOP_LIMIT)


class PortTaken(RuntimeError):
    """A server exited at start, most likely because another process took its free port."""


# -- Redis ----------------------------------------------------------------------------------------


class RedisServer:
    """A private ``redis-server`` on 127.0.0.1:``port``, killable and restartable."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://{HOST}:{self.port}/0"

    def start_on_a_free_port(self, tries: int = 3) -> None:
        """Start; if the port was taken meanwhile (the server exits at once), try another."""
        for attempt in range(tries):
            try:
                self.start()
                return
            except PortTaken:
                if attempt == tries - 1:
                    raise
                self.port = free_port()

    def start(self) -> None:
        """Start on ``port`` and return once it answers PING."""
        args = [self.binary, "--port", str(self.port), "--bind", HOST, "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)]
        self.process = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, cwd=self.workdir,
        )
        deadline = time.monotonic() + REDIS_START_LIMIT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                raise PortTaken(f"redis-server exited at start (port {self.port} taken?)")
            if self.ping():
                return
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server did not answer within {REDIS_START_LIMIT} s")

    def ping(self, timeout: float = 0.2) -> bool:
        """True when the server answers PING (a raw RESP exchange, no client library)."""
        try:
            with socket.create_connection((HOST, self.port), timeout=timeout) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL (no goodbye to clients) and wait until the process is gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=REDIS_START_LIMIT)
        self.process = None

    def pause(self) -> int:
        """SIGSTOP: the kernel still accepts connections, the server never answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)
        return self.process.pid

    def resume(self) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGCONT)


# -- simulated upstreams --------------------------------------------------------------------------


@dataclass
class Upstreams:
    a: SimulatedProvider
    b: SimulatedProvider
    a_server: SimulatedServer
    b_server: SimulatedServer

    def clear(self) -> None:
        self.a.clear()
        self.b.clear()


def gateway_config(upstreams: Upstreams, state: Mapping[str, Any]) -> dict[str, Any]:
    """badgr's config: alias ``ab`` = [a/x, b/y], a breaker that opens after 2 failures."""
    return {
        "providers": {
            "a": {"kind": "openai", "base_url": upstreams.a_server.base_url, "api_key": "ka"},
            "b": {"kind": "openai", "base_url": upstreams.b_server.base_url, "api_key": "kb"},
        },
        "models": {ALIAS: ["a/x", "b/y"]},
        "allow_anonymous": True,
        "timeouts": dict(TIMEOUTS),
        "retry": dict(RETRY),
        "breaker": dict(BREAKER),
        "state": dict(state),
    }


def redis_state(server: RedisServer, key_prefix: str, **overrides: Any) -> dict[str, Any]:
    """The ``state`` table for ``server``: timeout 0.1 s, retry_interval 5 s unless given."""
    state = {"backend": "redis", "url": server.url, "timeout": 0.1, "retry_interval": 5.0,
             "key_prefix": key_prefix}
    state.update(overrides)
    return state


# -- badgr processes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Served:
    """What a client saw from one chat completion."""

    status: int
    provider: str | None
    attempts: int | None
    content: str | None
    body: str

    @property
    def outcome(self) -> tuple[int, str | None, int | None]:
        """(status, x-badgr-provider, x-badgr-attempts)."""
        return self.status, self.provider, self.attempts


class Gateway:
    """One badgr server process (``BadgrApp`` under uvicorn) on 127.0.0.1:``port``.

    The process starts at once; call :meth:`wait_ready` before using it, :meth:`stop` after.
    """

    def __init__(self, name: str, config: Mapping[str, Any], log_dir: Path) -> None:
        self.name = name
        self.port = free_port()
        self.log_path = log_dir / f"gateway-{name}.log"
        env = dict(os.environ)
        env[CONFIG_ENV] = json.dumps(config)
        env["PYTHONUNBUFFERED"] = "1"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(APP_SCRIPT), "--port", str(self.port)],
                env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            )
        self.client = httpx.Client(base_url=f"http://{HOST}:{self.port}",
                                   timeout=REQUEST_TIMEOUT)

    def wait_ready(self, deadline: float) -> None:
        """Return once the process answers; fail with its log if it died or ``deadline`` passed."""
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                error = PortTaken if "address already in use" in self.log().lower() else (
                    RuntimeError)
                raise error(
                    f"gateway {self.name} exited with {self.process.returncode}:\n{self.log()}"
                )
            with contextlib.suppress(httpx.TransportError):
                if self.client.get(INTROSPECTION_PATH, timeout=0.5).status_code == 200:
                    return
            time.sleep(0.05)
        raise RuntimeError(f"gateway {self.name} did not answer in time:\n{self.log()}")

    def log(self) -> str:
        """The end of the process's stdout and stderr."""
        try:
            return self.log_path.read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def chat(self, model: str = ALIAS) -> Served:
        """One non-streaming chat completion (errors are returned, not raised)."""
        response = self.client.post("/v1/chat/completions",
                                    json={"model": model, "messages": MESSAGES})
        attempts = response.headers.get("x-badgr-attempts")
        content = None
        if response.status_code == 200:
            content = response.json()["choices"][0]["message"]["content"]
        return Served(response.status_code, response.headers.get("x-badgr-provider"),
                      None if attempts is None else int(attempts), content, response.text)

    def store(self) -> dict[str, Any]:
        """The process's store class, degraded flag and store signals so far (read-only)."""
        info: dict[str, Any] = self.client.get(INTROSPECTION_PATH).json()
        return info

    def store_events(self) -> list[str]:
        """``"degraded"`` / ``"recovered"`` for every store signal the process sent."""
        return [event["state"] for event in self.store()["events"]]

    def stop(self) -> None:
        try:
            stop_process(self.process, GATEWAY_STOP_LIMIT)
        finally:
            self.client.close()
