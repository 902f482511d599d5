"""Soak: steady mixed load through ``BadgrApp`` for ``SOAK_SECONDS`` with 5 % of the primary
upstream's requests failing (503, a TCP reset before the status line, a JSON body cut in
half), each failed over to a healthy backup.

badgr runs under uvicorn in its own process (one try per target, so every fault fails over),
the fake upstreams in another (``soak_upstream.py``); ``CONCURRENCY`` aiohttp workers here
send requests back to back, every other one streamed (50 events, 10 ms apart). Asserted:

- zero failed client requests: every answer is a 200 with the full content (a stream ends
  with ``[DONE]``), since every request had a healthy backup;
- faults really were injected (4-6 % of the primary's requests) and failed over;
- badgr's RSS after the load is within ``RSS_TOLERANCE_MB`` of its RSS after the warm-up
  (the first ``WARMUP_SECONDS`` of the load);
- after the load: the serving loop's task count back to its idle baseline, no upstream
  socket in ``CLOSE_WAIT``, at most one idle pooled connection per concurrent client and
  upstream, none once the pools are closed, and the open fds back to the baseline.

``BADGR_SOAK_SECONDS`` overrides the duration for local runs (e.g. 600 for ten minutes).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

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

SOAK_SECONDS = float(os.environ.get("BADGR_SOAK_SECONDS", "120"))
WARMUP_SECONDS = min(20.0, SOAK_SECONDS / 4)
CONCURRENCY = 32
FAULT_RATE = 0.05
CHUNK_DELAY = 0.01
RSS_TOLERANCE_MB = 5.0
REQUEST_TIMEOUT = 60.0
MB = 2**20


async def _load(rig: object, seconds: float) -> dict[str, object]:
    url = rig.url  # type: ignore[attr-defined]
    bodies = {True: request_body(True), False: request_body(False)}
    counts: Counter[str] = Counter()
    failures: list[str] = []
    samples: list[tuple[float, int]] = []
    fds: list[int] = []  # badgr's open fds, sampled with the RSS
    upstream_sockets: list[int] = []  # badgr's sockets to the upstreams, sampled likewise
    connector = aiohttp.TCPConnector(limit=CONCURRENCY)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT)
    started = time.monotonic()
    deadline = started + seconds
    rss_warm: list[int] = []

    async def worker(n: int) -> None:
        i = n
        while time.monotonic() < deadline:
            stream = i % 2 == 1
            i += 1
            try:
                async with session.post(url, data=bodies[stream],
                                        headers={"content-type": "application/json"}) as resp:
                    problem = check_answer(resp.status, await resp.read(), stream)
            except (aiohttp.ClientError, TimeoutError) as exc:
                problem = repr(exc)
            counts["stream" if stream else "json"] += 1
            if problem is not None:
                failures.append(problem)

    async def sampler() -> None:
        while time.monotonic() < deadline:
            elapsed = time.monotonic() - started
            samples.append((elapsed, rig.rss()))  # type: ignore[attr-defined]
            fds.append(rig.fds())  # type: ignore[attr-defined]
            upstream_sockets.append(len(rig.upstream_sockets()))  # type: ignore[attr-defined]
            if not rss_warm and elapsed >= WARMUP_SECONDS:
                rss_warm.append(samples[-1][1])
            await asyncio.sleep(1.0)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        await asyncio.gather(sampler(), *(worker(n) for n in range(CONCURRENCY)))
    return {"counts": counts, "failures": failures, "samples": samples, "fds": fds,
            "upstream_sockets": upstream_sockets,
            "rss_warm": rss_warm[0] if rss_warm else samples[0][1],
            "elapsed": time.monotonic() - started}


@pytest.mark.long
def test_soak_with_injected_upstream_faults() -> None:
    limit = raise_open_files()
    with serve_rig(fault_rate=FAULT_RATE, chunk_delay=CHUNK_DELAY) as rig:
        rss_start = rig.rss()
        tasks_before, fds_before = rig.tasks(), rig.fds()
        load = asyncio.run(_load(rig, SOAK_SECONDS))
        rss_after = rig.rss()
        stats = rig.upstream_stats()
        seen = settle(rig, tasks_before)
        fds_ok = wait_until(lambda: rig.fds() <= fds_before, 10.0, 0.1)
        fds_after = rig.fds()
        counts: Counter[str] = load["counts"]  # type: ignore[assignment]
        failures: list[str] = load["failures"]  # type: ignore[assignment]
        samples: list[tuple[float, int]] = load["samples"]  # type: ignore[assignment]
        rss_warm: int = load["rss_warm"]  # type: ignore[assignment]
        total = sum(counts.values())
        primary, backup = stats["primary"], stats.get("backup", {})
        faults = primary.get("faults", 0)
        rss_max = max(rss for _, rss in samples)
        idle = seen["idle_upstream_sockets"]
        print(
            f"\nsoak {load['elapsed']:.0f} s (RLIMIT_NOFILE {limit}), {CONCURRENCY} clients: "
            f"{total} requests ({dict(counts)}), {total / load['elapsed']:.0f} req/s, "  # type: ignore[operator]
            f"{len(failures)} failed; primary {primary}, backup {backup}; "
            f"faults {faults} = {100 * faults / max(primary['requests'], 1):.2f} % of the "
            f"primary's requests; badgr RSS at start {rss_start / MB:.1f} MB, after the "
            f"{WARMUP_SECONDS:.0f} s warm-up {rss_warm / MB:.1f} MB, max {rss_max / MB:.1f} MB, "
            f"after {rss_after / MB:.1f} MB ({(rss_after - rss_warm) / MB:+.1f} MB); "
            f"RSS samples (s, MB) {[(round(t), round(r / MB, 1)) for t, r in samples[::10]]}; "
            f"during the load: fds max {max(load['fds'])}, sockets to the upstreams max "  # type: ignore[type-var,arg-type]
            f"{max(load['upstream_sockets'])}; "  # type: ignore[type-var,arg-type]
            f"fds {fds_before} -> {seen['fds_before_close']} (pooled, load stopped) -> "
            f"{fds_after}; tasks {tasks_before} -> {seen['tasks']}; idle upstream sockets "
            f"{Counter(idle)}"
        )
        assert not failures, (len(failures), failures[:5])
        assert total > 0
        assert 0.04 <= faults / primary["requests"] <= 0.06, primary
        # one try per target: every fault sent its request to the backup, and nothing else did
        assert backup.get("requests", 0) == faults, (primary, backup)
        assert primary["requests"] == total, (primary, total)
        assert (rss_after - rss_warm) / MB <= RSS_TOLERANCE_MB, (rss_warm, rss_after)
        assert seen["tasks_back"], seen
        assert seen["close_wait_gone"], seen
        assert len(idle) <= 2 * CONCURRENCY, idle
        assert seen["upstream_sockets_gone"], seen
        assert fds_ok, (fds_before, fds_after)
