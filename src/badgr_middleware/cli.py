"""The ``badgr`` command: ``serve``, ``check``, ``status`` and ``demo``."""

from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any, TextIO

from .config import Config, ConfigError, ConfigProblem, load_config

__all__ = ["fetch_status", "main", "print_problems", "print_routes", "print_status"]


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    """Entry point of the ``badgr`` console script; returns the exit code."""
    out = out or sys.stdout
    parser = argparse.ArgumentParser(prog="badgr", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="serve the endpoint with uvicorn")
    serve.add_argument("--config", help="badgr.toml (default: $BADGR_CONFIG, ./badgr.toml, env)")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)

    check = commands.add_parser("check", help="validate the config and print the routes")
    check.add_argument("--config", help="badgr.toml (default: $BADGR_CONFIG, ./badgr.toml, env)")

    status = commands.add_parser("status", help="print the health of a running endpoint")
    status.add_argument("--url", default="http://127.0.0.1:8000/v1",
                        help="the endpoint's base URL (default %(default)s)")
    status.add_argument("--key", help="a client or status (operator) key "
                        "(default: $BADGR_CLIENT_KEY)")

    commands.add_parser("demo", help="watch failover against simulated providers (no keys)")

    args = parser.parse_args(argv)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(out)
    if args.command == "status":
        return _status(args.url, args.key, out)
    try:
        config = load_config(args.config)
    except ConfigError as error:
        print_problems(error.problems, out)
        print_problems(getattr(error, "warnings", ()), out)
        return 1
    if args.command == "check":
        print_problems(config.warnings, out)
        print_routes(config, out)
        return 0
    return _serve(config, args.host, args.port, out)


def print_problems(problems: Sequence[ConfigProblem], out: TextIO) -> None:
    """Print each configuration problem on its own line, prefixed by its severity."""
    for problem in problems:
        print(f"{problem.severity}: {problem}", file=out)


def print_routes(config: Config, out: TextIO, *, authenticate: str | None = None) -> None:
    """Print what ``badgr check`` reports: prefix, providers (keys masked), aliases, auth.

    ``authenticate`` names an inbound check a framework adapter adds in front of the
    config's rules (e.g. ``"Flask @badgr.authenticate"``).
    """
    print(f"Endpoint prefix: {config.prefix}", file=out)
    print("Providers:", file=out)
    for provider in config.providers.values():
        key = str(provider.api_key) if provider.api_key else "(no key)"
        print(f"  {provider.name:<12} {provider.kind:<9} {provider.base_url}  key {key}", file=out)
    print("Models:", file=out)
    if not config.models:
        print("  (no aliases)", file=out)
    for alias in config.models.values():
        print(f"  {alias.name} -> {' > '.join(t.name for t in alias.targets)}", file=out)
    if config.default_provider:
        print(f"  any other model -> {config.default_provider}/<model>", file=out)
    if config.client_keys:
        auth = f"{len(config.client_keys)} client key(s)"
    elif config.authenticate is not None:
        auth = "authenticate callable"
    else:
        auth = "anonymous" if config.allow_anonymous else "closed (every request gets 401)"
    if authenticate:
        closed = not (config.client_keys or config.authenticate or config.allow_anonymous)
        auth = authenticate if closed else f"{authenticate}, then {auth}"
    print(f"Inbound auth: {auth}", file=out)
    print("Config OK.", file=out)


def _serve(config: Config, host: str, port: int, out: TextIO) -> int:
    try:
        import uvicorn
    except ImportError:
        print("badgr serve needs uvicorn: pip install 'badgr-middleware[server]'", file=out)
        return 2
    from .http.asgi import BadgrApp

    uvicorn.run(BadgrApp(config), host=host, port=port, log_level="info")
    return 0


def _status(url: str, key: str | None, out: TextIO) -> int:
    try:
        snapshot = fetch_status(url, key)
    except (urllib.error.URLError, OSError, ValueError) as error:
        print(f"Could not read {url}/status: {error}", file=out)
        return 1
    print_status(snapshot, out)
    return 0


def fetch_status(url: str, key: str | None = None, *, timeout: float = 10.0) -> dict[str, Any]:
    """``GET <url>/status`` of a running endpoint (``key``: a client key, default
    ``$BADGR_CLIENT_KEY``); raises ``URLError``/``OSError``/``ValueError`` on failure."""
    import os

    key = key or os.environ.get("BADGR_CLIENT_KEY")
    request = urllib.request.Request(url.rstrip("/") + "/status",
                                     headers={"Accept": "application/json"})
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        snapshot: dict[str, Any] = json.load(response)
    return snapshot


def print_status(snapshot: dict[str, Any], out: TextIO) -> None:
    """Print a status snapshot (``Engine.status()`` or ``GET /status``) as a table: one row
    per provider, its targets indented under it."""
    now = snapshot.get("generated_at") or time.time()
    print(_STATUS_ROW.format("provider / model", "status", "state", "reason", "retry in",
                             "success", "ttfb p50/p95", "served", "last error", "official"
                             ).rstrip(), file=out)
    for name, info in snapshot.get("providers", {}).items():
        print(_status_row(name, info, now, info.get("official") or {}), file=out)
        for model, target in info.get("targets", {}).items():
            print(_status_row(f"  {model}", target, now, None), file=out)


_STATUS_ROW = "{:<32} {:<9} {:<13} {:<16} {:<9} {:<8} {:<14} {:<7} {:<26} {}"


def _status_row(name: str, info: dict[str, Any], now: float,
                official: dict[str, Any] | None) -> str:
    retry = f"{info['retry_in']:.0f}s" if info.get("retry_in") else "-"
    rate = info.get("success_rate")
    success = "-" if rate is None else f"{rate * 100:.1f}%"
    latency = info.get("latency") or {}
    ttfb = "-"
    if latency.get("ttfb") is not None:
        p95 = latency.get("ttfb_p95", latency["ttfb"])
        ttfb = f"{latency['ttfb'] * 1000:.0f}/{p95 * 1000:.0f} ms"
    error = info.get("last_error")
    last = "-"
    if error:
        last = error["kind"] + (f" {error['status']}" if error.get("status") else "")
        last += f" {_ago(now - error['at'])}"
    mark = "" if official is None else "-"  # official status: per provider only
    if official:
        mark = official.get("indicator", "?")
        if official.get("description"):
            mark += f": {official['description']}"
    return _STATUS_ROW.format(
        name, info.get("status", "?"), info.get("state", "?"), info.get("reason") or "-", retry,
        success, ttfb, info.get("served", 0), last, mark,
    ).rstrip()


def _ago(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f}s ago"
    if seconds < 5400:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.0f}h ago"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
