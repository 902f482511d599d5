"""The badgr configuration every benchmark app serves, read from the environment.

``BENCH_UPSTREAM`` is the fake upstream's base URL (``benchmarks/upstream.py``);
``BENCH_PROFILE`` picks the scenario:

* ``plain``         alias ``bench-model`` -> one healthy target
* ``failover``      alias ``bench-model`` -> a target answering 503, then a healthy one; the
                    breaker never opens, so every request really fails over
* ``breaker_open``  the same two targets with the default breaker, opened for an hour by the
                    warm-up requests: the first target is skipped without a request
"""

from __future__ import annotations

import os
from typing import Any

MODEL = "bench-model"  # what load.py asks for


def bench_config(profile: str | None = None, upstream: str | None = None) -> dict[str, Any]:
    profile = profile or os.environ.get("BENCH_PROFILE", "plain")
    base = (upstream or os.environ.get("BENCH_UPSTREAM", "http://127.0.0.1:8001")).rstrip("/")
    providers: dict[str, Any] = {
        "up": {"kind": "openai", "base_url": f"{base}/v1", "api_key": "x"},
    }
    config: dict[str, Any] = {"providers": providers, "allow_anonymous": True}
    if profile == "plain":
        config["models"] = {MODEL: [f"up/{MODEL}"]}
        return config
    # upstream.py answers 503 under /fail503/ (see its docstring)
    providers["down"] = {"kind": "openai", "base_url": f"{base}/fail503/v1", "api_key": "x"}
    config["models"] = {MODEL: [f"down/{MODEL}", f"up/{MODEL}"]}
    if profile == "failover":
        config["breaker"] = {"consecutive_failures": 10**9, "min_requests": 10**9}
    elif profile == "breaker_open":
        config["breaker"] = {"consecutive_failures": 1, "open_for": 3600.0}
    else:
        raise ValueError(f"unknown BENCH_PROFILE {profile!r}")
    return config
