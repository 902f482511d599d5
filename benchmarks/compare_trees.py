"""A/B of badgr's ASGI app from two (or more) source trees against the aiohttp floor.

For a change to the hot path: measure the tree before it and the tree after it side by side,
in one run, interleaved round by round, so the machine's drift hits both alike. Each tree's
``src`` serves ``apps/badgr_asgi.py`` (under uvicorn, as in ``run_all.py``); the aiohttp
floor of ``floors.py`` runs beside them as the yardstick. Per round and server, ``load.py``
runs its c=32 phase (``--requests`` x 4, at most ``--seconds``) and its c=1 stream phase.
Prints medians: req/s, CPU per request and CPU per stream, and each as a ratio to the floor.

Run: ``git worktree add /tmp/before HEAD~3`` then
``python benchmarks/compare_trees.py /tmp/before .`` (about 20 s per round).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from transport import HOST, PATH, free_port, stop, wait_for_port

HERE = Path(__file__).resolve().parent
STARTUP_TIMEOUT = 15.0


def serve(argv: list[str], env: dict[str, str]) -> tuple[subprocess.Popen[bytes], int]:
    """Start one server on a free port; return it once it listens."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, *argv, "--port", str(port)],
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_port(port, proc, STARTUP_TIMEOUT)
    except BaseException:
        stop(proc)
        raise
    return proc, port


def measure(port: int, pid: int, requests: int, seconds: float) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "load.py"), "--url", f"http://{HOST}:{port}{PATH}",
           "--phase", "throughput", "--phase", "stream", "--requests", str(requests),
           "--throughput-requests", str(4 * requests), "--seconds", str(seconds),
           "--pid", str(pid)]
    done = subprocess.run(cmd, capture_output=True, timeout=4 * seconds + 60, check=True)
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("trees", nargs="+", help="checkouts of this repository")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--requests", type=int, default=3000, help="per c=1 phase; c=32: 4x")
    parser.add_argument("--seconds", type=float, default=3.0, help="per phase")
    args = parser.parse_args()

    upstream, upstream_port = serve([str(HERE / "upstream.py")], {})
    base = f"http://{HOST}:{upstream_port}"
    servers: dict[str, tuple[subprocess.Popen[bytes], int]] = {}
    try:
        servers["aiohttp floor"] = serve(
            [str(HERE / "floors.py"), "--client", "aiohttp", "--upstream", base], {})
        for tree in args.trees:
            src = Path(tree).resolve() / "src"
            env = {"PYTHONPATH": os.pathsep.join([str(src), str(HERE / "apps"), str(HERE)]),
                   "BENCH_UPSTREAM": base}
            servers[tree] = serve([str(HERE / "apps" / "badgr_asgi.py")], env)
        samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in servers}
        for _ in range(args.rounds):
            for name, (proc, port) in servers.items():
                phases = measure(port, proc.pid, args.requests, args.seconds)
                samples[name].append((phases["throughput"]["rps"],
                                      phases["throughput"]["server_cpu_ms_per_req"],
                                      phases["stream"]["server_cpu_ms_per_req"]))
    finally:
        for proc, _ in servers.values():
            stop(proc)
        stop(upstream)

    medians = {name: [statistics.median(column) for column in zip(*rows, strict=True)]
               for name, rows in samples.items()}
    floor = medians["aiohttp floor"]
    print(f"medians of {args.rounds} interleaved rounds (CPU in microseconds)")
    for name, (rps, cpu, stream_cpu) in medians.items():
        print(f"{name:40.40s} req/s c=32 {rps:7,.0f} ({rps / floor[0]:.2f}x)   "
              f"CPU/req {1000 * cpu:6.1f} ({cpu / floor[1]:.2f}x)   "
              f"CPU/stream {1000 * stream_cpu:6.1f} ({stream_cpu / floor[2]:.2f}x)")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
