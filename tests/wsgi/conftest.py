"""Fixtures for the WSGI tests: simulated upstreams, and badgr served by a real gunicorn."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from badgr_middleware.simulator import SimulatedProvider, SimulatedServer, closed_port

HERE = Path(__file__).resolve().parent
CLIENT_KEY = "client-key-for-wsgi-tests"
UPSTREAM_KEY = "sk-upstream-0123456789abcdef"

START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass
class Upstreams:
    """The fake providers every WSGI test routes to, each on its own loopback server."""

    primary: SimulatedProvider
    secondary: SimulatedProvider
    slow: SimulatedProvider  # 5 content chunks, 0.2 s apart
    long: SimulatedProvider  # 30 content chunks, 0.1 s apart: still streaming after 2 s
    urls: dict[str, str]
    client_key: str = CLIENT_KEY
    upstream_key: str = UPSTREAM_KEY

    def all(self) -> list[SimulatedProvider]:
        return [self.primary, self.secondary, self.slow, self.long]

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A badgr config routing to these upstreams (plain JSON, for gunicorn's env)."""
        providers: dict[str, Any] = {
            name: {"kind": "openai", "base_url": url, "api_key": UPSTREAM_KEY}
            for name, url in self.urls.items()
        }
        providers["dead"] = {
            "kind": "openai",
            "base_url": f"http://127.0.0.1:{closed_port()}/v1",
            "api_key": UPSTREAM_KEY,
        }
        config: dict[str, Any] = {
            "providers": providers,
            "models": {
                "chat": ["primary/sim-small", "secondary/sim-small"],
                "solo": ["primary/sim-small"],
                "slow": ["slow/sim-small"],
                "long": ["long/sim-small"],
                "dead": ["dead/sim-small"],
            },
            "client_keys": [CLIENT_KEY],
            "max_body_bytes": 65536,
            "retry": {"backoff_base": 0.01, "backoff_max": 0.05},
            "timeouts": {"connect": 2, "read": 10, "deadline": 20},
        }
        config.update(overrides)
        return config


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Upstreams]:
    providers = {
        "primary": SimulatedProvider("primary"),
        "secondary": SimulatedProvider("secondary"),
        "slow": SimulatedProvider("slow", stream_chunks=5, chunk_delay=0.2),
        "long": SimulatedProvider("long", stream_chunks=30, chunk_delay=0.1),
    }
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(SimulatedServer(provider)).base_url
            for name, provider in providers.items()
        }
        yield Upstreams(urls=urls, **providers)


@pytest.fixture
def sims(upstreams: Upstreams) -> Upstreams:
    """The upstreams with no faults and empty request logs."""
    for provider in upstreams.all():
        provider.clear()
    return upstreams


# --------------------------------------------------------------------------- gunicorn


