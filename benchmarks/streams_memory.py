"""Memory of a proxy holding many concurrent streams (a client in its own process).

Opens ``--streams`` streamed requests at once against a proxy whose upstream sends its 50
events slowly (``upstream.py --chunk-delay``), waits until every stream has its first byte,
and samples the proxy's resident memory (``VmRSS`` of every ``--pid``, from /proc) every 20 ms
until the streams end. Prints JSON: the RSS before, the peak while every stream was open, and
the difference per 1,000 streams.

Run: ``python benchmarks/streams_memory.py --url http://127.0.0.1:8003/v1/chat/completions
--pid 1234 --streams 1000``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from typing import Any

import aiohttp
from load import DONE, HEADERS, STREAM_BODY

SAMPLE_SECONDS = 0.02


def rss_bytes(pids: list[int]) -> int:
    """Resident memory of ``pids`` together (bytes)."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"VmRSS:"):
                    total += int(line.split()[1]) * 1024
                    break
    return total


async def _stream(session: aiohttp.ClientSession, url: str, opened: list[float]) -> bool:
    async with session.post(url, data=STREAM_BODY) as resp:
        first = await resp.content.readany()
        opened.append(time.perf_counter())
        body = first + await resp.content.read()
        return resp.status == 200 and body.endswith(DONE)


async def measure(url: str, pids: list[int], streams: int, timeout: float) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=0)
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    async with aiohttp.ClientSession(
        connector=connector, timeout=client_timeout, headers=HEADERS
    ) as session:
        # warm-up: a few streams, so lazily created pools and caches count in the baseline
        await asyncio.gather(*(_stream(session, url, []) for _ in range(4)))
        await asyncio.sleep(0.2)
        before = rss_bytes(pids)
        opened: list[float] = []
        start = time.perf_counter()
        tasks = [asyncio.ensure_future(_stream(session, url, opened)) for _ in range(streams)]
        peak = before
        peak_all_open = 0
        deadline = start + timeout
        while not all(t.done() for t in tasks) and time.perf_counter() < deadline:
            rss = rss_bytes(pids)
            peak = max(peak, rss)
            if len(opened) >= streams:
                peak_all_open = max(peak_all_open, rss)
            await asyncio.sleep(SAMPLE_SECONDS)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    ok = sum(1 for r in results if r is True)
    all_open_after = (max(opened) - start) if len(opened) >= streams else None
    return {
        "streams": streams,
        "completed": ok,
        "errors": streams - ok,
        "first_error": next((repr(r) for r in results if r is not True), ""),
        "all_open_after_s": all_open_after,
        "rss_before_mb": before / 2**20,
        "rss_peak_mb": peak / 2**20,
        "rss_peak_all_open_mb": peak_all_open / 2**20 if peak_all_open else None,
        "mb_per_1000_streams": (peak - before) / 2**20 * 1000.0 / streams,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--pid", type=int, action="append", required=True)
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds for everything")
    args = parser.parse_args()
    result = asyncio.run(measure(args.url, args.pid, args.streams, args.timeout))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
