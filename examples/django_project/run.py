#!/usr/bin/env python
"""Serve the example project against two simulated providers, with one command.

    python examples/django_project/run.py            # uvicorn (ASGI) on 127.0.0.1:8000
    python examples/django_project/run.py --server gunicorn    # gunicorn (WSGI) instead
    python examples/django_project/run.py --demo     # stream one answer, fail over once, exit

No API keys and no internet: the "providers" are badgr's simulator on 127.0.0.1. The
``primary`` one answers the model ``sim-flaky`` with 503, so the alias ``flaky`` always fails
over to ``backup``, and mysite/signals.py logs it. Needs ``pip install
'badgr-middleware[django,demo]'`` (and ``gunicorn`` for ``--server gunicorn``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

HERE = Path(__file__).resolve().parent
CLIENT_KEY = "dev-key-change-me"  # the default in mysite/settings.py
START_TIMEOUT = 20.0


def server_command(server: str, fd: int) -> list[str]:
    """The command serving mysite on the already bound socket ``fd``."""
    if server == "gunicorn":
        return [sys.executable, "-m", "gunicorn", "mysite.wsgi:application",
                "--bind", f"fd://{fd}", "--worker-class", "gthread", "--threads", "8",
                "--log-level", "warning"]
    # Django's ASGI handler has no lifespan support: tell uvicorn not to try
    return [sys.executable, "-m", "uvicorn", "mysite.asgi:application", "--fd", str(fd),
            "--lifespan", "off", "--log-level", "warning"]


@contextlib.contextmanager
def simulated_providers() -> Iterator[dict[str, str]]:
    """``primary`` (503 for sim-flaky, a paced stream) and ``backup``, each on a free port."""
    primary = SimulatedProvider("primary", faults={"sim-flaky": "503"}, stream_chunks=8,
                                chunk_delay=0.1)
    backup = SimulatedProvider("backup")
    with SimulatedServer(primary) as first, SimulatedServer(backup) as second:
        yield {"MYSITE_PRIMARY_URL": first.base_url, "MYSITE_BACKUP_URL": second.base_url}


@contextlib.contextmanager
def serving(server: str, port: int, env: dict[str, str]) -> Iterator[str]:
    """Run the server in a subprocess until the block ends; yield its base URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        port = sock.getsockname()[1]
        proc = subprocess.Popen(
            server_command(server, sock.fileno()), cwd=HERE, pass_fds=[sock.fileno()],
            env={**os.environ, "DJANGO_SETTINGS_MODULE": "mysite.settings", **env},
            start_new_session=True,
        )
    finally:
        sock.close()  # the server holds its own copy
    base_url = f"http://127.0.0.1:{port}/v1"
    try:
        wait_until_ready(proc, base_url)
        yield base_url
    finally:
        stop(proc)


def wait_until_ready(proc: subprocess.Popen[bytes], base_url: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        with contextlib.suppress(httpx.TransportError):
            httpx.get(f"{base_url}/models", timeout=1.0)
            return
        time.sleep(0.1)
    raise SystemExit(f"the server did not answer within {START_TIMEOUT:.0f} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def demo(base_url: str) -> None:
    """What a client sees: a streamed answer, then a request that fails over."""
    from openai import OpenAI

    with OpenAI(base_url=base_url, api_key=CLIENT_KEY, max_retries=0, timeout=30) as client:
        print("Streaming model 'chat': ", end="", flush=True)
        with client.chat.completions.create(
            model="chat", messages=[{"role": "user", "content": "Hello!"}], stream=True
        ) as stream:
            for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    print(chunk.choices[0].delta.content, end="", flush=True)
        print()
        raw = client.chat.completions.with_raw_response.create(
            model="flaky", messages=[{"role": "user", "content": "Hello again!"}]
        )
        reply = raw.parse()
        print(f"Model 'flaky' answered by {raw.headers['x-badgr-provider']} after "
              f"{raw.headers['x-badgr-attempts']} attempts: {reply.choices[0].message.content}")
    time.sleep(0.2)  # let the server's log line about the failover come out first


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=["uvicorn", "gunicorn"], default="uvicorn")
    parser.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    parser.add_argument("--demo", action="store_true", help="run a client once, then exit")
    args = parser.parse_args(argv)
    with simulated_providers() as env, serving(args.server, args.port, env) as base_url:
        print(f"mysite is serving badgr's endpoint at {base_url} ({args.server}).", flush=True)
        if args.demo:
            demo(base_url)
            return 0
        print(f"Try:  curl {base_url}/chat/completions -H 'Authorization: Bearer "
              f"{CLIENT_KEY}' -H 'Content-Type: application/json' -d "
              """'{"model": "flaky", "messages": [{"role": "user", "content": "Hi"}]}'""")
        print("Press Ctrl-C to stop.", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
