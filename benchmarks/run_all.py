"""badgr's overhead against the floors of a Python proxy and against LiteLLM: one command.

Starts the fast fake upstream (``upstream.py``), then per round measures, each in its own
server process and with ``load.py`` in another process (order rotated each round):

* ``direct``                the upstream itself (the baseline every "added" number subtracts)
* ``httpx``, ``aiohttp``    the minimal pass-through proxies of ``floors.py`` (uvicorn)
* ``badgr-asgi``            ``BadgrApp`` under uvicorn (``apps/badgr_asgi.py``)
* ``badgr-django-asgi``     django_badgr in a minimal Django project under uvicorn
* ``badgr-flask-gunicorn``  flask_badgr under gunicorn (1 worker, gthread, 32 threads)
* ``badgr-wsgi-gunicorn``   ``BadgrWSGIApp`` under gunicorn (the same worker settings)
* ``litellm``               LiteLLM's proxy (1 worker, logging and telemetry off) when its
                            ``litellm`` command is found (``--litellm``, ``$BADGR_BENCH_LITELLM``
                            or ``PATH``); skipped with a note otherwise

and badgr's failover: the upstream's 503 answer measured directly, then ``badgr-asgi`` with
a first target answering 503 (every request fails over; the breaker never opens) and with
that target's breaker open (it is skipped without a request). After the rounds, the memory
of ``aiohttp`` and ``badgr-asgi`` holding 1,000 concurrent slow streams
(``streams_memory.py``).

Prints medians over rounds with ratios to the aiohttp floor and to LiteLLM, checks the
targets of docs/performance.md, and writes ``benchmarks/results/run_all.json`` and
``benchmarks/results/run_all.md``.

Run: ``python benchmarks/run_all.py [--quick] [--litellm PATH]`` (< 10 minutes; ``--quick``
about 2).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
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
    stop,
)

HERE = Path(__file__).resolve().parent
APPS = HERE / "apps"
DIRECT = "direct"
FLOOR = "aiohttp"
LITELLM = "litellm"
BADGR = "badgr-asgi"
PROXIES = ("httpx", "aiohttp", BADGR, "badgr-django-asgi", "badgr-flask-gunicorn",
           "badgr-wsgi-gunicorn", LITELLM)
SCENARIOS = ("direct-503", "badgr-failover", "badgr-breaker-open")
MEMORY_TARGETS = ("aiohttp", BADGR)
THROUGHPUT_FACTOR = 4
TOTAL_BUDGET_SECONDS = 450.0  # no new round after this; memory then takes < 1 minute
GUNICORN = ["-m", "gunicorn", "--workers", "1", "--worker-class", "gthread", "--threads", "32",
            "--backlog", "1024", "--log-level", "warning", "--chdir", str(APPS)]
UVICORN = ["-m", "uvicorn", "--app-dir", str(APPS), "--log-level", "warning",
           "--no-access-log", "--backlog", "1024"]


@dataclass
class Server:
    """How to start one target."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    startup_timeout: float = 20.0


def server_for(name: str, upstream: str, port: int, litellm: str | None,
               profile: str = "plain", pool: int | None = None) -> Server:
    py = sys.executable
    env = {"BENCH_UPSTREAM": upstream, "BENCH_PROFILE": profile}
    bind = ["--host", HOST, "--port", str(port)]
    if name in ("httpx", "aiohttp", "httpx-aiohttp"):
        argv = [py, str(HERE / "floors.py"), "--client", name, "--upstream", upstream,
                "--port", str(port)]
        return Server(argv + (["--pool", str(pool)] if pool is not None else []), env)
    if name == BADGR:
        return Server([py, str(APPS / "badgr_asgi.py"), "--port", str(port)], env)
    if name == "badgr-django-asgi":
        return Server([py, *UVICORN, "--lifespan", "off", *bind, "django_asgi:application"],
                      env)
    if name in ("badgr-flask-gunicorn", "badgr-wsgi-gunicorn"):
        app = "flask_app:app" if "flask" in name else "wsgi_app:app"
        return Server([py, *GUNICORN, "--bind", f"{HOST}:{port}", app], env)
    if name == LITELLM:
        assert litellm is not None
        config = Path(tempfile.gettempdir()) / f"badgr-bench-litellm-{os.getpid()}.yaml"
        config.write_text(LITELLM_CONFIG.format(upstream=upstream))
        env.update(LITELLM_ENV)
        return Server([litellm, "--config", str(config), *bind, "--num_workers", "1"], env,
                      startup_timeout=120.0)
    raise ValueError(name)


