"""Helpers of tests/soak: the fake upstreams and badgr each in a process of their own, and
what /proc says about a process (RSS, open fds, TCP sockets to given ports).

Imported by name (there is no package here); reuses the hardening suite's helpers.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "hardening"))

from hardening_support import _TCP_STATES, wait_until  # noqa: E402

sys.path.insert(0, str(HERE.parents[1] / "benchmarks"))

import upstream as bench_upstream  # noqa: E402  (benchmarks/upstream.py)

MODEL = "soak-model"
# what the fake upstream answers: the JSON reply and a stream's content, event by event
JSON_REPLY = "Hello from the fake upstream."
STREAM_REPLY = "".join(f"tok{i} " for i in range(1, bench_upstream.STREAM_EVENTS - 1))
DONE = b"data: [DONE]\n\n"
# badgr: one try per target, so every injected fault is failed over to the backup
TIMEOUTS = {"connect": 2, "first_byte": 10, "read": 10, "deadline": 60}
RETRY = {"attempts_per_target": 1, "backoff_base": 0.01, "backoff_max": 0.02}
# the default breaker opens after 5 failures in a row (by completion order); random 5 % faults
# sometimes come in such a cluster, and the primary would then be skipped for 30 s. The soak is
# about failing over request by request, so only the failure-rate rule (50 %) is kept.
BREAKER = {"consecutive_failures": 1000}
OPEN_FILES = 8192  # soft RLIMIT_NOFILE wanted for this process and the children


def raise_open_files(wanted: int = OPEN_FILES) -> int:
    """Raise the soft open-file limit to ``wanted`` (capped by the hard limit); returns it.

    Children inherit it (uvicorn and the fake upstreams hold ~1,000 sockets each at peak)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


