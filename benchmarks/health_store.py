"""What the Redis health store costs per request, against the in-memory store: one command.

For each round, badgr's ASGI app (``BadgrApp``) is started under uvicorn twice, one process
each, in front of the fake upstream (``upstream.py``): once with ``state.backend = "memory"``,
once with ``"redis"`` (order alternating by round). ``load.py`` measures each in a separate
process: p50/p99 latency at c=1 and req/s (and the server's CPU per request) at c=32. Then one
more redis-backed process serves a counted number of requests, at c=1 and at c=32, while
Redis's ``INFO commandstats`` is read before and after: the commands clients sent, per
request, are the Redis round trips per request. Prints medians over rounds with the ratio
redis/memory, checks the documented bound (docs/redis.md: at most 1 snapshot + 1 record per
attempt, + 1 admit per half-open target, so 2 round trips for a plain successful request) and
writes ``benchmarks/results/health_store.json`` and ``benchmarks/results/health_store.md``;
the exit status is 1 when the bound is not met.

Redis: the machine's at 127.0.0.1:6379 when it answers, else a private ``redis-server`` on a
free port; without either the benchmark prints a note and measures nothing. Round trips are
counted on a private ``redis-server`` whenever the binary exists, because commandstats are
server-wide and another client of a shared server would be counted too.

Run: ``python benchmarks/health_store.py [--quick]`` (under 3 minutes; ``--quick`` ~10 s).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from transport import (
    HOST,
    PATH,
    RESULTS_DIR,
    _on_sigterm,
    environment,
    free_port,
    median_of,
    start,
    stop,
    wait_for_port,
)

HERE = Path(__file__).resolve().parent
SHARED_REDIS_PORT = 6379
BACKENDS = ("memory", "redis")
PHASES = ("latency", "throughput")  # load.py's c=1 and c=32 non-streaming phases
THROUGHPUT_FACTOR = 4  # the c=32 phase may run 4x the requests (still capped by --seconds)
TOTAL_BUDGET_SECONDS = 150.0  # no new round after this; the whole run stays under 3 minutes
ALIAS = "bench-model"  # the model load.py asks for
# Commands badgr's Lua scripts run inside Redis. Redis counts them in commandstats too, but they
# are not round trips: only the commands clients send are.
SCRIPT_INNER = frozenset(
    {"hgetall", "hmget", "hget", "hset", "hdel", "del", "hincrby", "pexpire", "pexpireat"}
)
MEASURING = frozenset({"info"})  # this script's own reads of the stats
# What redis-py sends once when it opens a pooled connection: one-off, not per store call.
HANDSHAKE = frozenset({"hello", "client|setinfo", "client|setname", "auth", "select"})
# The bound of docs/redis.md for one attempt that succeeds on a closed breaker.
BOUND_PLAIN_SUCCESS = 2  # 1 snapshot + 1 record


# -- the badgr server (``--serve``) -------------------------------------------------------------


def serve(config_json: str, port: int) -> None:
    """Serve ``BadgrApp`` under uvicorn (single worker, quiet logs), like ``floors.py``."""
    import uvicorn

    from badgr_middleware import BadgrApp

    uvicorn.run(BadgrApp(json.loads(config_json)), host=HOST, port=port, log_level="warning",
                access_log=False, lifespan="on", backlog=1024)


def badgr_config(upstream_url: str, state: dict[str, Any]) -> dict[str, Any]:
    return {
        "providers": {"up": {"kind": "openai", "base_url": f"{upstream_url}/v1", "api_key": "x"}},
        "models": {ALIAS: [f"up/{ALIAS}"]},
        "allow_anonymous": True,
        "state": state,
    }


@contextlib.contextmanager
def badgr_process(
    upstream_url: str, state: dict[str, Any]
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """One badgr server process (this file with ``--serve``); yields it and its URL."""
    port = free_port()
    args = [str(Path(__file__).resolve()), "--serve",
            json.dumps(badgr_config(upstream_url, state)), "--port", str(port)]
    proc = start(args, port)
    try:
        yield proc, f"http://{HOST}:{port}{PATH}"
    finally:
        stop(proc)


# -- Redis ------------------------------------------------------------------------------------


def redis_answers(port: int, timeout: float = 0.5) -> bool:
    """True when something on 127.0.0.1:``port`` answers PING like Redis."""
    try:
        with socket.create_connection((HOST, port), timeout=timeout) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class PrivateRedis:
    """A ``redis-server`` of this run on a free port, without persistence."""

    def __init__(self, binary: str) -> None:
        self.port = free_port()
        self.dir = tempfile.TemporaryDirectory(prefix="badgr-bench-redis-")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", HOST, "--save", "", "--appendonly",
             "no", "--daemonize", "no", "--dir", self.dir.name],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            wait_for_port(self.port, self.proc, 10.0)
            deadline = time.monotonic() + 10.0
            while not redis_answers(self.port):
                if time.monotonic() > deadline:
                    raise RuntimeError("the private redis-server does not answer PING")
                time.sleep(0.02)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)
        self.dir.cleanup()


def redis_client(port: int) -> Any:
    import redis

    return redis.Redis(host=HOST, port=port, socket_timeout=5, socket_connect_timeout=5,
                       decode_responses=True)


def delete_prefix(port: int, prefix: str) -> None:
    client = redis_client(port)
    try:
        names = list(client.scan_iter(match=prefix + "*", count=1000))
        if names:
            client.delete(*names)
    finally:
        client.close()


# -- measurements -----------------------------------------------------------------------------


def run_load(url: str, server_pid: int, requests: int, seconds: float) -> dict[str, Any]:
    """``load.py``'s c=1 and c=32 phases in a separate process (as transport.py runs it)."""
    cmd = [sys.executable, str(HERE / "load.py"), "--url", url, "--requests", str(requests),
           "--throughput-requests", str(requests * THROUGHPUT_FACTOR), "--seconds",
           str(seconds), "--pid", str(server_pid)]
    for phase in PHASES:
        cmd += ["--phase", phase]
    limit = len(PHASES) * (seconds + 12.0) + 10.0
    done = subprocess.run(cmd, capture_output=True, timeout=limit, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load.py failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure(backend: str, upstream_url: str, redis_state: dict[str, Any], requests: int,
            seconds: float) -> dict[str, Any]:
    """load.py against a fresh badgr process; for redis, also check Redis saw every request.

    Each redis measurement has a key prefix of its own, so the latency hash of the target
    counts exactly the requests whose ``record`` reached Redis: fewer than the completed
    requests would mean the store fell back to local state (a Redis call over ``timeout``)
    and the measurement is not of Redis.
    """
    if backend == "memory":
        with badgr_process(upstream_url, {"backend": "memory"}) as (proc, url):
            return run_load(url, proc.pid, requests, seconds)
    prefix = f"{redis_state['key_prefix']}{uuid.uuid4().hex[:8]}:"
    state = {**redis_state, "key_prefix": prefix}
    port = int(redis_state["url"].rsplit(":", 1)[1].split("/")[0])
    try:
        with badgr_process(upstream_url, state) as (proc, url):
            result = run_load(url, proc.pid, requests, seconds)
        client = redis_client(port)
        try:
            samples = client.hget(f"{prefix}lat:up/{ALIAS}", "samples")
        finally:
            client.close()
    finally:
        delete_prefix(port, prefix)
    result["recorded_in_redis"] = int(samples or 0)
    result["completed"] = sum(result[phase]["completed"] for phase in PHASES)
    return result


def commandstats(client: Any) -> dict[str, dict[str, float]]:
    raw = client.info("commandstats")
    return {name.removeprefix("cmdstat_"): stats for name, stats in raw.items()}


def count_round_trips(upstream_url: str, port: int, requests: int) -> dict[str, Any]:
    """Redis commands per request of one redis-backed process, from INFO commandstats.

    Counted twice on the same process: ``requests`` sequential requests (c=1), then as many
    from 32 threads at once (c=32); each after an uncounted warm-up at the same concurrency,
    so that connections are open and the scripts loaded.
    """
    import httpx

    prefix = f"badgr-bench-count:{uuid.uuid4().hex}:"
    state = {"backend": "redis", "url": f"redis://{HOST}:{port}/0", "key_prefix": prefix}
    client = redis_client(port)
    body = {"model": ALIAS, "messages": [{"role": "user", "content": "Say hello."}]}
    counts: dict[str, Any] = {}
    try:
        with badgr_process(upstream_url, state) as (_, url), httpx.Client(
            timeout=10, limits=httpx.Limits(max_connections=64)
        ) as http:

            def send(n: int) -> int:
                ok = 0
                for _ in range(n):
                    response = http.post(url, json=body)
                    ok += (response.status_code == 200
                           and response.headers.get("x-badgr-attempts") == "1")
                return ok

            def send_concurrently(n: int, workers: int) -> int:
                shares = [n // workers + (i < n % workers) for i in range(workers)]
                with ThreadPoolExecutor(workers) as pool:
                    return sum(pool.map(send, shares))

            for concurrency in (1, 32):
                send_concurrently(max(100, 16 * concurrency), concurrency)  # warm-up
                before = commandstats(client)
                ok = send_concurrently(requests, concurrency)
                after = commandstats(client)
                counts[f"c{concurrency}"] = _per_request(before, after, requests, ok)
    finally:
        client.close()
        delete_prefix(port, prefix)
    return counts


def _per_request(before: dict[str, dict[str, float]], after: dict[str, dict[str, float]],
                 requests: int, ok: int) -> dict[str, Any]:
    delta = {
        name: {"calls": stats["calls"] - before.get(name, {}).get("calls", 0),
               "usec": stats["usec"] - before.get(name, {}).get("usec", 0)}
        for name, stats in after.items()
    }
    delta = {name: d for name, d in delta.items() if d["calls"]}
    sent = {n: d for n, d in delta.items() if n not in SCRIPT_INNER and n not in MEASURING}
    inner_calls = sum(d["calls"] for n, d in delta.items() if n in SCRIPT_INNER)
    handshakes = sum(d["calls"] for n, d in sent.items() if n in HANDSHAKE)
    total = sum(d["calls"] for d in sent.values())
    return {
        "requests": requests,
        "ok_single_attempt": ok,
        "delta": delta,
        "round_trips_per_request": total / requests,
        # the bound is about store calls; a connection's handshake is one-off (docs/redis.md)
        "store_round_trips_per_request": (total - handshakes) / requests,
        "handshake_commands": handshakes,
        "client_commands_per_request": {n: d["calls"] / requests for n, d in sorted(sent.items())},
        "script_inner_commands_per_request": inner_calls / requests,
        # a script's time includes the commands it runs, so only the client commands are summed
        "redis_usec_per_request": sum(d["usec"] for d in sent.values()) / requests,
    }


# -- report -----------------------------------------------------------------------------------


def _metric(backend: str, phase: str, key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: r["results"][backend][phase][key]


def summarize(rounds: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for b in BACKENDS:
        summary[b] = {
            "p50_ms_c1": median_of(rounds, _metric(b, "latency", "p50_ms")),
            "p99_ms_c1": median_of(rounds, _metric(b, "latency", "p99_ms")),
            "rps_c32": median_of(rounds, _metric(b, "throughput", "rps")),
            "p50_ms_c32": median_of(rounds, _metric(b, "throughput", "p50_ms")),
            "cpu_ms_per_req_c32": median_of(
                rounds, _metric(b, "throughput", "server_cpu_ms_per_req")
            ),
            "server_cpu_util_c32": median_of(rounds, _metric(b, "throughput", "server_cpu_util")),
            "errors": float(sum(r["results"][b][p]["errors"] for r in rounds for p in PHASES)),
        }
    summary["redis"]["degraded_rounds"] = float(sum(
        r["results"]["redis"]["recorded_in_redis"] < r["results"]["redis"]["completed"]
        for r in rounds
    ))
    summary["redis"]["added_p50_ms_c1"] = median_of(
        rounds,
        lambda r: r["results"]["redis"]["latency"]["p50_ms"]
        - r["results"]["memory"]["latency"]["p50_ms"],
    )
    summary["memory"]["added_p50_ms_c1"] = 0.0
    return summary


def ratio(summary: dict[str, dict[str, float]], key: str) -> float:
    base = summary["memory"][key]
    return summary["redis"][key] / base if base else float("nan")


def within_bound(count: dict[str, Any]) -> bool:
    return bool(count["store_round_trips_per_request"] <= BOUND_PLAIN_SUCCESS + 1e-9
                and count["ok_single_attempt"] == count["requests"])


def render(summary: dict[str, dict[str, float]], counted: dict[str, Any],
           meta: dict[str, Any]) -> str:
    m, r = summary["memory"], summary["redis"]
    c1, c32 = counted["c1"], counted["c32"]

    def commands(count: dict[str, Any]) -> str:
        return ", ".join(f"{n} {v:.3f}" for n, v in count["client_commands_per_request"].items())

    verdict = "PASS" if within_bound(c1) and within_bound(c32) else "FAIL"
    lines = [
        f"Health store cost: medians of {meta['rounds_completed']} interleaved round(s); "
        f"{meta['requests']} requests (c=32: {meta['requests'] * THROUGHPUT_FACTOR}) or "
        f"{meta['seconds']:g} s per measurement, whichever first; {meta['cpus']} CPUs; "
        f"uvicorn {meta['uvicorn_loop']}+{meta['uvicorn_http']}; Redis "
        f"{meta['redis_version']} ({meta['redis_where']}); redis-py {meta['redis_py']}"
        f"{' with' if meta['hiredis'] else ', no'} hiredis.",
        "",
        "| store | p50 c=1 (ms) | added p50 c=1 (ms) | p99 c=1 (ms) | req/s c=32 "
        "| CPU ms/req c=32 | Redis round trips/request c=1 / c=32 |",
        "|---|---:|---:|---:|---:|---:|---:|",
        f"| memory | {m['p50_ms_c1']:.3f} | 0 | {m['p99_ms_c1']:.3f} | {m['rps_c32']:,.0f} "
        f"| {m['cpu_ms_per_req_c32']:.3f} | none (no Redis) |",
        f"| redis | {r['p50_ms_c1']:.3f} | {r['added_p50_ms_c1']:+.3f} | {r['p99_ms_c1']:.3f} "
        f"| {r['rps_c32']:,.0f} | {r['cpu_ms_per_req_c32']:.3f} "
        f"| {c1['round_trips_per_request']:.3f} / {c32['round_trips_per_request']:.3f} |",
        f"| ratio redis/memory | {ratio(summary, 'p50_ms_c1'):.2f}x | | "
        f"{ratio(summary, 'p99_ms_c1'):.2f}x | {ratio(summary, 'rps_c32'):.2f}x "
        f"| {ratio(summary, 'cpu_ms_per_req_c32'):.2f}x | |",
        "",
        f"Round trips: INFO commandstats before/after {c1['requests']} requests at c=1, then "
        f"{c32['requests']} at c=32, through one redis-backed process after a warm-up at the "
        f"same concurrency, on {meta['count_where']}; answered 200 in 1 attempt: "
        f"{c1['ok_single_attempt']} and {c32['ok_single_attempt']}. Client commands per "
        f"request: {commands(c1)} (c=1), {commands(c32)} (c=32). Commands run inside the "
        f"scripts, which Redis counts too but are no round trips: "
        f"{c1['script_inner_commands_per_request']:.2f} per request. Redis server time "
        f"{c1['redis_usec_per_request']:.1f} us per request (c=1).",
        f"Bound (docs/redis.md): <= 1 snapshot + 1 record per attempt (+ 1 admit per half-open "
        f"target) = {BOUND_PLAIN_SUCCESS} round trips for a plain successful request, plus a "
        f"one-off handshake per new pooled connection. Store round trips per request "
        f"{c1['store_round_trips_per_request']:.3f} (c=1) / "
        f"{c32['store_round_trips_per_request']:.3f} (c=32), handshake commands in the window "
        f"{c1['handshake_commands']} / {c32['handshake_commands']} -> {verdict}.",
        f"Rounds in which the redis store fell back to local state (fewer latency samples in "
        f"Redis than completed requests): {r['degraded_rounds']:.0f}.",
        f"Errors: memory {m['errors']:.0f}, redis {r['errors']:.0f}. Server CPU util at c=32: "
        f"memory {m['server_cpu_util_c32']:.2f}, redis {r['server_cpu_util_c32']:.2f}. "
        f"Wall time {meta['wall_seconds']:.0f} s; load average before/after "
        f"{meta['loadavg_before']} / {meta['loadavg_after']}.",
    ]
    return "\n".join(lines)


# -- main -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, 500 requests / 2 s")
    parser.add_argument("--rounds", type=int, help="default 5 (1 with --quick)")
    parser.add_argument("--requests", type=int, help="per measurement; default 2000 (500)")
    parser.add_argument("--seconds", type=float, help="per measurement; default 4 (2)")
    parser.add_argument("--count", type=int, help="requests counted for round trips; 500 (200)")
    parser.add_argument("--serve", metavar="CONFIG_JSON", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve is not None:
        serve(args.serve, args.port)
        return 0
    rounds_wanted = args.rounds or (1 if args.quick else 5)
    requests = args.requests or (500 if args.quick else 2000)
    seconds = args.seconds or (2.0 if args.quick else 4.0)
    count = args.count or (200 if args.quick else 500)
    signal.signal(signal.SIGTERM, _on_sigterm)

    binary = shutil.which("redis-server")
    shared = redis_answers(SHARED_REDIS_PORT)
    if not shared and binary is None:
        print("No Redis answers at 127.0.0.1:6379 and no redis-server binary is installed: "
              "nothing to compare. Start one (redis-server --port 6379 --save '' "
              "--appendonly no) or install Redis, then run again.")
        return 0

    started = time.monotonic()
    meta: dict[str, Any] = {
        **environment(),
        "rounds_wanted": rounds_wanted,
        "requests": requests,
        "seconds": seconds,
        "count": count,
        "redis_py": importlib.metadata.version("redis"),
        "hiredis": importlib.util.find_spec("hiredis") is not None,
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "command": " ".join(["python", "benchmarks/health_store.py", *sys.argv[1:]]),
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
    }
    rounds: list[dict[str, Any]] = []
    privates: list[PrivateRedis] = []
    prefix = f"badgr-bench:{uuid.uuid4().hex}:"
    upstream_port = free_port()
    upstream_url = f"http://{HOST}:{upstream_port}"
    upstream = start([str(HERE / "upstream.py"), "--port", str(upstream_port)], upstream_port)
    redis_port = SHARED_REDIS_PORT
    try:
        if shared:
            meta["redis_where"] = "the machine's, 127.0.0.1:6379"
        else:
            assert binary is not None
            privates.append(PrivateRedis(binary))
            redis_port = privates[0].port
            meta["redis_where"] = f"a private redis-server on 127.0.0.1:{redis_port}"
        info = redis_client(redis_port)
        try:
            meta["redis_version"] = info.info("server")["redis_version"]
        finally:
            info.close()
        redis_state = {"backend": "redis", "url": f"redis://{HOST}:{redis_port}/0",
                       "key_prefix": prefix}
        for i in range(rounds_wanted):
            elapsed = time.monotonic() - started
            last = rounds[-1]["seconds"] if rounds else 0.0
            if rounds and elapsed + 1.2 * last > TOTAL_BUDGET_SECONDS:
                print(f"time budget reached; stopping after {len(rounds)} round(s)", flush=True)
                break
            order = list(BACKENDS) if i % 2 == 0 else list(reversed(BACKENDS))
            round_start = time.monotonic()
            results = {}
            for backend in order:
                results[backend] = measure(backend, upstream_url, redis_state, requests, seconds)
                rps = results[backend]["throughput"]["rps"]
                p50 = results[backend]["latency"]["p50_ms"]
                print(f"round {i + 1}/{rounds_wanted} {backend:<7} p50 c=1 {p50:6.3f} ms  "
                      f"{rps:8,.0f} req/s c=32", flush=True)
            rounds.append({"round": i + 1, "order": order,
                           "seconds": time.monotonic() - round_start, "results": results})

        if binary is not None and shared:
            privates.append(PrivateRedis(binary))  # nobody else's commands in its stats
            count_port = privates[-1].port
            meta["count_where"] = f"a private redis-server (127.0.0.1:{count_port})"
        else:
            count_port = redis_port
            meta["count_where"] = meta["redis_where"] + (
                "" if privates else " (shared: other clients' commands would be counted too)"
            )
        counted = count_round_trips(upstream_url, count_port, count)
        print(f"Redis round trips per request: {counted['c1']['round_trips_per_request']:.3f} "
              f"(c=1), {counted['c32']['round_trips_per_request']:.3f} (c=32)", flush=True)
    finally:
        stop(upstream)
        with contextlib.suppress(Exception):
            delete_prefix(redis_port, prefix)
        for private in privates:
            private.close()

    meta["rounds_completed"] = len(rounds)
    meta["wall_seconds"] = time.monotonic() - started
    meta["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    summary = summarize(rounds)
    table = render(summary, counted, meta)
    print()
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    ratios = {k: ratio(summary, k) for k in ("p50_ms_c1", "p99_ms_c1", "rps_c32",
                                              "cpu_ms_per_req_c32")}
    report = {"meta": meta, "summary": summary, "ratios_redis_to_memory": ratios,
              "round_trips": counted, "bound_plain_success": BOUND_PLAIN_SUCCESS,
              "rounds": rounds}
    (RESULTS_DIR / "health_store.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS_DIR / "health_store.md").write_text(table + "\n")
    print(f"\nwrote {RESULTS_DIR / 'health_store.json'} and {RESULTS_DIR / 'health_store.md'}")
    return 0 if within_bound(counted["c1"]) and within_bound(counted["c32"]) else 1


if __name__ == "__main__":
    sys.exit(main())