LITELLM_CONFIG = """\
model_list:
  - model_name: bench-model
    litellm_params:
      model: openai/bench-model
      api_base: {upstream}/v1
      api_key: x
litellm_settings:
  telemetry: false
  turn_off_message_logging: true
  set_verbose: false
  drop_params: true
general_settings:
  disable_spend_logs: true
  # no master key: like badgr's allow_anonymous here, so neither side pays for auth
  dangerously_permit_weak_or_unset_master_key: true
"""
LITELLM_ENV = {
    "LITELLM_LOG": "ERROR",
    "LITELLM_TELEMETRY": "False",
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no download of the cost map at start-up
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
}


def find_litellm(given: str | None) -> str | None:
    candidate = given or os.environ.get("BADGR_BENCH_LITELLM") or shutil.which("litellm")
    return candidate if candidate and os.access(candidate, os.X_OK) else None


def children(pid: int) -> list[int]:
    """Every descendant of ``pid`` (from /proc/<pid>/task/*/children)."""
    found: list[int] = []
    todo = [pid]
    while todo and len(found) < 64:
        current = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{current}/task")
        except OSError:
            continue
        for task in tasks:
            try:
                with open(f"/proc/{current}/task/{task}/children") as f:
                    kids = [int(x) for x in f.read().split()]
            except OSError:
                continue
            found += kids
            todo += kids
    return found


