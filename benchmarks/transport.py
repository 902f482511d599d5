"""Compare async upstream transports for badgr's proxy: one command, interleaved rounds.

Starts the fake upstream (``upstream.py``) in its own process, then for each round measures
the upstream directly and every candidate proxy (``floors.py`` under uvicorn, one process per
candidate and round, order rotated each round) with ``load.py`` in a separate process.
Prints medians over rounds with ratios to the aiohttp floor and writes
``benchmarks/results/transport.json`` and ``benchmarks/results/transport.md``.

Run: ``python benchmarks/transport.py [--quick]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

HERE = Path(__file__).resolve().parent
RESULTS_DIR = HERE / "results"
CANDIDATES = ("httpx", "httpx-aiohttp", "aiohttp")
FLOOR = "aiohttp"
DIRECT = "direct"
HOST = "127.0.0.1"
PATH = "/v1/chat/completions"
STARTUP_TIMEOUT = 15.0
THROUGHPUT_FACTOR = 4  # the c=32 phase may run 4x the requests (still capped by --seconds)
TOTAL_BUDGET_SECONDS = 225.0  # hard stop well under the 4-minute limit
PHASES = ("latency", "throughput", "stream")
PACKAGES = ("httpx", "httpcore", "httpx-aiohttp", "aiohttp", "uvicorn", "h11")


def free_port() -> int:
    """Ask the kernel for a free TCP port on 127.0.0.1."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    """Block until ``port`` accepts connections or fail if ``proc`` died / time ran out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process {proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"port {port} not ready after {timeout:.0f}s: {proc.args!r}")


def start(args: list[str], port: int) -> subprocess.Popen[bytes]:
    """Start a server process and wait until it listens."""
    proc = subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for_port(port, proc, STARTUP_TIMEOUT)
    except BaseException:
        stop(proc)
        raise
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Terminate one child process (SIGTERM, then SIGKILL after 5 s)."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)


