"""Real Redis servers for the health-store tests (no mocks of Redis).

``redis_url``: the machine's Redis at 127.0.0.1:6379 (or, when nothing answers there but a
``redis-server`` binary exists, a private server for the session); ``key_prefix``: a unique
prefix per test, deleted afterwards. ``private_redis``: a server of the test's own on a free
port, which the test may kill and restart. ``make_policy``: a ``BreakerPolicy`` factory.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from badgr_middleware.config import BreakerPolicy

SHARED_URL = "redis://127.0.0.1:6379/0"
START_HINT = 'redis-server --daemonize yes --port 6379 --save "" --appendonly no'
STARTUP_LIMIT = 5.0  # seconds a redis-server may take to answer PING


@pytest.fixture
def make_policy() -> Callable[..., Any]:
    """``make_policy(window=10, ...)``: a breaker policy with the given overrides."""
    return BreakerPolicy


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio needs asyncio


# -- servers ------------------------------------------------------------------------------------


def _answers(url: str, timeout: float = 0.5) -> bool:
    client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class RedisServer:
    """A ``redis-server`` subprocess on 127.0.0.1:``port``; killable and restartable."""

    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or _free_port()
        self.password: str | None = None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def url_with_password(self) -> str:
        return f"redis://:{self.password}@127.0.0.1:{self.port}/0"

    def client(self, **kwargs: Any) -> redis.Redis:
        """A plain client for checks (authenticated when a password is set)."""
        kwargs.setdefault("socket_timeout", 2.0)
        kwargs.setdefault("socket_connect_timeout", 2.0)
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password,
                           decode_responses=True, **kwargs)

    def start(self) -> None:
        args = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                "--appendonly", "no", "--daemonize", "no", "--dir", str(self.workdir)]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.workdir
        )
        deadline = time.monotonic() + STARTUP_LIMIT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.process.returncode}")
            client = self.client(socket_timeout=0.2, socket_connect_timeout=0.2)
            try:
                if client.ping():
                    return
            except (redis.RedisError, OSError):
                time.sleep(0.02)
            finally:
                client.close()
        self.kill()
        raise RuntimeError(f"redis-server did not answer within {STARTUP_LIMIT} s")

    def kill(self) -> None:
        """SIGKILL the server (no goodbye to clients) and wait for it to be gone."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=STARTUP_LIMIT)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def pause(self) -> None:
        """SIGSTOP: the server accepts connections but never answers."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def set_password(self, password: str) -> None:
        """Require ``password`` from now on (and after restarts)."""
        client = self.client()
        try:
            client.config_set("requirepass", password)
        finally:
            client.close()
        self.password = password


def _binary() -> str | None:
    return shutil.which("redis-server")


@pytest.fixture(scope="session")
def _shared_redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if _answers(SHARED_URL):
        yield SHARED_URL
        return
    binary = _binary()
    if binary is None:
        pytest.skip(f"no Redis answers at 127.0.0.1:6379 and no redis-server binary is installed;"
                    f" start one with: {START_HINT}")
    server = RedisServer(binary, tmp_path_factory.mktemp("redis-shared"))
    try:
        server.start()
        yield server.url
    finally:
        server.kill()


@pytest.fixture
def redis_url(_shared_redis_url: str) -> str:
    """The URL of a running Redis shared by the tests (isolate with ``key_prefix``)."""
    return _shared_redis_url


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """A prefix of this test's own; every key under it is deleted afterwards."""
    prefix = f"badgr-test:{uuid.uuid4().hex}:"
    yield prefix
    client = redis.Redis.from_url(redis_url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        names = list(client.scan_iter(match=prefix + "*", count=1000))
        if names:
            client.delete(*names)
    finally:
        client.close()


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own on a free port; always killed in teardown."""
    binary = _binary()
    if binary is None:
        pytest.skip("no redis-server binary installed (apt-get install redis-server); "
                    "needed to test Redis going down and coming back")
    server = RedisServer(binary, tmp_path)
    try:
        server.start()
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError, AssertionError):
            server.resume()
        server.kill()
