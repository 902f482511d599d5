"""1,000 concurrent streaming clients through ``BadgrApp`` under uvicorn.

badgr runs in its own process, the fake upstreams (``benchmarks/upstream.py``, one event every
``CHUNK_DELAY`` s, 50 events) in another, and this test opens 1,000 streams at once with one
aiohttp client and reads each to its end. Every stream must end with ``[DONE]`` and carry the
full content, all 1,000 must have been open at the same moment, and afterwards badgr's task
count, upstream sockets and open fds must be back to their baselines. badgr's RSS is sampled
from /proc every 50 ms: before, peak, and at the end.
"""

from __future__ import annotations

import asyncio
import time

import aiohttp
import pytest
from soak_support import (
    check_answer,
    raise_open_files,
    request_body,
    serve_rig,
    settle,
    wait_until,
)

STREAMS = 1000
CHUNK_DELAY = 0.1  # 50 events: a stream lasts ~5 s, so all 1,000 are open together
TIMEOUT = 60.0
MB = 2**20
# the second round's peak RSS may exceed the first's by this much (allocator noise)
RSS_TOLERANCE_MB = 5.0


async def _one(session: aiohttp.ClientSession, url: str, body: bytes,
               opened: list[float], closed: list[float]) -> str | None:
    async with session.post(url, data=body,
                            headers={"content-type": "application/json"}) as resp:
        first = await resp.content.readany()
        opened.append(time.monotonic())
        data = first + await resp.content.read()
        closed.append(time.monotonic())
        return check_answer(resp.status, data, True)


async def _run(url: str, pid_rss: object, pid_fds: object, streams: int) -> dict[str, object]:
    body = request_body(True)
    connector = aiohttp.TCPConnector(limit=0, force_close=True)
    async with aiohttp.ClientSession(connector=connector,
                                     timeout=aiohttp.ClientTimeout(total=TIMEOUT)) as session:
        opened: list[float] = []
        closed: list[float] = []
        started = time.monotonic()
        tasks = [asyncio.ensure_future(_one(session, url, body, opened, closed))
                 for _ in range(streams)]
        peak = peak_fds = 0
        deadline = started + TIMEOUT
        while not all(t.done() for t in tasks) and time.monotonic() < deadline:
            peak = max(peak, pid_rss())  # type: ignore[operator]
            peak_fds = max(peak_fds, pid_fds())  # type: ignore[operator]
            await asyncio.sleep(0.05)
        results = await asyncio.gather(*tasks, return_exceptions=True)
    return {"results": results, "peak": peak, "peak_fds": peak_fds, "opened": opened,
            "closed": closed, "started": started, "elapsed": time.monotonic() - started}


def _round(rig: object, tasks_before: int, fds_before: int) -> dict[str, object]:
    """1,000 streams at once, then the leak checks; returns the figures."""
    run = asyncio.run(_run(rig.url, rig.rss, rig.fds, STREAMS))  # type: ignore[attr-defined]
    rss_end = rig.rss()  # type: ignore[attr-defined]
    failures = [r for r in run["results"] if r is not None]  # type: ignore[attr-defined]
    opened, closed = run["opened"], run["closed"]
    assert not failures, (len(failures), failures[:3])
    assert len(opened) == len(closed) == STREAMS  # type: ignore[arg-type]
    # every stream was open at one moment: the last one started before the first ended
    assert max(opened) < min(closed), (max(opened), min(closed))  # type: ignore[type-var]
    seen = settle(rig, tasks_before)  # type: ignore[arg-type]
    fds_ok = wait_until(lambda: rig.fds() <= fds_before, 10.0, 0.1)  # type: ignore[attr-defined]
    figures = {
        "all_open_after": max(opened) - run["started"],  # type: ignore[arg-type,operator]
        "elapsed": run["elapsed"], "peak": run["peak"], "peak_fds": run["peak_fds"],
        "end": rss_end, "settled": rig.rss(), "fds_after": rig.fds(),  # type: ignore[attr-defined]
        **seen,
    }
    print(
        f"\n{STREAMS} concurrent streams: {STREAMS - len(failures)} complete, all open "
        f"{figures['all_open_after']:.2f} s after the start, done in {run['elapsed']:.2f} s; "
        f"badgr RSS peak {run['peak'] / MB:.1f} MB, end {rss_end / MB:.1f} MB, after "  # type: ignore[operator]
        f"closing the pools {figures['settled'] / MB:.1f} MB; fds peak {run['peak_fds']} "  # type: ignore[operator]
        f"-> {seen['fds_before_close']} (pooled) -> {figures['fds_after']}; tasks "
        f"{tasks_before} -> {seen['tasks']}; idle upstream sockets "
        f"{len(seen['idle_upstream_sockets'])}"
    )
    assert seen["tasks_back"], seen
    assert seen["close_wait_gone"], seen
    assert seen["upstream_sockets_gone"], seen
    assert fds_ok, (fds_before, figures["fds_after"])
    return figures


@pytest.mark.long
def test_a_thousand_concurrent_streams() -> None:
    limit = raise_open_files()
    with serve_rig(fault_rate=0.0, chunk_delay=CHUNK_DELAY) as rig:
        # warm-up: a few streams, then close the pools, so the baselines include what is
        # created once (sessions, imports) and no pooled connection
        warm = asyncio.run(_run(rig.url, rig.rss, rig.fds, 8))
        assert all(r is None for r in warm["results"]), warm["results"]  # type: ignore[union-attr]
        rig.close_pools()
        assert wait_until(lambda: not rig.upstream_sockets(), 5.0)
        tasks_before, fds_before, rss_before = rig.tasks(), rig.fds(), rig.rss()
        print(f"\nRLIMIT_NOFILE {limit}; badgr before: RSS {rss_before / MB:.1f} MB, "
              f"{fds_before} fds, {tasks_before} tasks")
        # two rounds: the second shows whether the first left memory behind
        first = _round(rig, tasks_before, fds_before)
        second = _round(rig, tasks_before, fds_before)
        stats = rig.upstream_stats()
        growth = (first["peak"] - rss_before) / MB  # type: ignore[operator]
        print(f"memory per 1,000 streams: +{growth:.1f} MB (first round's peak - before); "
              f"second round's peak {second['peak'] / MB:.1f} MB vs "  # type: ignore[operator]
              f"{first['peak'] / MB:.1f} MB; upstream {stats}")  # type: ignore[operator]
        assert stats["primary"]["requests"] == 2 * STREAMS + 8
        assert (second["peak"] - first["peak"]) / MB <= RSS_TOLERANCE_MB, (  # type: ignore[operator]
            first["peak"], second["peak"])
