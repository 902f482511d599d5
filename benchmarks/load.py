"""Load generator for the proxy benchmarks (aiohttp client, separate process).

Phases (each bounded by ``--requests`` (``--throughput-requests`` for c=32) and ``--seconds``,
whichever comes first, and each preceded by an uncounted warm-up at the same concurrency):

* ``latency``     c=1, non-streaming: per-request latency p50/p99
* ``throughput``  c=32, non-streaming: req/s and the server's CPU ms per request
* ``stream``      c=1, ``"stream": true``: time to first body byte p50/p99 and total latency

Server CPU comes from ``/proc/<pid>/stat`` (utime+stime) read before and after the phase.
Prints one JSON object keyed by phase.

Run: ``python benchmarks/load.py --url http://127.0.0.1:8002/v1/chat/completions --pid 1234``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

PHASES: dict[str, tuple[int, bool]] = {
    "latency": (1, False),
    "throughput": (32, False),
    "stream": (1, True),
}
BODY = json.dumps(
    {"model": "bench-model", "messages": [{"role": "user", "content": "Say hello."}]}
).encode()
STREAM_BODY = json.dumps(
    {
        "model": "bench-model",
        "messages": [{"role": "user", "content": "Say hello."}],
        "stream": True,
    }
).encode()
HEADERS = {"content-type": "application/json"}
DONE = b"data: [DONE]\n\n"
REQUEST_TIMEOUT = 10.0
WARMUP_MAX_SECONDS = 2.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime+stime of ``pid`` in seconds, from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat", "rb") as f:
        stat = f.read()
    fields = stat[stat.rindex(b")") + 2 :].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def tree_cpu_seconds(pids: list[int]) -> float:
    """CPU seconds of several processes (a gunicorn arbiter and its worker, say)."""
    return sum(cpu_seconds(pid) for pid in pids)


def percentile(sorted_values: list[float], pct: float) -> float:
    """Nearest-rank percentile of an ascending list (0.0 when empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, min(len(sorted_values), math.ceil(pct / 100.0 * len(sorted_values))))
    return sorted_values[rank - 1]


@dataclass
class PhaseStats:
    """Raw samples of one phase."""

    latencies: list[float] = field(default_factory=list)
    ttfbs: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""


class Expect:
    """What a valid answer looks like (``--expect-status``): 200 unless told otherwise."""

    status = 200


async def _one_request(
    session: aiohttp.ClientSession, url: str, stream: bool, stats: PhaseStats | None
) -> None:
    """Send one request, validate the answer and record its timings."""
    start = time.perf_counter()
    ttfb = 0.0
    try:
        async with session.post(url, data=STREAM_BODY if stream else BODY) as resp:
            first = await resp.content.readany()
            ttfb = time.perf_counter() - start
            body = first + await resp.content.read()
            ok = resp.status == Expect.status and (
                body.endswith(DONE) if stream and resp.status == 200 else body[:1] == b"{"
            )
            if not ok:
                raise ValueError(f"bad response: status {resp.status}, {len(body)} bytes")
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        if stats is not None:
            stats.errors += 1
            stats.first_error = stats.first_error or repr(exc)
        return
    if stats is not None:
        stats.latencies.append(time.perf_counter() - start)
        stats.ttfbs.append(ttfb)


async def _drive(
    url: str,
    concurrency: int,
    stream: bool,
    requests: int,
    seconds: float,
    stats: PhaseStats | None,
) -> tuple[int, float]:
    """Run ``concurrency`` workers until ``requests`` are issued or ``seconds`` pass."""
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    issued = 0
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers=HEADERS, auto_decompress=False
    ) as session:
        start = time.perf_counter()
        deadline = start + seconds

        async def worker() -> None:
            nonlocal issued
            while issued < requests and time.perf_counter() < deadline:
                issued += 1
                await _one_request(session, url, stream, stats)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - start
    return issued, elapsed


