"""End to end: examples/flask_app.py served by gunicorn (sync and gthread workers) on
127.0.0.1, driven by the official ``openai`` SDK, routing to simulated providers run here.

Also ``python examples/flask_app.py`` (the one-command run) and the ``flask badgr`` commands
in real subprocesses. Every subprocess is bounded and stopped in a ``finally``.

(``BadgrWSGIMiddleware`` alone under gunicorn, mounted under ``SCRIPT_NAME``, is tested in
tests/wsgi/test_wsgi_gunicorn.py.)
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

pytest.importorskip("flask")
pytest.importorskip("gunicorn")

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
CLIENT_KEY = "client-key-for-the-flask-example"
MESSAGES: list[Any] = [{"role": "user", "content": "Say hello"}]
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


@dataclass
class ExampleUpstreams:
    primary: SimulatedProvider  # 20 content chunks 0.05 s apart: a stream lasts about 1 s
    backup: SimulatedProvider
    primary_url: str
    backup_url: str

    def env(self) -> dict[str, str]:
        """The environment the example's config reads (``${...}``), and nothing else badgr."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("BADGR_")}
        env.update(
            BADGR_EXAMPLE_PRIMARY_URL=self.primary_url,
            BADGR_EXAMPLE_BACKUP_URL=self.backup_url,
            BADGR_CLIENT_KEY=CLIENT_KEY,
            PYTHONUNBUFFERED="1",
        )
        return env


@pytest.fixture(scope="module")
def example_upstreams() -> Iterator[ExampleUpstreams]:
    primary = SimulatedProvider("primary", stream_chunks=20, chunk_delay=0.05)
    backup = SimulatedProvider("backup", stream_chunks=5, chunk_delay=0.01)
    with SimulatedServer(primary) as p, SimulatedServer(backup) as b:
        yield ExampleUpstreams(primary, backup, p.base_url, b.base_url)


@pytest.fixture
def up(example_upstreams: ExampleUpstreams) -> ExampleUpstreams:
    example_upstreams.primary.clear()
    example_upstreams.backup.clear()
    return example_upstreams


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen in {timeout} s")
        time.sleep(0.02)


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT) -> None:
    """Stop a process started in its own session: ``sig``, then SIGKILL to its group."""
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(STOP_TIMEOUT)


class ExampleServer:
    """``gunicorn 'flask_app:create_app()'`` on a loopback port, one worker."""

    def __init__(self, tmp: Path, env: dict[str, str], worker_class: str) -> None:
        self.log = tmp / "gunicorn.log"
        self.env = env
        self.worker_class = worker_class
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.url}/v1"

    def sdk(self, timeout: float = 10.0) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=CLIENT_KEY, max_retries=0,
                             timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def start(self) -> ExampleServer:
        # gunicorn adopts the bound socket (fd://N): no window for another process to take it
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            command = [
                sys.executable, "-m", "gunicorn", "--chdir", str(EXAMPLES),
                "--bind", f"fd://{sock.fileno()}", "--worker-class", self.worker_class,
                "--workers", "1", "--timeout", "30", "--graceful-timeout", "2",
                "--log-level", "warning",
            ]
            if self.worker_class == "gthread":
                command += ["--threads", "4"]
            command.append("flask_app:create_app()")
            with open(self.log, "wb") as log:
                self.proc = subprocess.Popen(
                    command, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                    pass_fds=[sock.fileno()], start_new_session=True,
                )
        finally:
            sock.close()
        try:
            wait_until(self._ready, START_TIMEOUT, "gunicorn answering")
        except BaseException:
            self.stop()
            raise
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"gunicorn exited early:\n{self.log_text()}")
        with contextlib.suppress(httpx.TransportError):
            return httpx.get(f"{self.url}/", timeout=1.0).status_code == 200
        return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            stop(proc)

    def wait_for_log(self, text: str, timeout: float = 5.0) -> None:
        wait_until(lambda: text in self.log_text(), timeout, f"log line {text!r}")


