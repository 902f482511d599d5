"""End to end: examples/django_project served by uvicorn (ASGI) and by gunicorn (WSGI) in
subprocesses, driven by the official openai SDK, in front of simulated upstreams.

The servers run exactly the commands examples/django_project/run.py runs, with Django's
"StreamingHttpResponse must consume ... iterators" warning turned into an error, so a
buffered stream would fail the request instead of passing slowly.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import django
import httpx
import openai
import pytest
from django.core.management import call_command
from djbadgr_support import BUFFERING_WARNING, MESSAGES

from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

PROJECT = Path(__file__).resolve().parents[2] / "examples" / "django_project"
CLIENT_KEY = "e2e-client-key-for-the-example-project"
START_TIMEOUT = 20.0
STOP_TIMEOUT = 10.0


def load_run_py() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mysite_run_py", PROJECT / "run.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


run_py = load_run_py()


@dataclass
class ExampleUpstreams:
    """What mysite's BADGR routes to: ``chat`` -> primary, then backup."""

    primary: SimulatedProvider  # 8 content chunks, 0.1 s apart
    backup: SimulatedProvider
    env: dict[str, str]

    def clear(self) -> None:
        self.primary.clear()
        self.backup.clear()


class ExampleServer:
    """mysite under uvicorn or gunicorn, on a socket bound here (no port race)."""

    def __init__(self, server: str, tmp: Path, env: dict[str, str]) -> None:
        self.server = server
        self.output = tmp / f"{server}.log"
        self.env = env
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def sdk(self, timeout: float = 10.0) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base_url, api_key=CLIENT_KEY, max_retries=0,
                             timeout=timeout)

    def start(self) -> ExampleServer:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
            env = {
                **os.environ,
                **self.env,
                "DJANGO_SETTINGS_MODULE": "mysite.settings",
                "BADGR_CLIENT_KEY": CLIENT_KEY,
                "PYTHONWARNINGS": f"error:{BUFFERING_WARNING}",
            }
            with open(self.output, "wb") as output:
                self.proc = subprocess.Popen(
                    run_py.server_command(self.server, sock.fileno()), cwd=PROJECT, env=env,
                    stdout=output, stderr=subprocess.STDOUT, pass_fds=[sock.fileno()],
                    start_new_session=True,
                )
        finally:
            sock.close()
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.server} exited early:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                httpx.get(f"{self.base_url}/models", timeout=1.0)
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.server} did not answer in {START_TIMEOUT} s:\n{self.log()}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(STOP_TIMEOUT)

    def log(self) -> str:
        return self.output.read_text(errors="replace") if self.output.exists() else ""

    def wait_for_log(self, text: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while text not in (log := self.log()):
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not in the {self.server} log:\n{log}")
            time.sleep(0.02)
        return log


@pytest.fixture(scope="module")
def example_upstreams() -> Iterator[ExampleUpstreams]:
    primary = SimulatedProvider("primary", stream_chunks=8, chunk_delay=0.1)
    backup = SimulatedProvider("backup")
    with SimulatedServer(primary) as first, SimulatedServer(backup) as second:
        env = {"MYSITE_PRIMARY_URL": first.base_url, "MYSITE_BACKUP_URL": second.base_url}
        yield ExampleUpstreams(primary, backup, env)


@pytest.fixture
def upstream(example_upstreams: ExampleUpstreams) -> ExampleUpstreams:
    example_upstreams.clear()
    return example_upstreams


@pytest.fixture(scope="module", params=["uvicorn", "gunicorn"])
def served(request: pytest.FixtureRequest, example_upstreams: ExampleUpstreams,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[ExampleServer]:
    server = ExampleServer(request.param, tmp_path_factory.mktemp(request.param),
                           example_upstreams.env)
    try:
        yield server.start()
    finally:
        server.stop()
    log = server.log()
    for problem in ("Traceback", "Unclosed", BUFFERING_WARNING, "Error"):
        assert problem not in log, log


def new_request_id() -> str:
    return f"req_django_e2e_{uuid.uuid4().hex[:12]}"


def test_the_sdk_streams_and_chunks_arrive_incrementally(served: ExampleServer,
                                                         upstream: ExampleUpstreams) -> None:
    chunks, delay = upstream.primary.stream_chunks, upstream.primary.chunk_delay
    arrivals: list[float] = []
    pieces: list[str] = []
    with served.sdk() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, stream=True
        )
        assert raw.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert raw.headers["cache-control"] == "no-cache"
        assert raw.headers["x-accel-buffering"] == "no"
        assert raw.headers["x-badgr-provider"] == "primary"
        assert "gzip" not in raw.headers.get("content-encoding", "")
        with raw.parse() as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    arrivals.append(time.monotonic())
                    pieces.append(chunk.choices[0].delta.content)
    assert "".join(pieces) == upstream.primary.reply
    assert len(arrivals) == chunks
    # The upstream spaces its events `delay` apart, so it cannot have sent its last content
    # chunk before received_at + chunks * delay; a buffered stream would reach the client
    # all at once, after that moment.
    received_at = upstream.primary.requests[0].received_at
    assert arrivals[0] < received_at + (chunks - 1) * delay
    assert arrivals[-1] - arrivals[0] > (chunks - 1) * delay / 2


def test_gzip_middleware_leaves_the_event_stream_alone(served: ExampleServer,
                                                       upstream: ExampleUpstreams) -> None:
    body = {"model": "chat", "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {CLIENT_KEY}", "accept-encoding": "gzip"}
    with httpx.Client(timeout=10) as client, client.stream(
        "POST", f"{served.base_url}/chat/completions", json=body, headers=headers
    ) as response:
        assert response.status_code == 200
        assert response.headers.get("content-encoding", "") == ""
        assert "accept-encoding" not in response.headers.get("vary", "").lower()
        first = next(response.iter_raw())
    assert first.startswith(b"data: ")  # not gzip's magic bytes


def test_a_failover_fires_the_django_signal(served: ExampleServer,
                                            upstream: ExampleUpstreams) -> None:
    upstream.primary.fail_next("503")
    rid = new_request_id()
    with served.sdk() as client:
        raw = client.chat.completions.with_raw_response.create(
            model="chat", messages=MESSAGES, stream=True, extra_headers={"x-request-id": rid}
        )
        assert raw.headers["x-badgr-provider"] == "backup"
        assert raw.headers["x-badgr-attempts"] == "2"
        with raw.parse() as stream:
            text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert text == upstream.backup.reply
    # mysite/signals.py's @receiver(django_badgr.signals.failover) logged it
    served.wait_for_log(
        f"WARNING mysite.llm: LLM failover primary/sim-small -> backup/sim-small after "
        f"server_error (request {rid})"
    )


def test_a_client_disconnect_closes_the_upstream(served: ExampleServer,
                                                 upstream: ExampleUpstreams) -> None:
    if served.server == "uvicorn" and django.VERSION < (5, 0):
        pytest.skip("Django's ASGI handler watches for disconnects from Django 5.0 on")
    body = {"model": "chat", "messages": MESSAGES, "stream": True}
    headers = {"authorization": f"Bearer {CLIENT_KEY}"}
    with httpx.Client(timeout=10) as client, client.stream(
        "POST", f"{served.base_url}/chat/completions", json=body, headers=headers
    ) as response:
        assert response.status_code == 200
        assert next(response.iter_raw()).startswith(b"data: ")
        response.close()
    assert upstream.primary.wait_for_disconnect(3.0)
    assert len(upstream.primary.requests) == 1


def test_errors_and_csrf_over_the_wire(served: ExampleServer) -> None:
    # CsrfViewMiddleware is on in mysite: a key client's POST passes, a keyless one gets 401
    response = httpx.post(f"{served.base_url}/chat/completions",
                          json={"model": "chat", "messages": MESSAGES}, timeout=10)
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"
    missing = httpx.get(f"{served.base_url}/nope", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "Invalid URL (GET /v1/nope)"


def test_manage_py_badgr_status_of_the_running_server(served: ExampleServer) -> None:
    out = io.StringIO()
    call_command("badgr", "status", "--url", served.base_url, "--key", CLIENT_KEY, stdout=out)
    rows = [line.split()[:3] for line in out.getvalue().splitlines()[1:]]
    states = [[name, state] for name, _, state in rows]  # the glance depends on earlier tests
    assert ["primary", "available"] in states
    assert ["backup", "available"] in states


def test_run_py_is_the_one_command() -> None:
    proc = subprocess.Popen(
        [sys.executable, str(PROJECT / "run.py"), "--demo", "--port", "0"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
        env={**os.environ, "PYTHONWARNINGS": f"error:{BUFFERING_WARNING}"},
    )
    try:
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:  # Ctrl-C: run.py stops its server, then itself
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.communicate(timeout=STOP_TIMEOUT + 5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
    assert proc.returncode == 0, stdout + stderr
    assert "Streaming model 'chat': Hello from primary." in stdout
    assert "Model 'flaky' answered by backup after 2 attempts" in stdout
    assert "LLM failover primary/sim-flaky -> backup/sim-small after server_error" in stderr
    assert "Traceback" not in stderr