def read_log_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    text = path.read_text(encoding="utf-8")
    # a line another process is still writing has no newline yet
    return [json.loads(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


class Gunicorn:
    """badgr's WSGI app under ``python -m gunicorn`` in a subprocess on a loopback port."""

    def __init__(
        self,
        tmp: Path,
        config: dict[str, Any],
        *,
        worker_class: str = "sync",
        workers: int = 1,
        mode: str = "app",
        script_name: str = "",
    ) -> None:
        self.worker_class = worker_class
        self.workers = workers
        self.script_name = script_name
        self.signal_log = tmp / "signals.jsonl"
        self.output = tmp / "gunicorn.log"
        self._config = config
        self._mode = mode
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def client_key(self) -> str:
        return str(self._config["client_keys"][0])

    def sdk(self, timeout: float = 10.0) -> openai.OpenAI:
        """The official client, pointed at this server, with the SDK's own retries off."""
        return openai.OpenAI(
            base_url=self.base_url, api_key=self.client_key, max_retries=0, timeout=timeout
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{self.script_name}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def start(self) -> Gunicorn:
        # gunicorn adopts an already bound socket (fd://N): the port is ours from the start,
        # with no window in which another process could take it
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            command = [
                sys.executable, "-m", "gunicorn",
                "--chdir", str(HERE),
                "--bind", f"fd://{sock.fileno()}",
                "--worker-class", self.worker_class,
                "--workers", str(self.workers),
                "--timeout", "30",
                "--graceful-timeout", "2",
                "--log-level", "warning",
            ]
            if self.worker_class == "gthread":
                command += ["--threads", "4"]
            if self.script_name:
                command += ["--env", f"SCRIPT_NAME={self.script_name}"]
            command.append("wsgi_app:application")
            env = {
                **os.environ,
                "BADGR_WSGI_CONFIG": json.dumps(self._config),
                "BADGR_WSGI_MODE": self._mode,
                "BADGR_WSGI_SIGNAL_LOG": str(self.signal_log),
            }
            with open(self.output, "wb") as output:
                self.proc = subprocess.Popen(
                    command, env=env, stdout=output, stderr=subprocess.STDOUT,
                    pass_fds=[sock.fileno()], start_new_session=True,
                )
        finally:
            sock.close()
        try:
            self._wait_until_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_until_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        answered = False
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.log_text()}")
            if not answered:
                with contextlib.suppress(httpx.TransportError):
                    httpx.get(f"{self.url}/v1/models", timeout=1.0)
                    answered = True
            if answered and len(self.booted_pids()) >= self.workers:
                return
            time.sleep(0.05)
        raise RuntimeError(f"gunicorn did not answer in {START_TIMEOUT} s:\n{self.log_text()}")

    def booted_pids(self) -> set[int]:
        return {r["pid"] for r in self.signals() if r["signal"] == "worker_booted"}

    def signals(self, request_id: str | None = None) -> list[dict[str, Any]]:
        """The signal lines written so far (only ``request_id``'s, if given), in order."""
        records = read_log_lines(self.signal_log)
        if request_id is None:
            return records
        return [r for r in records if r.get("request_id") == request_id]

    def wait_for_signal(
        self, request_id: str, name: str, timeout: float = 5.0
    ) -> list[dict[str, Any]]:
        """Wait until ``request_id`` has a ``name`` line; return all its lines."""
        deadline = time.monotonic() + timeout
        while True:
            records = self.signals(request_id)
            if any(r["signal"] == name for r in records):
                return records
            if time.monotonic() > deadline:
                raise AssertionError(f"no {name} signal for {request_id} in {timeout} s: {records}")
            time.sleep(0.02)

    def log_text(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)  # quick shutdown: nothing in flight is worth waiting for
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            # the whole session is gunicorn's: its master and the workers it forked
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)


GunicornFactory = Callable[..., Gunicorn]


@contextlib.contextmanager
def running_gunicorn(tmp: Path, config: dict[str, Any], **options: Any) -> Iterator[Gunicorn]:
    server = Gunicorn(tmp, config, **options)
    try:
        yield server.start()
    finally:
        server.stop()
    # at --log-level warning a healthy run logs nothing at all
    assert server.log_text() == "", server.log_text()


@pytest.fixture(scope="module", params=["sync", "gthread"])
def worker_class(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def gateway(
    upstreams: Upstreams, worker_class: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """BadgrWSGIApp under gunicorn (one worker), once per worker class."""
    tmp = tmp_path_factory.mktemp(f"gunicorn-app-{worker_class}")
    with running_gunicorn(tmp, upstreams.config(), worker_class=worker_class) as server:
        yield server


@pytest.fixture(scope="module")
def mounted_gateway(
    upstreams: Upstreams, worker_class: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    """BadgrWSGIMiddleware around a plain app, under gunicorn with SCRIPT_NAME=/api."""
    tmp = tmp_path_factory.mktemp(f"gunicorn-mw-{worker_class}")
    with running_gunicorn(
        tmp, upstreams.config(), worker_class=worker_class, mode="middleware",
        script_name="/api",
    ) as server:
        yield server


@pytest.fixture
def gunicorn_factory(tmp_path: Path, upstreams: Upstreams) -> Iterator[GunicornFactory]:
    """Start gunicorn with any options; every server started is stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> Gunicorn:
            sub = tmp_path / f"gunicorn-{len(list(tmp_path.iterdir()))}"
            sub.mkdir()
            return stack.enter_context(
                running_gunicorn(sub, upstreams.config(), **options)
            )

        yield start