@pytest.fixture(scope="module", params=["sync", "gthread"])
def example_server(
    request: pytest.FixtureRequest, example_upstreams: ExampleUpstreams,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ExampleServer]:
    tmp = tmp_path_factory.mktemp(f"flask-example-{request.param}")
    server = ExampleServer(tmp, example_upstreams.env(), str(request.param))
    try:
        yield server.start()
    finally:
        server.stop()
    text = server.log_text()
    assert "Traceback" not in text and "[ERROR]" not in text, text


def new_request_id() -> str:
    return f"req_flask_e2e_{uuid.uuid4().hex[:12]}"


def failover_line(request_id: str) -> str:
    return f"LLM failover primary -> backup (server_error), request {request_id}"


# --------------------------------------------------------------------------- gunicorn


def test_the_apps_own_page_still_works(example_server: ExampleServer) -> None:
    page = httpx.get(f"{example_server.url}/", timeout=5)
    assert page.json() == {"app": "flask example", "llm_endpoint": "/v1/chat/completions"}


def test_chat_completion(example_server: ExampleServer, up: ExampleUpstreams) -> None:
    with example_server.sdk() as client:
        raw = client.chat.completions.with_raw_response.create(model="chat", messages=MESSAGES)
    assert raw.parse().choices[0].message.content == up.primary.reply
    assert raw.headers["x-badgr-provider"] == "primary"
    assert raw.headers["x-badgr-attempts"] == "1"
    assert up.primary.requests[0].headers["authorization"] == "Bearer sim"
    assert [m.id for m in example_server.sdk().models.list()] == ["chat"]


def test_stream_arrives_incrementally(example_server: ExampleServer, up: ExampleUpstreams) -> None:
    arrivals: list[float] = []
    pieces: list[str] = []
    with example_server.sdk() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, stream=True
        )
        assert raw.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert raw.headers["cache-control"] == "no-cache"
        assert "content-length" not in raw.headers
        with raw.parse() as stream:
            for chunk in stream:
                content = chunk.choices[0].delta.content if chunk.choices else None
                if content:
                    arrivals.append(time.monotonic())
                    pieces.append(content)
    assert "".join(pieces) == up.primary.reply
    assert len(arrivals) > 10  # one per non-empty piece of the 20
    # 20 events 0.05 s apart: a buffered body would reach the client all at once
    received_at = up.primary.requests[0].received_at
    assert arrivals[0] < received_at + 19 * 0.05
    assert arrivals[-1] - arrivals[0] > 19 * 0.05 / 2


def test_failover_fires_the_signal(example_server: ExampleServer, up: ExampleUpstreams) -> None:
    up.primary.fail_next("503")
    rid = new_request_id()
    with example_server.sdk() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, extra_headers={"x-request-id": rid}
        )
    assert raw.parse().choices[0].message.content == up.backup.reply
    assert raw.headers["x-badgr-provider"] == "backup"
    assert raw.headers["x-badgr-attempts"] == "2"
    assert raw.headers["x-request-id"] == rid
    assert [r.fault for r in up.primary.requests] == ["503"]
    # the example's receiver, connected with sender=app, logged it from inside gunicorn
    example_server.wait_for_log(failover_line(rid))


def test_stream_failover_fires_the_signal(
    example_server: ExampleServer, up: ExampleUpstreams
) -> None:
    up.primary.fail_next("503")
    rid = new_request_id()
    with example_server.sdk() as client, client.chat.completions.create(
        model="chat", messages=MESSAGES, stream=True, extra_headers={"x-request-id": rid}
    ) as stream:
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == up.backup.reply
    example_server.wait_for_log(failover_line(rid))