def wait_ready(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not ready after {timeout:.0f}s: {proc.args!r}")


def launch(server: Server, port: int) -> tuple[subprocess.Popen[bytes], list[int]]:
    """Start a server, wait until it listens; return it and the pids to charge CPU to."""
    proc = subprocess.Popen(server.argv, env={**os.environ, **server.env},
                            stdout=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_ready(port, proc, server.startup_timeout)
        time.sleep(0.3)  # gunicorn's worker (and LiteLLM's) may still be starting
        return proc, [proc.pid, *children(proc.pid)]
    except BaseException:
        stop_tree(proc)
        raise


def stop_tree(proc: subprocess.Popen[bytes]) -> None:
    """Stop a server and its whole session (gunicorn workers, LiteLLM's children)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


def run_load(url: str, pids: list[int], upstream_pid: int, requests: int, seconds: float,
             phases: tuple[str, ...] = (), expect: int = 200) -> dict[str, Any]:
    cmd = [sys.executable, str(HERE / "load.py"), "--url", url, "--requests", str(requests),
           "--throughput-requests", str(requests * THROUGHPUT_FACTOR), "--seconds",
           str(seconds), "--upstream-pid", str(upstream_pid), "--expect-status", str(expect)]
    for pid in pids:
        cmd += ["--pid", str(pid)]
    for phase in phases:
        cmd += ["--phase", phase]
    limit = 3 * (seconds + 12.0) + 10.0
    done = subprocess.run(cmd, capture_output=True, timeout=limit, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"load.py failed ({done.returncode}): {done.stderr.decode()[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure(name: str, upstream: str, upstream_pid: int, args: argparse.Namespace,
            litellm: str | None) -> dict[str, Any]:
    if name == DIRECT:
        return run_load(upstream + PATH, [], upstream_pid, args.requests, args.seconds)
    if name == "direct-503":
        return run_load(upstream + "/fail503" + PATH, [], upstream_pid, args.requests,
                        args.seconds, ("latency",), expect=503)
    profile, target, phases = "plain", name, ()
    if name in ("badgr-failover", "badgr-breaker-open"):
        profile = "failover" if name == "badgr-failover" else "breaker_open"
        target, phases = BADGR, ("latency",)
    port = free_port()
    proc, pids = launch(server_for(target, upstream, port, litellm, profile), port)
    try:
        return run_load(f"http://{HOST}:{port}{PATH}", pids, upstream_pid, args.requests,
                        args.seconds, phases)
    finally:
        stop_tree(proc)


def measure_memory(name: str, slow_upstream: str, streams: int) -> dict[str, Any]:
    port = free_port()
    proc, pids = launch(server_for(name, slow_upstream, port, None, pool=0), port)
    try:
        cmd = [sys.executable, str(HERE / "streams_memory.py"), "--url",
               f"http://{HOST}:{port}{PATH}", "--streams", str(streams), "--timeout", "40"]
        for pid in pids:
            cmd += ["--pid", str(pid)]
        done = subprocess.run(cmd, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"streams_memory.py failed: {done.stderr.decode()[-2000:]}")
        result: dict[str, Any] = json.loads(done.stdout)
        return result
    finally:
        stop_tree(proc)


# -- summary ------------------------------------------------------------------------------


def _get(r: dict[str, Any], target: str, phase: str, key: str) -> float | None:
    entry = r["results"].get(target)
    return None if entry is None else entry[phase][key]


def _diff(target: str, phase: str, key: str, base: str = DIRECT
          ) -> Callable[[dict[str, Any]], float | None]:
    def fn(r: dict[str, Any]) -> float | None:
        a, b = _get(r, target, phase, key), _get(r, base, phase, key)
        return None if a is None or b is None else a - b
    return fn


def _raw(target: str, phase: str, key: str) -> Callable[[dict[str, Any]], float | None]:
    return lambda r: _get(r, target, phase, key)


def summarize(rounds: list[dict[str, Any]], targets: list[str]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for t in targets:
        summary[t] = {
            "added_p50_ms_c1": median_of(rounds, _diff(t, "latency", "p50_ms")),
            "added_p99_ms_c1": median_of(rounds, _diff(t, "latency", "p99_ms")),
            "rps_c32": median_of(rounds, _raw(t, "throughput", "rps")),
            "cpu_ms_per_req_c32": median_of(rounds, _raw(t, "throughput",
                                                         "server_cpu_ms_per_req")),
            "server_cpu_util_c32": median_of(rounds, _raw(t, "throughput", "server_cpu_util")),
            "added_ttfb_ms": median_of(rounds, _diff(t, "stream", "ttfb_p50_ms")),
            "added_stream_total_ms": median_of(rounds, _diff(t, "stream", "p50_ms")),
            "cpu_ms_per_stream": median_of(rounds, _raw(t, "stream", "server_cpu_ms_per_req")),
            "p50_ms_c1": median_of(rounds, _raw(t, "latency", "p50_ms")),
            "p99_ms_c1": median_of(rounds, _raw(t, "latency", "p99_ms")),
            "ttfb_p50_ms": median_of(rounds, _raw(t, "stream", "ttfb_p50_ms")),
            "errors": float(sum(
                r["results"][t][p]["errors"] for r in rounds if t in r["results"]
                for p in r["results"][t]
            )),
        }
    return summary


def failover_summary(rounds: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "plain_p50_ms": median_of(rounds, _raw(BADGR, "latency", "p50_ms")),
        "failover_p50_ms": median_of(rounds, _raw("badgr-failover", "latency", "p50_ms")),
        "breaker_open_p50_ms": median_of(rounds, _raw("badgr-breaker-open", "latency",
                                                      "p50_ms")),
        "failed_attempt_rtt_ms": median_of(rounds, _raw("direct-503", "latency", "p50_ms")),
        "failover_added_ms": median_of(rounds, _diff("badgr-failover", "latency", "p50_ms",
                                                     BADGR)),
        "breaker_open_added_ms": median_of(rounds, _diff("badgr-breaker-open", "latency",
                                                         "p50_ms", BADGR)),
        "failover_added_over_rtt_ms": median_of(rounds, lambda r: (
            None if "badgr-failover" not in r["results"] else
            r["results"]["badgr-failover"]["latency"]["p50_ms"]
            - r["results"][BADGR]["latency"]["p50_ms"]
            - r["results"]["direct-503"]["latency"]["p50_ms"])),
        "plain_p50_spread_ms": _spread(rounds, _raw(BADGR, "latency", "p50_ms")),
        "errors": float(sum(r["results"][s]["latency"]["errors"] for r in rounds
                            for s in ("badgr-failover", "badgr-breaker-open")
                            if s in r["results"])),
    }


def _spread(rounds: list[dict[str, Any]], fn: Callable[[dict[str, Any]], float | None]) -> float:
    values = [v for r in rounds if (v := fn(r)) is not None]
    return max(values) - min(values) if len(values) > 1 else float("nan")


def _ratio(a: float, b: float) -> float:
    return a / b if b and b == b and a == a else float("nan")


def checks(s: dict[str, dict[str, float]], f: dict[str, float]) -> list[tuple[str, str, bool]]:
    """The targets of the issue, each as (target, measured, met?)."""
    b, fl = s[BADGR], s[FLOOR]
    out: list[tuple[str, str, bool]] = []
    r = _ratio(b["rps_c32"], fl["rps_c32"])
    out.append(("req/s c=32 >= 0.7x aiohttp floor", f"{r:.2f}x", r >= 0.7))
    r = _ratio(fl["cpu_ms_per_req_c32"], b["cpu_ms_per_req_c32"])
    out.append(("(same, from CPU ms/req: floor CPU / badgr CPU) >= 0.7", f"{r:.2f}x", r >= 0.7))
    if LITELLM in s:
        r = _ratio(b["rps_c32"], s[LITELLM]["rps_c32"])
        out.append(("req/s c=32 >= 10x LiteLLM", f"{r:.1f}x", r >= 10))
    r = _ratio(b["added_p50_ms_c1"], fl["added_p50_ms_c1"])
    out.append(("added p50 c=1 <= 1.5x aiohttp floor", f"{r:.2f}x", r <= 1.5))
    r = _ratio(b["added_ttfb_ms"], fl["added_ttfb_ms"])
    out.append(("added stream TTFB <= 2x aiohttp floor", f"{r:.2f}x", r <= 2.0))
    r = _ratio(b["cpu_ms_per_stream"], fl["cpu_ms_per_stream"])
    out.append(("CPU per stream <= 1.5x aiohttp floor", f"{r:.2f}x", r <= 1.5))
    v = f["failover_added_over_rtt_ms"]
    out.append(("failover adds <= 2 ms over the failed attempt's round trip",
                f"{v:+.3f} ms", v <= 2.0))
    v, spread = f["breaker_open_added_ms"], f["plain_p50_spread_ms"]
    noise = max(0.05, spread if spread == spread else 0.0)
    out.append(("breaker open: same as plain within noise",
                f"{v:+.3f} ms (noise: plain p50 spread {spread:.3f} ms)", abs(v) <= noise))
    return out


def render(s: dict[str, dict[str, float]], f: dict[str, float], memory: dict[str, Any],
           meta: dict[str, Any]) -> str:
    fl = s[FLOOR]
    lit = s.get(LITELLM)

    def cell(t: str, key: str, fmt: str, vs_lit: bool = False) -> str:
        value = s[t][key]
        if value != value:
            return "n/a"
        text = format(value, fmt)
        if t not in (DIRECT, FLOOR):
            text += f" ({_ratio(value, fl[key]):.2f}x)"
            if vs_lit and lit is not None and t != LITELLM:
                text += f" ({_ratio(value, lit[key]):.0f}x LiteLLM)"
        return text

    lines = [
        f"badgr vs the floors of a Python proxy: medians of {meta['rounds_completed']} "
        f"interleaved round(s), {meta['requests']} requests (c=32: "
        f"{meta['requests'] * THROUGHPUT_FACTOR}) or {meta['seconds']:g} s per phase; "
        f"{meta['cpus']} CPUs; Python {meta['python']}; servers: uvicorn "
        f"{meta['uvicorn_loop']}+{meta['uvicorn_http']} / gunicorn gthread, 1 process each.",
        "Ratios in parentheses: x the aiohttp floor (and x LiteLLM for req/s). "
        "\"added\" = minus the upstream measured directly in the same round.",
        "",
        "| target | added p50 c=1 (ms) | added p99 c=1 (ms) | req/s c=32 | CPU ms/req c=32 "
        "| added stream TTFB (ms) | added stream total (ms) | CPU ms/stream | errors |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    d = s[DIRECT]
    lines.append(
        f"| direct to upstream | 0 (p50 {d['p50_ms_c1']:.3f}) | 0 (p99 {d['p99_ms_c1']:.3f}) "
        f"| {d['rps_c32']:,.0f} | upstream only | 0 (TTFB {d['ttfb_p50_ms']:.3f}) | 0 | n/a "
        f"| {d['errors']:.0f} |"
    )
    for t in s:
        if t == DIRECT:
            continue
        lines.append(
            f"| {t} | {cell(t, 'added_p50_ms_c1', '.3f')} | {cell(t, 'added_p99_ms_c1', '.3f')} "
            f"| {cell(t, 'rps_c32', ',.0f', vs_lit=True)} "
            f"| {cell(t, 'cpu_ms_per_req_c32', '.3f')} | {cell(t, 'added_ttfb_ms', '.3f')} "
            f"| {cell(t, 'added_stream_total_ms', '.3f')} "
            f"| {cell(t, 'cpu_ms_per_stream', '.3f')} | {s[t]['errors']:.0f} |"
        )
    if meta.get("litellm_note"):
        lines += ["", meta["litellm_note"]]
    lines += [
        "",
        "Failover (badgr-asgi, c=1, p50): plain "
        f"{f['plain_p50_ms']:.3f} ms; first target 503 then a healthy second "
        f"{f['failover_p50_ms']:.3f} ms (+{f['failover_added_ms']:.3f} ms, of which the "
        f"503's own round trip, measured directly, is {f['failed_attempt_rtt_ms']:.3f} ms: "
        f"failover itself adds {f['failover_added_over_rtt_ms']:+.3f} ms); first target's "
        f"breaker open {f['breaker_open_p50_ms']:.3f} ms ({f['breaker_open_added_ms']:+.3f} ms "
        f"vs plain; plain's p50 varied by {f['plain_p50_spread_ms']:.3f} ms between rounds). "
        f"Errors: {f['errors']:.0f}.",
    ]
    if memory:
        lines += ["", "| memory, 1,000 concurrent streams | RSS before (MB) | peak (MB) "
                  "| MB per 1,000 streams | all open after (s) | errors |",
                  "|---|---:|---:|---:|---:|---:|"]
        for t, m in memory.items():
            if "error" in m:
                lines.append(f"| {t} | failed: {m['error'][:80]} | | | | |")
                continue
            opened = m["all_open_after_s"]
            lines.append(
                f"| {t} ({m['streams']} streams) | {m['rss_before_mb']:.1f} "
                f"| {m['rss_peak_mb']:.1f} | {m['mb_per_1000_streams']:.1f} "
                f"| {'not all' if opened is None else format(opened, '.2f')} | {m['errors']} |"
            )
    lines += ["", "| target (badgr-asgi) | measured | met |", "|---|---|---|"]
    for name, value, ok in meta["checks"]:
        lines.append(f"| {name} | {value} | {'yes' if ok else 'NO'} |")
    lines += ["", f"Wall time {meta['wall_seconds']:.0f} s; load average before/after "
              f"{meta['loadavg_before']} / {meta['loadavg_after']}; {meta['date']}."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 round, short phases, 200 streams")
    parser.add_argument("--rounds", type=int, help="default 5 (1 with --quick)")
    parser.add_argument("--requests", type=int, help="per phase; default 1500 (400)")
    parser.add_argument("--seconds", type=float, help="per phase; default 3 (1.5)")
    parser.add_argument("--streams", type=int, help="memory phase; default 1000 (200)")
    parser.add_argument("--litellm", help="path of LiteLLM's `litellm` command")
    parser.add_argument("--only", action="append", help="limit to these proxies (repeatable)")
    args = parser.parse_args()
    args.rounds = args.rounds or (1 if args.quick else 5)
    args.requests = args.requests or (400 if args.quick else 1500)
    args.seconds = args.seconds or (1.5 if args.quick else 3.0)
    args.streams = args.streams or (200 if args.quick else 1000)
    signal.signal(signal.SIGTERM, _on_sigterm)

    litellm = find_litellm(args.litellm)
    proxies = [p for p in PROXIES if (p != LITELLM or litellm) and (
        not args.only or p in args.only or p in (FLOOR, BADGR))]
    started = time.monotonic()
    meta: dict[str, Any] = {
        **environment(), "rounds_wanted": args.rounds, "requests": args.requests,
        "seconds": args.seconds, "proxies": proxies, "litellm": litellm,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "loadavg_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "litellm_note": "" if litellm else (
            "LiteLLM: not found (install `litellm[proxy]`, e.g. in its own venv, and pass "
            "--litellm PATH/bin/litellm), so its row and the x LiteLLM ratios are missing."),
    }
    rounds: list[dict[str, Any]] = []
    memory: dict[str, Any] = {}
    up_port, slow_port = free_port(), free_port()
    upstream_url, slow_url = f"http://{HOST}:{up_port}", f"http://{HOST}:{slow_port}"
    py = sys.executable
    upstream, _ = launch(Server([py, str(HERE / "upstream.py"), "--port", str(up_port)]),
                         up_port)
    try:
        for i in range(args.rounds):
            elapsed = time.monotonic() - started
            last = rounds[-1]["seconds"] if rounds else 0.0
            if rounds and elapsed + 1.1 * last > TOTAL_BUDGET_SECONDS:
                print(f"time budget reached; stopping after {len(rounds)} round(s)", flush=True)
                break
            shift = i % len(proxies)
            order = [DIRECT, *proxies[shift:], *proxies[:shift], *SCENARIOS]
            round_start = time.monotonic()
            results: dict[str, Any] = {}
            for target in order:
                try:
                    results[target] = measure(target, upstream_url, upstream.pid, args, litellm)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    print(f"round {i + 1} {target}: FAILED {exc}", flush=True)
                    if target in (DIRECT, FLOOR, BADGR):
                        raise
                    continue
                phase = results[target].get("throughput") or results[target]["latency"]
                print(f"round {i + 1}/{args.rounds} {target:<22} p50 {phase['p50_ms']:7.3f} ms"
                      f" {phase['rps']:8,.0f} req/s", flush=True)
            rounds.append({"round": i + 1, "order": order,
                           "seconds": time.monotonic() - round_start, "results": results})
        slow = launch(Server([py, str(HERE / "upstream.py"), "--port", str(slow_port),
                              "--chunk-delay", "0.05"]), slow_port)[0]
        try:
            for target in MEMORY_TARGETS:
                try:
                    memory[target] = measure_memory(target, slow_url, args.streams)
                except (RuntimeError, subprocess.TimeoutExpired) as exc:
                    memory[target] = {"error": str(exc)}
                print(f"memory {target}: {memory[target]}", flush=True)
        finally:
            stop_tree(slow)
    finally:
        stop(upstream)

    present = [t for t in [DIRECT, *PROXIES] if any(t in r["results"] for r in rounds)]
    summary = summarize(rounds, present)
    failover = failover_summary(rounds)
    meta["rounds_completed"] = len(rounds)
    meta["wall_seconds"] = time.monotonic() - started
    meta["loadavg_after"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    meta["checks"] = checks(summary, failover)
    table = render(summary, failover, memory, meta)
    print()
    print(table)
    RESULTS_DIR.mkdir(exist_ok=True)
    report = {"meta": meta, "summary": summary, "failover": failover, "memory": memory,
              "rounds": rounds}
    (RESULTS_DIR / "run_all.json").write_text(json.dumps(report, indent=2) + "\n")
    (RESULTS_DIR / "run_all.md").write_text(table + "\n")
    print(f"\nwrote {RESULTS_DIR / 'run_all.json'} and {RESULTS_DIR / 'run_all.md'}")


if __name__ == "__main__":
    main()
