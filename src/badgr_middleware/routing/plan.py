"""Resolve a request's model fields into an ordered list of targets.

Resolution of one model name, in order: a configured alias; an OpenRouter model id found in
the bypass catalog, when an OpenRouter provider has ``bypass`` on and the id's native provider
is configured (targets: OpenRouter with the id, then the native provider with its own model
id); ``<provider>/<model>`` where ``<provider>`` is a configured provider; the configured
default provider; else a 404 error.

OpenRouter's request extensions are honoured here: ``models`` (fallbacks tried after
``model``), ``route: "fallback"`` and ``provider`` (``order``, ``only``, ``ignore``,
``allow_fallbacks``, and ``sort: "latency"``, which orders targets by observed speed).
Names in ``provider`` lists are matched, case-insensitively, against the
configured provider names; entries that name no configured provider are OpenRouter's own
upstream names and are forwarded, with the remaining ``provider`` keys, to OpenRouter targets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..errors import ApiError
from ..pricing import Price, lookup_price

if TYPE_CHECKING:
    from ..config import Config, ResumePolicy, TargetConfig

__all__ = ["Plan", "RoutedRequest", "Target", "resolve_plan"]

_LOCAL_LIST_KEYS = ("order", "only", "ignore")


@dataclass(frozen=True, slots=True)
class Target:
    """One provider + upstream model pair a request may be sent to."""

    provider: str
    model: str
    context_window: int | None = None
    weight: float | None = None
    # USD per million tokens, or None when unknown: the target's configured price, else
    # Config.prices, else pricing.DEFAULT_PRICES, by model name. Derived from the model, so
    # it takes no part in equality or hashing: a target is its provider and model.
    price: Price | None = field(default=None, compare=False)
    # "provider/model": the target's name in the health store, signals and headers
    key: str = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "key", f"{self.provider}/{self.model}")


@dataclass(frozen=True, slots=True)
class Plan:
    targets: tuple[Target, ...]
    openrouter_provider: dict[str, Any] | None = field(default=None, hash=False)
    routing: str = "ordered"  # "ordered", "latency" or "weighted"
    hedge_after: float | str | None = None  # seconds, "p95", or None for no hedging
    # The first model's alias's cost and resume settings (None without an alias).
    max_price_ratio: float | None = None
    max_cost: float | None = None
    resume: ResumePolicy | None = None
    # every key whose health the plan depends on: its targets' and their providers'
    health_keys: tuple[str, ...] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        keys = dict.fromkeys(k for t in self.targets for k in (t.key, t.provider))
        object.__setattr__(self, "health_keys", tuple(keys))


@dataclass(slots=True)
class RoutedRequest:
    """A validated client request, ready for a driver."""

    route: str  # "chat/completions", "completions" or "embeddings"
    body: dict[str, Any]
    plan: Plan
    request_id: str
    stream: bool = False
    model: str = ""  # what the client asked for (the first of model/models)
    hedge_after: float | str | None = None  # the plan's, unless the request overrides it
    # Each the plan's (or the config's), unless the request overrides it with a header.
    resume: ResumePolicy | None = None  # x-badgr-resume
    max_price_ratio: float | None = None  # x-badgr-max-price-ratio
    max_cost: float | None = None  # x-badgr-max-cost, US dollars
    # x-badgr-deadline-ms, in seconds; None: timeouts.deadline (the driver takes the smaller)
    deadline: float | None = None
    attempts_detail: bool = False  # x-badgr-attempts-detail, else Config.attempts_detail
    raw: bytes = b""  # the body exactly as the client sent it; empty once ``body`` changed


# Body fields that make a plan depend on more than the model name.
_PER_REQUEST_FIELDS = frozenset({"models", "route", "provider"})
# Model names whose plans one cache keeps (a client may send any number of names).
PLAN_CACHE_SIZE = 1024


def resolve_plan(
    body: Mapping[str, Any], config: Config, cache: dict[str, Plan] | None = None
) -> Plan:
    """Turn ``model`` / ``models`` / ``route`` / ``provider`` into a :class:`Plan`.

    ``cache`` (kept by the caller for one config) holds the plans of requests that name
    only a ``model``: a plan depends on nothing else, so it is resolved once per name.
    """
    if cache is None or not isinstance(body.get("model"), str) or (
        not _PER_REQUEST_FIELDS.isdisjoint(body)
    ):
        return _resolve(body, config)
    model: str = body["model"]
    plan = cache.get(model)
    if plan is None:
        plan = _resolve(body, config)
        if len(cache) < PLAN_CACHE_SIZE:
            cache[model] = plan
    return plan


def _resolve(body: Mapping[str, Any], config: Config) -> Plan:
    names = _model_names(body)
    route = body.get("route")
    if route is not None and route != "fallback":
        raise ApiError(400, f"Unsupported route {route!r}: only 'fallback' is supported.",
                       param="route", code="invalid_value")
    targets: list[Target] = []
    seen: set[str] = set()
    for name in names:
        for target in _resolve_one(name, config):
            if target.key not in seen:
                seen.add(target.key)
                targets.append(target)
    prefs = body.get("provider")
    forwarded: dict[str, Any] | None = None
    if prefs is not None:
        targets, forwarded = _apply_preferences(targets, prefs, config)
    primary = config.models.get(names[0])
    routing = primary.routing if primary is not None else "ordered"
    if isinstance(prefs, dict) and prefs.get("sort") == "latency":
        routing = "latency"
    if primary is None:
        return Plan(tuple(targets), forwarded, routing)
    return Plan(tuple(targets), forwarded, routing, primary.hedge_after, primary.max_price_ratio,
                primary.max_cost, primary.resume)


def _model_names(body: Mapping[str, Any]) -> list[str]:
    names: list[str] = []
    model = body.get("model")
    if model is not None:
        if not isinstance(model, str) or not model:
            raise ApiError(400, "'model' must be a non-empty string.", param="model",
                           code="invalid_type")
        names.append(model)
    fallbacks = body.get("models")
    if fallbacks is not None:
        if not isinstance(fallbacks, list) or not all(
            isinstance(item, str) and item for item in fallbacks
        ):
            raise ApiError(400, "'models' must be a list of model names.", param="models",
                           code="invalid_type")
        names.extend(item for item in fallbacks if item not in names)
    if not names:
        raise ApiError(400, "you must provide a model parameter", param="model",
                       code="missing_required_parameter")
    return names


def _resolve_one(name: str, config: Config) -> list[Target]:
    alias = config.models.get(name)
    if alias is not None:
        return [_from_config(t, config) for t in alias.targets]
    bypass = _bypass(name, config)
    if bypass is not None:
        return bypass
    provider, sep, rest = name.partition("/")
    if sep and rest and provider in config.providers:
        return [_priced(provider, rest, config)]
    if config.default_provider is not None:
        return [_priced(config.default_provider, name, config)]
    raise ApiError(404, f"The model '{name}' does not exist or you do not have access to it.",
                   param="model", code="model_not_found")


def _bypass(name: str, config: Config) -> list[Target] | None:
    """``[<openrouter>/<name>, <native provider>/<native model>]`` for a catalogued id."""
    openrouter = next(
        (p.name for p in config.providers.values() if p.openrouter and p.bypass), None
    )
    if openrouter is None:
        return None
    from ..providers.catalog import native_target

    native = native_target(name, config.catalog)
    if native is None or native[0] not in config.providers or native[0] == openrouter:
        return None
    return [_priced(openrouter, name, config), _priced(*native, config)]


def _priced(provider: str, model: str, config: Config) -> Target:
    return Target(provider, model, price=lookup_price(model, config.prices))


def _from_config(target: TargetConfig, config: Config) -> Target:
    price = target.price if target.price is not None else lookup_price(target.model, config.prices)
    return Target(target.provider, target.model, target.context_window, target.weight, price)


def _apply_preferences(
    targets: list[Target], prefs: object, config: Config
) -> tuple[list[Target], dict[str, Any] | None]:
    if not isinstance(prefs, dict):
        raise ApiError(400, "'provider' must be an object.", param="provider", code="invalid_type")
    local = {name.lower(): name for name in config.providers}
    lists: dict[str, list[str]] = {}
    forwarded: dict[str, Any] = {}
    for key, value in prefs.items():
        if key in _LOCAL_LIST_KEYS:
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ApiError(400, f"'provider.{key}' must be a list of provider names.",
                               param=f"provider.{key}", code="invalid_type")
            mine = [local[v.lower()] for v in value if v.lower() in local]
            if mine:  # a list naming only OpenRouter's upstreams is OpenRouter's business
                lists[key] = mine
            foreign = [v for v in value if v.lower() not in local]
            if foreign:
                forwarded[key] = foreign
        elif key == "allow_fallbacks":
            if not isinstance(value, bool):
                raise ApiError(400, "'provider.allow_fallbacks' must be a boolean.",
                               param="provider.allow_fallbacks", code="invalid_type")
            forwarded[key] = value
        else:
            forwarded[key] = value
    openrouter = {name for name, p in config.providers.items() if p.openrouter}
    result = _filter(targets, lists, openrouter if "only" in forwarded else set())
    if prefs.get("allow_fallbacks") is False:
        if lists.get("order"):
            allowed = set(lists["order"])
            result = [t for t in result if t.provider in allowed]
        else:
            result = result[:1]
    if not result:
        raise ApiError(400, "No target is left after applying the 'provider' preferences.",
                       param="provider", code="no_target")
    return result, forwarded or None


def _filter(
    targets: Sequence[Target], lists: Mapping[str, list[str]], keep: set[str]
) -> list[Target]:
    """Apply order/only/ignore; ``keep`` are providers an ``only`` list spares because it
    also names OpenRouter upstreams, which OpenRouter itself then applies."""
    result = list(targets)
    if "only" in lists:
        only = set(lists["only"]) | keep
        result = [t for t in result if t.provider in only]
    if "ignore" in lists:
        ignore = set(lists["ignore"])
        result = [t for t in result if t.provider not in ignore]
    order = lists.get("order")
    if order:
        rank = {name: i for i, name in enumerate(order)}
        # stable: ordered providers first in the given order, the rest keep their places after
        result.sort(key=lambda t: rank.get(t.provider, len(rank)))
    return result