def test_client_disconnect_closes_the_upstream(
    example_server: ExampleServer, up: ExampleUpstreams
) -> None:
    body = {"model": "chat", "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.Client(timeout=10) as client, client.stream(
        "POST", f"{example_server.base_url}/chat/completions", json=body, headers=headers
    ) as response:
        assert response.status_code == 200
        assert next(response.iter_raw()).startswith(b"data: ")
        response.close()
    # gunicorn's next write fails, it calls close() on the response, and the extension's
    # generator closes the upstream connection: the fake upstream sees the client go away
    assert up.primary.wait_for_disconnect(2.0)
    assert len(up.primary.requests) == 1
    assert not up.backup.requests


def test_wrong_client_key(example_server: ExampleServer, up: ExampleUpstreams) -> None:
    client = openai.OpenAI(base_url=example_server.base_url, api_key="wrong", max_retries=0,
                           timeout=10)
    with client, pytest.raises(openai.AuthenticationError) as caught:
        client.chat.completions.create(model="chat", messages=MESSAGES)
    assert caught.value.code == "invalid_api_key"
    assert not up.primary.requests


def run_flask(up: ExampleUpstreams, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", str(EXAMPLES / "flask_app.py"), *args],
        capture_output=True, text=True, timeout=30, env=up.env(), check=False,
    )


def test_flask_badgr_status_of_the_running_server(
    example_server: ExampleServer, up: ExampleUpstreams
) -> None:
    result = run_flask(up, "badgr", "status", "--url", example_server.base_url)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("provider / model")
    assert re.match(r"primary\s+(up|degraded|down)\s+available", lines[1]), result.stdout


# --------------------------------------------------------------------------- one command


def test_flask_badgr_check(up: ExampleUpstreams) -> None:
    result = run_flask(up, "badgr", "check")
    assert result.returncode == 0, result.stderr
    assert "  chat -> primary/sim-small > backup/sim-small" in result.stdout
    assert "Inbound auth: 1 client key(s)" in result.stdout
    assert result.stdout.rstrip().endswith("Config OK.")


def test_flask_badgr_check_with_a_broken_config(up: ExampleUpstreams) -> None:
    env = up.env()
    env["BADGR_EXAMPLE_BACKUP_URL"] = "not a url"
    result = subprocess.run(
        [sys.executable, "-m", "flask", "--app", str(EXAMPLES / "flask_app.py"), "badgr",
         "check"], capture_output=True, text=True, timeout=30, env=env, check=False,
    )
    assert result.returncode != 0
    assert "providers.backup.base_url" in result.stdout + result.stderr


def test_one_command_run(tmp_path: Path) -> None:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BADGR_")}
    env["PYTHONUNBUFFERED"] = "1"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, str(EXAMPLES / "flask_app.py"), "--port", "0"],
            stdout=stdout, stderr=stderr, env=env, start_new_session=True,
        )
    try:
        found: list[str] = []

        def announced() -> bool:
            if proc.poll() is not None:
                raise AssertionError(f"the example exited: {err.read_text()}")
            found.extend(re.findall(r"http://127\.0\.0\.1:\d+/v1", out.read_text()))
            return bool(found)

        wait_until(announced, START_TIMEOUT, "the example announcing its URL")
        assert "api_key='dev-key'" in out.read_text()
        client = openai.OpenAI(base_url=found[0], api_key="dev-key", max_retries=0, timeout=10)
        with client:
            raw = client.chat.completions.with_raw_response.create(
                model="chat", messages=MESSAGES
            )
            with client.chat.completions.create(
                model="chat", messages=MESSAGES, stream=True
            ) as stream:
                text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert raw.parse().choices[0].message.content == "Hello from backup."
        assert raw.headers["x-badgr-provider"] == "backup"
        assert text == "Hello from backup."
        wait_until(lambda: "LLM failover primary -> backup" in err.read_text(), 5.0,
                   "the failover log line")
    finally:
        stop(proc)
    assert proc.returncode == 0, err.read_text()
    assert "Traceback" not in err.read_text()
