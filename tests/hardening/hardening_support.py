"""Helpers shared by tests/hardening (imported by name: there is no package here).

- :class:`ResetServer`: a raw TCP upstream that answers with a TCP reset (RST), either before
  any response byte or in the middle of a body; the simulator has no such fault.
- :func:`upstream_sockets`: the test process's open TCP sockets whose peer is one of the given
  ports, read from ``/proc`` (psutil is not installed), to prove no connection leaks.
- :class:`Recorder`: every badgr signal, in order, thread-safe.
- :class:`ThreadedWSGIServer`: werkzeug's threaded dev server on a loopback port, in a thread.
- :class:`ProbedApp`: an ASGI wrapper exposing the serving loop's task count and a way to
  close badgr's upstream pools inside that loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import httpx
from blinker import Signal

from badgr_middleware import signals

# recognisable fake keys: tests search every output for them
PRIMARY_KEY = "sk-hardening-primary-SECRET-5f3a9c1e7b2d"
BACKUP_KEY = "sk-hardening-backup-SECRET-0a1b2c3d4e5f"
RESET_KEY = "sk-hardening-reset-SECRET-99887766554433"
DEAD_KEY = "sk-hardening-dead-SECRET-11223344556677"
DNS_KEY = "sk-hardening-dns-SECRET-aabbccddeeff0011"
CLIENT_KEY = "client-hardening-SECRET-key-7e6d5c4b3a29"
ALL_SECRETS = (PRIMARY_KEY, BACKUP_KEY, RESET_KEY, DEAD_KEY, DNS_KEY, CLIENT_KEY)
MESSAGES = [{"role": "user", "content": "Say hello please"}]

SIGNAL_NAMES = (
    "request_started", "attempt_failed", "retry_scheduled", "failover", "circuit_opened",
    "circuit_half_opened", "circuit_closed", "request_finished", "request_failed",
    "store_degraded", "store_recovered",
)


# -- a resetting upstream ---------------------------------------------------------------------


class ResetServer:
    """Accepts HTTP requests and aborts each connection with a TCP RST.

    ``mode`` is ``"before-headers"`` (nothing is answered) or ``"mid-body"`` (status line,
    headers announcing a longer body, a fragment of it, then the reset). A stream request
    gets ``text/event-stream`` headers and half an event, so no complete event ever arrives.
    """

    def __init__(self) -> None:
        self.mode = "before-headers"
        self.accepted = 0
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="reset-server", daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> ResetServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                self.accepted += 1
                self._answer(conn)

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(2)
        request = b""
        with contextlib.suppress(OSError):
            while b"\r\n\r\n" not in request and len(request) < 1 << 20:
                data = conn.recv(65536)
                if not data:
                    break
                request += data
        stream = b"text/event-stream" in request.lower()
        with contextlib.suppress(OSError):
            if self.mode == "mid-body":
                if stream:
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                                 b"transfer-encoding: chunked\r\n\r\n"
                                 b"14\r\ndata: {\"id\": \"chatcmpl\r\n")
                else:
                    conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: 400\r\n\r\n{\"id\": \"chatcmpl-")
                time.sleep(0.02)
            # SO_LINGER with a zero timeout: close() sends RST instead of FIN
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


# -- sockets, from /proc ----------------------------------------------------------------------

_TCP_STATES = {
    "01": "ESTABLISHED", "02": "SYN_SENT", "03": "SYN_RECV", "04": "FIN_WAIT1",
    "05": "FIN_WAIT2", "06": "TIME_WAIT", "07": "CLOSE", "08": "CLOSE_WAIT", "09": "LAST_ACK",
    "0A": "LISTEN", "0B": "CLOSING",
}


def _own_socket_inodes() -> set[str]:
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def upstream_sockets(ports: Iterable[int]) -> list[tuple[int, str]]:
    """``(remote port, state)`` of every socket this process holds open to one of ``ports``.

    Both ends live in this process (the simulated upstreams are served in threads here), so
    only the client side is counted: the socket whose *remote* port is the upstream's.
    """
    wanted = set(ports)
    inodes = _own_socket_inodes()
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port in wanted and fields[9] in inodes:
                    found.append((remote_port, _TCP_STATES.get(fields[3], fields[3])))
    return found


def wait_until(check: Callable[[], bool], timeout: float = 2.0, interval: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)


# -- signals ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Record:
    name: str
    event: Any


class Recorder:
    """Every badgr signal sent while connected, in order (receivers run on server threads)."""

    def __init__(self) -> None:
        self.records: list[Record] = []
        self._lock = threading.Lock()
        self._connected: list[tuple[Signal, Callable[..., None]]] = []

    def connect(self) -> Recorder:
        for name in SIGNAL_NAMES:
            signal: Signal = getattr(signals, name)

            def receiver(sender: object, *, event: Any = None, _name: str = name,
                         **_: Any) -> None:
                with self._lock:
                    self.records.append(Record(_name, event))

            signal.connect(receiver, weak=False)
            self._connected.append((signal, receiver))
        return self

    def disconnect(self) -> None:
        for signal, receiver in self._connected:
            signal.disconnect(receiver)
        self._connected.clear()

    def clear(self) -> None:
        with self._lock:
            self.records.clear()

    def of(self, request_id: str) -> list[Record]:
        with self._lock:
            return [r for r in self.records
                    if getattr(r.event, "request_id", None) == request_id]

    def wait_for_end(self, request_id: str, timeout: float = 5.0) -> list[Record]:
        """The request's records once its terminal signal has been sent."""
        terminal = ("request_finished", "request_failed")
        ok = wait_until(lambda: any(r.name in terminal for r in self.of(request_id)), timeout)
        records = self.of(request_id)
        assert ok, f"request {request_id} never ended: {[r.name for r in records]}"
        return records