def run_load(
    url: str, server_pid: int | None, upstream_pid: int, requests: int, seconds: float
) -> dict[str, Any]:
    """Run ``load.py`` (all phases) in a separate process and return its JSON."""
    cmd = [
        sys.executable,
        str(HERE / "load.py"),
        "--url",
        url,
        "--requests",
        str(requests),
        "--throughput-requests",
        str(requests * THROUGHPUT_FACTOR),
        "--seconds",
        str(seconds),
        "--upstream-pid",
        str(upstream_pid),
    ]
    if server_pid is not None:
        cmd += ["--pid", str(server_pid)]
    # 3 phases x (warm-up <= 2 s + measurement <= seconds + 10 s request timeout) + start-up.
    limit = 3 * (seconds + 12.0) + 10.0
    done = subprocess.run(cmd, capture_output=True, timeout=limit, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load.py failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure(
    target: str, upstream_url: str, upstream_pid: int, requests: int, seconds: float
) -> dict[str, Any]:
    """Measure one target (the upstream directly or one candidate proxy)."""
    if target == DIRECT:
        return run_load(upstream_url + PATH, None, upstream_pid, requests, seconds)
    port = free_port()
    args = [str(HERE / "floors.py"), "--client", target, "--upstream", upstream_url]
    proc = start([*args, "--port", str(port)], port)
    try:
        return run_load(f"http://{HOST}:{port}{PATH}", proc.pid, upstream_pid, requests, seconds)
    finally:
        stop(proc)


def median_of(rounds: list[dict[str, Any]], fn: Callable[[dict[str, Any]], float | None]) -> float:
    """Median over rounds of a metric extracted by ``fn`` (NaN when no data)."""
    values = [v for r in rounds if (v := fn(r)) is not None]
    return statistics.median(values) if values else float("nan")


def _metric(target: str, phase: str, key: str) -> Callable[[dict[str, Any]], float | None]:
    """Extractor for one raw metric of ``target`` in a round."""
    return lambda r: r["results"][target][phase][key]


def _added(target: str, phase: str, key: str) -> Callable[[dict[str, Any]], float]:
    """Extractor for ``target``'s metric minus the direct-to-upstream metric of the same round."""
    return lambda r: r["results"][target][phase][key] - r["results"][DIRECT][phase][key]


def summarize(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per-target medians over rounds; added latencies are per-round differences to direct."""
    summary: dict[str, dict[str, float]] = {}
    for t in (DIRECT, *CANDIDATES):
        summary[t] = {
            "added_p50_ms_c1": median_of(rounds, _added(t, "latency", "p50_ms")),
            "rps_c32": median_of(rounds, _metric(t, "throughput", "rps")),
            "cpu_ms_per_req_c32": median_of(
                rounds, _metric(t, "throughput", "server_cpu_ms_per_req")
            ),
            "added_stream_ttfb_ms_c1": median_of(rounds, _added(t, "stream", "ttfb_p50_ms")),
            "p50_ms_c1": median_of(rounds, _metric(t, "latency", "p50_ms")),
            "p99_ms_c1": median_of(rounds, _metric(t, "latency", "p99_ms")),
            "cpu_ms_per_req_c1": median_of(rounds, _metric(t, "latency", "server_cpu_ms_per_req")),
            "p50_ms_c32": median_of(rounds, _metric(t, "throughput", "p50_ms")),
            "p99_ms_c32": median_of(rounds, _metric(t, "throughput", "p99_ms")),
            "server_cpu_util_c32": median_of(rounds, _metric(t, "throughput", "server_cpu_util")),
            "loadgen_cpu_util_c32": median_of(rounds, _metric(t, "throughput", "loadgen_cpu_util")),
            "stream_ttfb_p50_ms_c1": median_of(rounds, _metric(t, "stream", "ttfb_p50_ms")),
            "stream_ttfb_p99_ms_c1": median_of(rounds, _metric(t, "stream", "ttfb_p99_ms")),
            "stream_total_p50_ms_c1": median_of(rounds, _metric(t, "stream", "p50_ms")),
            "stream_cpu_ms_per_req_c1": median_of(
                rounds, _metric(t, "stream", "server_cpu_ms_per_req")
            ),
            "errors": float(sum(r["results"][t][p]["errors"] for r in rounds for p in PHASES)),
        }
    return summary


def ratios(summary: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each candidate's headline metrics divided by the aiohttp floor's."""
    keys = ("added_p50_ms_c1", "rps_c32", "cpu_ms_per_req_c32", "added_stream_ttfb_ms_c1")
    floor = summary[FLOOR]
    return {
        c: {k: summary[c][k] / floor[k] if floor[k] else float("nan") for k in keys}
        for c in CANDIDATES
    }


def render(
    summary: dict[str, dict[str, float]], ratio: dict[str, dict[str, float]], meta: dict[str, Any]
) -> str:
    """Markdown tables: headline metrics with ratios, then details."""
    d = summary[DIRECT]
    lines = [
        f"Upstream transport floors: medians of {meta['rounds_completed']} interleaved round(s); "
        f"{meta['requests']} requests (c=32: {meta['requests'] * THROUGHPUT_FACTOR}) "
        f"or {meta['seconds']:g} s per measurement, whichever first; "
        f"{meta['cpus']} CPUs; uvicorn {meta['uvicorn_loop']}+{meta['uvicorn_http']}.",
        "Ratios in parentheses are relative to the aiohttp floor (x aiohttp).",
        "",
        "| target | added p50 c=1 (ms) | req/s c=32 | CPU ms/req c=32 "
        "| added stream TTFB c=1 (ms) |",
        "|---|---:|---:|---:|---:|",
        f"| direct to upstream | 0 (p50 {d['p50_ms_c1']:.3f}) | {d['rps_c32']:,.0f} | n/a |"
        f" 0 (TTFB {d['stream_ttfb_p50_ms_c1']:.3f}) |",
    ]
    for c in CANDIDATES:
        s, r = summary[c], ratio[c]
        lines.append(
            f"| {c} | {s['added_p50_ms_c1']:.3f} ({r['added_p50_ms_c1']:.2f}x) "
            f"| {s['rps_c32']:,.0f} ({r['rps_c32']:.2f}x) "
            f"| {s['cpu_ms_per_req_c32']:.3f} ({r['cpu_ms_per_req_c32']:.2f}x) "
            f"| {s['added_stream_ttfb_ms_c1']:.3f} ({r['added_stream_ttfb_ms_c1']:.2f}x) |"
        )
    lines += [
        "",
        "| target | p50/p99 c=1 (ms) | CPU ms/req c=1 | p50/p99 c=32 (ms) | proxy/loadgen CPU"
        " util c=32 | req/s per proxy core c=32 | stream TTFB p50/p99 (ms)"
        " | stream total p50 (ms) | stream CPU ms/req | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]

    def opt(value: float, fmt: str) -> str:
        return "n/a" if value != value else format(value, fmt)

    for t in (DIRECT, *CANDIDATES):
        s = summary[t]
        lines.append(
            f"| {t} | {s['p50_ms_c1']:.3f} / {s['p99_ms_c1']:.3f} "
            f"| {opt(s['cpu_ms_per_req_c1'], '.3f')} "
            f"| {s['p50_ms_c32']:.2f} / {s['p99_ms_c32']:.2f} "
            f"| {opt(s['server_cpu_util_c32'], '.2f')} / {s['loadgen_cpu_util_c32']:.2f} "
            f"| {opt(1000.0 / s['cpu_ms_per_req_c32'], ',.0f')} "
            f"| {s['stream_ttfb_p50_ms_c1']:.3f} / {s['stream_ttfb_p99_ms_c1']:.3f} "
            f"| {s['stream_total_p50_ms_c1']:.3f} "
            f"| {opt(s['stream_cpu_ms_per_req_c1'], '.3f')} | {s['errors']:.0f} |"
        )
    lines += [
        "",
        f"Wall time {meta['wall_seconds']:.0f} s; load average before/after "
        f"{meta['loadavg_before']} / {meta['loadavg_after']}.",
    ]
    return "\n".join(lines)


def environment() -> dict[str, Any]:
    """Versions and event-loop / parser implementations in use."""
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = None
    has = importlib.util.find_spec
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "versions": versions,
        "uvicorn_loop": "uvloop" if has("uvloop") else "asyncio",
        "uvicorn_http": "httptools" if has("httptools") else "h11",
    }


def _on_sigterm(signum: int, frame: object) -> NoReturn:
    """Turn SIGTERM into SystemExit so ``finally`` blocks kill the children."""
    raise SystemExit(128 + signum)


def main() -> None:
    """Run the benchmark and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 500 requests / 2 s")
    parser.add_argument("--rounds", type=int, help="default 5 (1 with --quick)")
    parser.add_argument("--requests", type=int, help="per measurement; default 2000 (500)")
    parser.add_argument("--seconds", type=float, help="per measurement; default 4 (2)")
    args = parser.parse_args()
    rounds_wanted = args.rounds or (1 if args.quick else 5)
    requests = args.requests or (500 if args.quick else 2000)
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    signal.signal(signal.SIGTERM, _on_sigterm)

    started = time.monotonic()
    meta: dict[str, Any] = {
        **environment(),
        "rounds_wanted": rounds_wanted,
        "requests": requests,
        "seconds": seconds,
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    rounds: list[dict[str, Any]] = []
    upstream_port = free_port()
    upstream_url = f"http://{HOST}:{upstream_port}"
    upstream = start([str(HERE / "upstream.py"), "--port", str(upstream_port)], upstream_port)
    try:
        for i in range(rounds_wanted):
            elapsed = time.monotonic() - started
            last = rounds[-1]["seconds"] if rounds else 0.0
            if rounds and elapsed + 1.2 * last > TOTAL_BUDGET_SECONDS:
                print(f"time budget reached; stopping after {len(rounds)} round(s)", flush=True)
                break
            shift = i % len(CANDIDATES)
            order = [DIRECT, *CANDIDATES[shift:], *CANDIDATES[:shift]]
            round_start = time.monotonic()
            results = {}
            for target in order:
                results[target] = measure(target, upstream_url, upstream.pid, requests, seconds)
                rps = results[target]["throughput"]["rps"]
                print(f"round {i + 1}/{rounds_wanted} {target:<14} {rps:8,.0f} req/s", flush=True)
            rounds.append(
                {
                    "round": i + 1,
                    "order": order,
                    "seconds": time.monotonic() - round_start,
                    "results": results,
                }
            )
    finally:
        stop(upstream)

    meta["rounds_completed"] = len(rounds)
    meta["wall_seconds"] = time.monotonic() - started
    meta["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    summary = summarize(rounds)
    ratio = ratios(summary)
    table = render(summary, ratio, meta)
    print()
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    report = {"meta": meta, "summary": summary, "ratios_to_aiohttp": ratio, "rounds": rounds}
    (RESULTS_DIR / "transport.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS_DIR / "transport.md").write_text(table + "\n")
    print(f"\nwrote {RESULTS_DIR / 'transport.json'} and {RESULTS_DIR / 'transport.md'}")


if __name__ == "__main__":
    main()
