"""The status snapshot: every provider and target's health as JSON (``GET {prefix}/status``).

Pure: it turns a health-store snapshot (taken with ``stats=True``), the official statuses and
the time into the document; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..health.store import KeyHealth

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["RECENT_MINUTES", "build_status", "health_entry", "status_keys"]

RECENT_MINUTES = 15  # the success rate is over this many minutes of results
DEGRADED_BELOW = 0.9  # a recent success rate below this makes a key "degraded"


def status_keys(config: Config) -> list[str]:
    """Every key the status page reports: providers, then each alias target once."""
    keys = dict.fromkeys(config.providers)
    for alias in config.models.values():
        for t in alias.targets:
            keys[f"{t.provider}/{t.model}"] = None
    return list(keys)


def build_status(
    config: Config,
    snapshot: Mapping[str, KeyHealth],
    now: float,
    official: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    polling: bool = False,
) -> dict[str, Any]:
    """The whole status document."""
    official = official or {}
    configured: dict[str, list[str]] = {name: [] for name in config.providers}
    for key in status_keys(config):
        provider, sep, model = key.partition("/")
        if sep and provider in configured:
            configured[provider].append(model)
    for key in snapshot:  # targets outside the aliases that the store knows about
        provider, sep, model = key.partition("/")
        if sep and provider in configured and model not in configured[provider]:
            configured[provider].append(model)
    providers: dict[str, Any] = {}
    for name, provider in config.providers.items():
        entry = {"kind": provider.kind, **health_entry(snapshot.get(name), now)}
        entry["targets"] = {
            model: health_entry(snapshot.get(f"{name}/{model}"), now)
            for model in configured[name]
        }
        # the provider's glance: its own state, or the worst of its targets when all are out
        targets = list(entry["targets"].values())
        if entry["status"] == "up" and targets and all(t["status"] == "down" for t in targets):
            entry["status"] = "down"
        elif entry["status"] == "up" and any(t["status"] != "up" for t in targets):
            entry["status"] = "degraded"
        entry["official"] = dict(official[name]) if name in official else None
        providers[name] = entry
    return {
        "object": "badgr.status",
        "generated_at": round(now, 3),
        "official_polling": polling,
        "providers": providers,
    }


def health_entry(health: KeyHealth | None, now: float) -> dict[str, Any]:
    """One key's health as JSON.

    ``state`` is available, cooling_down, quota_low, open or half_open (what routing does with
    the key); ``status`` is the glance: up, degraded (probing, low on quota, or a recent
    success rate below 90 %) or down (cooling down, or its breaker open).
    """
    health = health or KeyHealth()
    state, reason, retry_in = "available", None, None
    cooling = health.cooldown_until is not None and health.cooldown_until > now
    if cooling:
        assert health.cooldown_until is not None
        # a target low on quota is still served, only last: degraded, not down
        low = health.cooldown_kind == "quota_low"
        state, reason = ("quota_low" if low else "cooling_down"), health.cooldown_kind
        retry_in = round(health.cooldown_until - now, 3)
    elif health.breaker != "closed":
        state, reason = health.breaker, "circuit"
        if health.open_until is not None and health.open_until > now:
            retry_in = round(health.open_until - now, 3)
    latency = None
    if health.latency is not None and health.latency.samples:
        lat = health.latency
        latency = {"ttfb": round(lat.ttfb, 4), "ttfb_p50": round(lat.ttfb, 4),
                   "ttfb_p95": round(lat.ttfb_p95, 4), "total": round(lat.total, 4),
                   "samples": lat.samples, "estimate": True}
    recent = health.history[-RECENT_MINUTES:]
    ok = sum(s for s, _ in recent)
    failed = sum(f for _, f in recent)
    rate = round(ok / (ok + failed), 4) if ok + failed else None
    if state in ("cooling_down", "open"):
        status = "down"
    elif state in ("half_open", "quota_low") or (rate is not None and rate < DEGRADED_BELOW):
        status = "degraded"
    else:
        status = "up"
    error = health.last_error
    return {
        "state": state,
        "status": status,
        "reason": reason,
        "retry_in": retry_in,
        "breaker": health.breaker,
        "cooldown_until": round(health.cooldown_until, 3) if cooling else None,
        "success_rate": rate,
        "recent": {"minutes": RECENT_MINUTES, "ok": ok, "failed": failed},
        "served": health.served,
        "failed": health.failed,
        "latency": latency,
        "last_error": None if error is None else {
            "kind": error.kind, "status": error.status, "at": round(error.at, 3),
        },
        "history": [list(minute) for minute in health.history],
    }
