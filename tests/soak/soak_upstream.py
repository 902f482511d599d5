"""Fake upstreams for the soak tests, in their own process: ``benchmarks/upstream.py`` (the
raw-asyncio server, pre-encoded answers) served on two loopback ports, ``primary`` and
``backup``, with a fault-rate knob on ``primary``.

A request to ``primary`` fails with probability ``--fault-rate`` (a seeded RNG), in one of
three ways, each before a single byte of an answer could reach badgr's client:

- ``503``: an OpenAI-style 503 error;
- ``reset``: the connection is aborted with a TCP RST before the status line;
- ``cut``: non-streamed requests only: the status line, headers announcing the whole body and
  half of it, then the connection is closed (a streamed request gets ``reset`` instead: a cut
  after the first event cannot be failed over by any gateway).

``GET /__stats`` (on either port) answers JSON: requests and faults per server.

Run: ``python tests/soak/soak_upstream.py --fault-rate 0.05 --chunk-delay 0.01``; prints
``{"primary": PORT, "backup": PORT}`` on one line once both servers listen.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import socket
import struct
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import upstream  # noqa: E402  (benchmarks/upstream.py)

STATS: dict[str, Counter[str]] = {"primary": Counter(), "backup": Counter()}
FAULTS = ("503", "reset", "cut")


class FaultyProtocol(upstream.UpstreamProtocol):
    """One connection of ``server``; fails a share ``fault_rate`` of its requests."""

    def __init__(self, server: str, fault_rate: float, rng: random.Random,
                 chunk_delay: float) -> None:
        super().__init__(chunk_delay)
        self.server = server
        self.fault_rate = fault_rate
        self.rng = rng

    def _respond(self, request_line: bytes, body: bytes, close: bool) -> None:
        assert self.transport is not None
        if request_line.startswith(b"GET /__stats "):
            data = json.dumps({k: dict(v) for k, v in STATS.items()}).encode()
            self.transport.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
                                 b"content-length: %d\r\n\r\n%s" % (len(data), data))
            return
        stats = STATS[self.server]
        stats["requests"] += 1
        stream = upstream.is_stream_request(body)
        stats["stream" if stream else "json"] += 1
        if self.fault_rate and self.rng.random() < self.fault_rate:
            fault = self.rng.choice(FAULTS)
            if fault == "cut" and stream:
                fault = "reset"
            stats[fault] += 1
            stats["faults"] += 1
            if fault == "503":
                self.transport.write(upstream.UNAVAILABLE_RESPONSE)
            elif fault == "cut":
                self.transport.write(upstream.COMPLETION_RESPONSE[: -len(
                    upstream.COMPLETION_BODY) // 2])
                self.transport.close()
            else:
                sock = self.transport.get_extra_info("socket")
                if sock is not None:  # SO_LINGER 0: the close sends RST, not FIN
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                    struct.pack("ii", 1, 0))
                self.transport.abort()
            return
        super()._respond(request_line, body, close)


async def serve(fault_rate: float, chunk_delay: float, seed: int) -> None:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    ports: dict[str, Any] = {}
    servers = []
    for name, rate in (("primary", fault_rate), ("backup", 0.0)):
        server = await loop.create_server(
            lambda n=name, r=rate: FaultyProtocol(n, r, rng, chunk_delay),
            "127.0.0.1", 0, backlog=2048)
        servers.append(server)
        ports[name] = server.sockets[0].getsockname()[1]
    print(json.dumps(ports), flush=True)
    await asyncio.gather(*(s.serve_forever() for s in servers))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fault-rate", type=float, default=0.0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=20261125)
    args = parser.parse_args()
    asyncio.run(serve(args.fault_rate, args.chunk_delay, args.seed))


if __name__ == "__main__":
    main()