async def run_phase(
    url: str,
    name: str,
    requests: int,
    seconds: float,
    warmup: int,
    pid: list[int] | None,
    upstream_pid: int | None,
) -> dict[str, Any]:
    """Warm up, then measure one phase; returns a JSON-able summary (times in ms)."""
    concurrency, stream = PHASES[name]
    await _drive(
        url, concurrency, stream, max(warmup, concurrency), min(seconds, WARMUP_MAX_SECONDS), None
    )
    stats = PhaseStats()
    server_cpu0 = tree_cpu_seconds(pid) if pid else 0.0
    upstream_cpu0 = cpu_seconds(upstream_pid) if upstream_pid else 0.0
    own_cpu0 = time.process_time()
    issued, elapsed = await _drive(url, concurrency, stream, requests, seconds, stats)
    own_cpu = time.process_time() - own_cpu0
    server_cpu = tree_cpu_seconds(pid) - server_cpu0 if pid else None
    upstream_cpu = cpu_seconds(upstream_pid) - upstream_cpu0 if upstream_pid else None
    done = len(stats.latencies)
    lat = sorted(stats.latencies)
    ttfb = sorted(stats.ttfbs)

    def per_request_ms(cpu: float | None) -> float | None:
        return None if cpu is None or not done else 1000.0 * cpu / done

    return {
        "concurrency": concurrency,
        "stream": stream,
        "issued": issued,
        "completed": done,
        "errors": stats.errors,
        "first_error": stats.first_error,
        "elapsed_s": elapsed,
        "rps": done / elapsed if elapsed > 0 else 0.0,
        "p50_ms": 1000.0 * percentile(lat, 50),
        "p99_ms": 1000.0 * percentile(lat, 99),
        "ttfb_p50_ms": 1000.0 * percentile(ttfb, 50),
        "ttfb_p99_ms": 1000.0 * percentile(ttfb, 99),
        "server_cpu_ms_per_req": per_request_ms(server_cpu),
        "server_cpu_util": None if server_cpu is None else server_cpu / elapsed,
        "upstream_cpu_ms_per_req": per_request_ms(upstream_cpu),
        "loadgen_cpu_ms_per_req": per_request_ms(own_cpu),
        "loadgen_cpu_util": own_cpu / elapsed if elapsed > 0 else 0.0,
    }


async def run_all(args: argparse.Namespace) -> dict[str, Any]:
    """Run the requested phases in order."""
    results: dict[str, Any] = {}
    for name in args.phase or list(PHASES):
        requests = args.requests
        if name == "throughput" and args.throughput_requests:
            requests = args.throughput_requests
        results[name] = await run_phase(
            args.url, name, requests, args.seconds, args.warmup, args.pid, args.upstream_pid
        )
    return results


def main() -> None:
    """Command-line entry point: print the phase results as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True, help="full chat-completions URL")
    parser.add_argument("--phase", action="append", choices=list(PHASES), help="repeatable")
    parser.add_argument("--requests", type=int, default=1000, help="max requests per phase")
    parser.add_argument(
        "--throughput-requests", type=int, help="max requests of the c=32 phase (else --requests)"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="max seconds per phase")
    parser.add_argument("--warmup", type=int, default=100, help="uncounted requests first")
    parser.add_argument("--pid", type=int, action="append",
                        help="server process to charge CPU time to (repeatable: summed)")
    parser.add_argument("--model", default="bench-model", help="the body's model field")
    parser.add_argument("--expect-status", type=int, default=200, help="a valid answer's status")
    parser.add_argument("--upstream-pid", type=int, help="upstream process (CPU reported too)")
    args = parser.parse_args()
    global BODY, STREAM_BODY
    if args.model != "bench-model":
        BODY = BODY.replace(b'"bench-model"', json.dumps(args.model).encode())
        STREAM_BODY = STREAM_BODY.replace(b'"bench-model"', json.dumps(args.model).encode())
    Expect.status = args.expect_status
    print(json.dumps(asyncio.run(run_all(args)), indent=2))


if __name__ == "__main__":
    main()