# -- /proc -------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def sockets_to(pid: int, ports: Iterable[int]) -> list[tuple[int, str]]:
    """``(remote port, state)`` of every TCP socket ``pid`` holds open to one of ``ports``."""
    wanted = set(ports)
    inodes = _socket_inodes(pid)
    found = []
    for table in (f"/proc/{pid}/net/tcp", f"/proc/{pid}/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as f:
            next(f)
            for line in f:
                fields = line.split()
                remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                if remote_port in wanted and fields[9] in inodes:
                    found.append((remote_port, _TCP_STATES.get(fields[3], fields[3])))
    return found


# -- processes ---------------------------------------------------------------------------------


def _start(args: list[str]) -> tuple[subprocess.Popen[bytes], bytes]:
    """Start a child and read its first stdout line (bounded by a 20 s wait).

    Its stderr goes to an unnamed temporary file, not a pipe: a pipe nobody reads would
    block the child once its logs filled it."""
    log = tempfile.TemporaryFile()  # noqa: SIM115  (closed by _stop)
    proc = subprocess.Popen([sys.executable, *args], stdout=subprocess.PIPE, stderr=log,
                            cwd=HERE.parents[1])
    proc.log = log  # type: ignore[attr-defined]
    assert proc.stdout is not None
    line = b""
    deadline = time.monotonic() + 20
    os.set_blocking(proc.stdout.fileno(), False)
    while not line.endswith(b"\n") and time.monotonic() < deadline and proc.poll() is None:
        line += proc.stdout.read() or b""
        time.sleep(0.05)
    if not line.endswith(b"\n"):
        _stop(proc)
        raise RuntimeError(f"{args[0]} did not start: {stderr_of(proc)}")
    return proc, line


def stderr_of(proc: subprocess.Popen[bytes]) -> str:
    """What a child wrote to its stderr so far (its last 5,000 characters)."""
    log = proc.log  # type: ignore[attr-defined]
    if log.closed:
        return ""
    log.seek(0)
    return log.read().decode("utf-8", "replace")[-5000:]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
    if proc.stdout is not None:
        proc.stdout.close()
    proc.log.close()  # type: ignore[attr-defined]


@dataclass
class Rig:
    """The fake upstreams and badgr, each in its own process."""

    upstream: subprocess.Popen[bytes]
    gateway: subprocess.Popen[bytes]
    ports: dict[str, int]  # upstream ports: primary, backup
    port: int  # badgr's

    @property
    def pid(self) -> int:
        return self.gateway.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1/chat/completions"

    def upstream_stats(self) -> dict[str, dict[str, int]]:
        answer = httpx.get(f"http://127.0.0.1:{self.ports['backup']}/__stats", timeout=5)
        return answer.json()

    def tasks(self) -> int:
        return int(httpx.get(f"http://127.0.0.1:{self.port}/__probe/tasks",
                             timeout=5).json()["tasks"])

    def close_pools(self) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/__probe/close", timeout=5).raise_for_status()

    def upstream_sockets(self) -> list[tuple[int, str]]:
        return sockets_to(self.pid, self.ports.values())

    def rss(self) -> int:
        return rss_bytes(self.pid)

    def fds(self) -> int:
        return fd_count(self.pid)


def badgr_config(ports: dict[str, int]) -> dict[str, Any]:
    providers = {name: {"kind": "openai", "base_url": f"http://127.0.0.1:{port}/v1",
                        "api_key": f"sk-soak-{name}"} for name, port in ports.items()}
    return {
        "providers": providers,
        "models": {MODEL: ["primary/bench-model", "backup/bench-model"]},
        "allow_anonymous": True,
        "timeouts": dict(TIMEOUTS),
        "retry": dict(RETRY),
        "breaker": dict(BREAKER),
    }


@contextlib.contextmanager
def serve_rig(*, fault_rate: float, chunk_delay: float) -> Iterator[Rig]:
    """Start the upstreams and badgr; both are terminated (then killed) on the way out."""
    with contextlib.ExitStack() as stack:
        upstream, line = _start([str(HERE / "soak_upstream.py"), "--fault-rate",
                                 str(fault_rate), "--chunk-delay", str(chunk_delay)])
        stack.callback(_stop, upstream)
        ports = json.loads(line)
        gateway, line = _start([str(HERE / "soak_gateway.py"),
                                json.dumps(badgr_config(ports))])
        stack.callback(_stop, gateway)
        rig = Rig(upstream, gateway, ports, int(line))
        assert wait_until(lambda: _answers(rig), 10.0, 0.1), "badgr never answered"
        yield rig


def _answers(rig: Rig) -> bool:
    try:
        rig.tasks()
    except httpx.HTTPError:
        return False
    return True


# -- requests ----------------------------------------------------------------------------------


def request_body(stream: bool) -> bytes:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream"] = True
    return json.dumps(body).encode()


def check_answer(status: int, body: bytes, stream: bool) -> str | None:
    """None if the answer is complete and correct, else what is wrong with it."""
    if status != 200:
        return f"status {status}: {body[:200]!r}"
    if not stream:
        content = json.loads(body)["choices"][0]["message"]["content"]
        return None if content == JSON_REPLY else f"content {content!r}"
    if not body.endswith(DONE):
        return f"stream without [DONE]: ...{body[-200:]!r}"
    text = []
    for block in body.split(b"\n\n"):
        if block.startswith(b"data: {"):
            event = json.loads(block[6:])
            if event.get("error"):
                return f"error event {event!r}"
            for choice in event["choices"]:
                text.append(choice["delta"].get("content") or "")
    content = "".join(text)
    return None if content == STREAM_REPLY else f"stream content {content[:200]!r}"


def settle(rig: Rig, tasks_baseline: int, timeout: float = 10.0) -> dict[str, Any]:
    """After the load: wait (bounded) for the task count and upstream sockets to settle,
    close badgr's pools and wait for the fds to come back; returns what was seen."""
    seen: dict[str, Any] = {}
    seen["tasks_back"] = wait_until(lambda: rig.tasks() <= tasks_baseline, timeout, 0.1)
    seen["tasks"] = rig.tasks()
    seen["close_wait_gone"] = wait_until(
        lambda: all(state != "CLOSE_WAIT" for _, state in rig.upstream_sockets()), timeout, 0.1)
    seen["idle_upstream_sockets"] = rig.upstream_sockets()
    seen["fds_before_close"] = rig.fds()
    rig.close_pools()
    seen["upstream_sockets_gone"] = wait_until(lambda: not rig.upstream_sockets(), timeout, 0.1)
    seen["upstream_sockets_after_close"] = rig.upstream_sockets()
    return seen