# -- servers ----------------------------------------------------------------------------------


class ThreadedWSGIServer:
    """A WSGI app behind werkzeug's threaded server on 127.0.0.1, in a daemon thread."""

    def __init__(self, app: Any) -> None:
        from werkzeug.serving import make_server

        self._server = make_server("127.0.0.1", 0, app, threaded=True)
        self.port = self._server.server_port
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={
            "poll_interval": 0.05}, name="wsgi-server", daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedWSGIServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


class ProbedApp:
    """Wraps an ASGI app with two test-only routes served on the app's own event loop:

    ``GET /__probe/tasks`` answers the loop's task count (this request's own task excluded),
    ``POST /__probe/close`` closes badgr's upstream pools on that loop (``engine.aclose``).
    """

    def __init__(self, app: Any, engine: Any) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/__probe/"):
            if scope["path"] == "/__probe/close":
                await self.engine.aclose()
                data: dict[str, Any] = {"closed": True}
            else:
                current = asyncio.current_task()
                tasks = [t for t in asyncio.all_tasks() if t is not current and not t.done()]
                data = {"tasks": len(tasks), "names": sorted(repr(t.get_coro()) for t in tasks)}
            body = json.dumps(data).encode()
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
            return
        await self.app(scope, receive, send)


# -- OpenAI response schemas ------------------------------------------------------------------

_SCHEMAS: dict[str, Any] | None = None


def schema_validator(name: str) -> Any:
    """A jsonschema validator for one schema of tests/hardening/openai_schemas.json."""
    import jsonschema

    global _SCHEMAS
    if _SCHEMAS is None:
        from pathlib import Path

        path = Path(__file__).with_name("openai_schemas.json")
        _SCHEMAS = json.loads(path.read_text(encoding="utf-8"))
    schema = {"$defs": _SCHEMAS["$defs"], "$ref": f"#/$defs/{name}"}
    return jsonschema.Draft202012Validator(schema)


def assert_schema(name: str, data: Any) -> None:
    errors = sorted(schema_validator(name).iter_errors(data), key=str)
    assert not errors, f"{name}: {[e.message for e in errors]} in {data!r}"


# -- a client that keeps every byte -----------------------------------------------------------


@dataclass
class Exchange:
    """One request through the gateway, as the client saw it."""

    status: int
    headers: httpx.Headers
    body: bytes
    events: list[Any]  # parsed ``data:`` payloads of a stream ("[DONE]" kept as a string)
    elapsed: float

    @property
    def json(self) -> Any:
        return json.loads(self.body)

    def text(self) -> str:
        return "\n".join(f"{k}: {v}" for k, v in self.headers.multi_items()) + "\n" + \
            self.body.decode("utf-8", "replace")


def parse_sse(body: bytes) -> list[Any]:
    events: list[Any] = []
    for block in body.replace(b"\r\n", b"\n").split(b"\n\n"):
        data = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
        if not data:
            continue
        payload = b"\n".join(data)
        events.append("[DONE]" if payload == b"[DONE]" else json.loads(payload))
    return events


def exchange(
    url: str, body: Any, *, headers: dict[str, str] | None = None, timeout: float = 15.0,
    content: bytes | None = None, client: httpx.Client | None = None,
) -> Exchange:
    """POST ``body`` (or raw ``content``) and read the whole answer (with ``client``, or a
    client of its own)."""
    sent = {"authorization": f"Bearer {CLIENT_KEY}"}
    if content is None:
        content = json.dumps(body).encode()
        sent["content-type"] = "application/json"
    sent.update(headers or {})
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if client is None:
            client = stack.enter_context(httpx.Client(timeout=timeout))
        response = stack.enter_context(client.stream("POST", url, content=content,
                                                     headers=sent))
        raw = response.read()
    events = []
    if response.headers.get("content-type", "").startswith("text/event-stream"):
        events = parse_sse(raw)
    return Exchange(response.status_code, response.headers, raw, events,
                    time.monotonic() - started)
