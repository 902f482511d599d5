"""Configuration: one schema, loaded from a dict, a TOML file or the environment.

Loading interpolates ``${VAR}`` references, validates the whole configuration and reports every
problem at once, each with its path (``providers.openai.api_key``), in a :class:`ConfigError`.
Problem messages never contain configuration values, so secrets are never printed back.
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib
import math
import os
import re
import tomllib
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from badgr_middleware.pricing import Price, lookup_price
from badgr_middleware.providers.known import (
    IMPLEMENTED_KINDS,
    KINDS,
    KNOWN_PROVIDERS,
)
from badgr_middleware.secret import Secret

__all__ = [
    "PROBLEM_CODES",
    "AliasConfig",
    "BreakerPolicy",
    "Config",
    "ConfigError",
    "ConfigProblem",
    "ClientLimits",
    "Cooldowns",
    "LimitsConfig",
    "ProviderConfig",
    "ResumePolicy",
    "RetryPolicy",
    "StateConfig",
    "StatusPagesConfig",
    "TargetConfig",
    "Timeouts",
    "load_config",
]

PROBLEM_CODES: tuple[str, ...] = (
    "no_providers",
    "unknown_key",
    "unknown_provider",
    "missing_api_key",
    "bad_kind",
    "kind_not_implemented",
    "bad_base_url",
    "bad_target",
    "unknown_target_provider",
    "empty_alias",
    "bad_type",
    "bad_value",
    "env_missing",
    "bad_default_provider",
    "bad_authenticate",
    "no_inbound_auth",
    "bad_provider_name",
    "bad_prefix",
    "bad_interpolation",
    "bad_file",
    "bad_toml",
    "missing_api_version",
    "bad_bypass",
    "bad_catalog",
    "bad_status_page",
    "bad_limits",
    "bad_price",
    "unknown_price",
)
"""Every :attr:`ConfigProblem.code`, in a fixed order; new codes are only ever appended."""

Severity = Literal["error", "warning"]


# --------------------------------------------------------------------------- problems


@dataclass(frozen=True)
class ConfigProblem:
    """One mistake in the configuration, where it is, and how to fix it."""

    path: str
    message: str
    fix: str
    code: str
    severity: Severity = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message} (fix: {self.fix})"


class ConfigError(ValueError):
    """The configuration has errors; :attr:`problems` lists every one of them."""

    problems: tuple[ConfigProblem, ...]
    warnings: tuple[ConfigProblem, ...]

    def __init__(
        self, problems: Iterable[ConfigProblem], warnings: Iterable[ConfigProblem] = ()
    ) -> None:
        self.problems = tuple(p for p in problems if p.severity == "error")
        self.warnings = tuple(warnings)
        count = len(self.problems)
        lines = [f"badgr configuration has {count} problem{'s' if count != 1 else ''}:"]
        lines.extend(str(p) for p in self.problems)
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------- schema


@dataclass(frozen=True)
class ProviderConfig:
    """An upstream provider account: where to send requests and with which key."""

    name: str
    kind: str
    base_url: str
    api_key: Secret | None = None
    # Header values may carry credentials, so they stay out of the repr.
    headers: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), repr=False)
    models: tuple[str, ...] = ()
    openrouter: bool = False
    # kind = "azure": the api-version query parameter, and the deployment every request goes
    # to (None: the target's model is the deployment name).
    api_version: str | None = None
    deployment: str | None = None
    # An OpenRouter provider whose catalogued model ids may also be served by their native
    # provider when OpenRouter fails (see providers/catalog.py).
    bypass: bool = False


@dataclass(frozen=True)
class TargetConfig:
    """One place a request can be sent: a configured provider and its upstream model name."""

    provider: str
    model: str
    context_window: int | None = None
    # Share of this target under weighted routing; None counts as 1.
    weight: float | None = None
    # The target's own price; None: the configuration's prices, then the shipped list prices
    # (badgr_middleware.pricing), are looked up by model name when a request is planned.
    price: Price | None = None

    @property
    def name(self) -> str:
        """The target as ``"<provider>/<model>"``."""
        return f"{self.provider}/{self.model}"


@dataclass(frozen=True)
class ResumePolicy:
    """Resume a stream that broke after reaching the client on the next target, when fewer
    than ``max_sent_tokens`` completion tokens had already been sent."""

    max_sent_tokens: int = 4000


@dataclass(frozen=True)
class AliasConfig:
    """A public model name, the targets that serve it, and how they are ordered and hedged."""

    name: str
    targets: tuple[TargetConfig, ...]
    # "ordered" (as listed), "latency" (fastest observed time to first byte first) or
    # "weighted" (weighted random order by TargetConfig.weight).
    routing: str = "ordered"
    # Seconds before the next target is started in parallel, "p95", or None: no hedging.
    hedge_after: float | str | None = None
    # A fallback target may cost at most this many times the alias's first target.
    max_price_ratio: float | None = None
    # US dollars one request may cost, every attempt included (estimated before sending).
    max_cost: float | None = None
    # None: a stream that broke after reaching the client ends with an error chunk.
    resume: ResumePolicy | None = None


@dataclass(frozen=True)
class Timeouts:
    """Time limits, in seconds."""

    connect: float = 5.0
    # Longest silence between two chunks once the answer has started.
    read: float = 120.0
    deadline: float = 300.0
    # Longest wait from sending a request to the first event of a stream, or to the response.
    first_byte: float = 120.0


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently one target is retried before failing over."""

    attempts_per_target: int = 2
    backoff_base: float = 0.25
    backoff_max: float = 4.0
    max_retry_after: float = 30.0


@dataclass(frozen=True)
class Cooldowns:
    """How long, in seconds, a target or provider is skipped after each kind of refusal."""

    rate_limited: float = 10.0
    quota: float = 300.0
    auth: float = 600.0
    not_found: float = 300.0


@dataclass(frozen=True)
class BreakerPolicy:
    """When a target's circuit breaker opens, and how it probes before closing again."""

    consecutive_failures: int = 5
    failure_rate: float = 0.5
    min_requests: int = 10
    window: float = 60.0
    open_for: float = 30.0
    half_open_probes: int = 1


@dataclass(frozen=True)
class StateConfig:
    """Where breakers, cooldowns and latency statistics live: in each process, or in Redis."""

    backend: str = "memory"
    # The URL may carry a password, so it is a Secret and its repr is masked.
    url: Secret | None = None
    timeout: float = 0.1
    retry_interval: float = 5.0
    key_prefix: str = "badgr:"


@dataclass(frozen=True)
class ClientLimits:
    """Per-client inbound limits; None means no limit (docs/limits.md)."""

    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    concurrent_streams: int | None = None


@dataclass(frozen=True)
class LimitsConfig(ClientLimits):
    """The inbound limits every client gets, and per-client overrides keyed by the client's
    id (``key:<first 8 hex of sha256 of the key>``, ``principal:<...>`` or ``anonymous``)."""

    clients: Mapping[str, ClientLimits] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def enabled(self) -> bool:
        return any(
            getattr(limits, name) is not None
            for limits in (self, *self.clients.values())
            for name in _LIMIT_NAMES
        )

    def for_client(self, client: str) -> ClientLimits:
        return self.clients.get(client, self)


@dataclass(frozen=True)
class StatusPagesConfig:
    """Polling of the providers' official status pages (off unless ``enabled``).

    ``sources``: provider name -> status URL (a Statuspage ``summary.json``/``status.json`` or
    an RSS/Atom incident feed), laid over the defaults for well-known providers; ``False``
    switches a default off."""

    enabled: bool = False
    interval: float = 60.0
    timeout: float = 5.0
    sources: Mapping[str, str | bool] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Config:
    """The whole badgr configuration. Build it with :meth:`from_dict`, :meth:`from_toml`,
    :meth:`from_env` or :func:`load_config`, which validate it; the constructor does not."""

    providers: Mapping[str, ProviderConfig]
    models: Mapping[str, AliasConfig]
    client_keys: tuple[Secret, ...] = ()
    allow_anonymous: bool = False
    authenticate: Callable[..., Any] | None = None
    default_provider: str | None = None
    prefix: str = "/v1"
    max_body_bytes: int = 16 * 1024 * 1024
    timeouts: Timeouts = Timeouts()
    retry: RetryPolicy = RetryPolicy()
    cooldowns: Cooldowns = Cooldowns()
    breaker: BreakerPolicy = BreakerPolicy()
    state: StateConfig = StateConfig()
    # OpenRouter model id -> its native target; False switches a shipped entry off. Laid over
    # the shipped catalog (badgr_middleware.providers.catalog.CATALOG) when bypass is on.
    catalog: Mapping[str, TargetConfig | bool] = field(
        default_factory=lambda: MappingProxyType({})
    )
    # GET /status: operator keys accepted besides the client auth, and who may read it:
    # "clients" (the API's rules, plus status_keys), "operators" (status_keys only) or
    # "staff" (Django staff users, plus status_keys)
    status_keys: tuple[Secret, ...] = ()
    status_auth: str = "clients"
    status_pages: StatusPagesConfig = StatusPagesConfig()
    limits: LimitsConfig = LimitsConfig()
    # Model name -> price (USD per million tokens), laid over pricing.DEFAULT_PRICES: this
    # holds the configured entries only; look prices up with pricing.lookup_price(model,
    # config.prices).
    prices: Mapping[str, Price] = field(default_factory=lambda: MappingProxyType({}))
    # Send the attempts-detail header with every response, not only when a client asks.
    attempts_detail: bool = False
    # A target whose remaining rate-limit share is at or below this is tried last until its
    # limit resets; 0 switches quota-aware ordering off.
    quota_reserve: float = 0.05
    warnings: tuple[ConfigProblem, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, env: Mapping[str, str] | None = None) -> Config:
        """Interpolate and validate a dict (Django settings, Flask config); raise ConfigError."""
        return _load(data, os.environ if env is None else env)

    @classmethod
    def from_toml(
        cls, path: str | os.PathLike[str], *, env: Mapping[str, str] | None = None
    ) -> Config:
        """Read, interpolate and validate a TOML file; raise ConfigError."""
        return _load(_read_toml(path), os.environ if env is None else env)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Config:
        """Load from ``BADGR_CONFIG`` or ``./badgr.toml``, else from well-known API key
        variables; ``BADGR_*`` overrides (``BADGR_REDIS_URL`` included) apply on top.
        Raise ConfigError."""
        return _load_env(os.environ if env is None else env)


def load_config(
    source: Config | Mapping[str, Any] | str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
) -> Config:
    """Return a Config from a Config (as is), a dict, a TOML file path, or None (environment)."""
    if isinstance(source, Config):
        return source
    if isinstance(source, Mapping):
        return Config.from_dict(source, env=env)
    if isinstance(source, str | os.PathLike):
        return Config.from_toml(source, env=env)
    if source is None:
        return Config.from_env(env)
    raise TypeError(
        f"load_config() expects a Config, a mapping, a path or None, not {type(source).__name__}"
    )


# --------------------------------------------------------------------------- helpers

_PROVIDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_VAR_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE = re.compile(r"\$(?:(?P<dollar>\$)|\{(?P<body>[^}]*)\}|(?P<open>\{))")
_TRUE = frozenset({"1", "true", "yes"})
_FALSE = frozenset({"0", "false", "no"})

_TOP_KEYS = (
    "providers",
    "models",
    "client_keys",
    "allow_anonymous",
    "authenticate",
    "default_provider",
    "prefix",
    "max_body_bytes",
    "timeouts",
    "retry",
    "cooldowns",
    "breaker",
    "state",
    "catalog",
    "status_keys",
    "status_auth",
    "status_pages",
    "limits",
    "prices",
    "attempts_detail",
    "quota_reserve",
)
_PROVIDER_KEYS = (
    "kind", "base_url", "api_key", "headers", "models", "openrouter", "api_version",
    "deployment", "bypass",
)
_TARGET_KEYS = ("target", "context_window", "weight", "price")
_ALIAS_KEYS = ("targets", "routing", "hedge_after", "max_price_ratio", "max_cost", "resume")
_PRICE_KEYS = ("input", "output")
_RESUME_KEYS = ("max_sent_tokens",)
_ROUTINGS = ("ordered", "latency", "weighted")
_HEDGE_PERCENTILES = ("p95",)
_STATE_KEYS = ("backend", "url", "timeout", "retry_interval", "key_prefix")
_BACKENDS = ("memory", "redis")
_REDIS_SCHEMES = ("redis://", "rediss://", "unix://")
_INBOUND_KEYS = ("client_keys", "authenticate", "allow_anonymous")
_LIMIT_NAMES = ("requests_per_minute", "tokens_per_minute", "concurrent_streams")
_CLIENT_ID = re.compile(r"anonymous|(?:key|principal):[0-9a-f]{8}")

_T = TypeVar("_T")


class _Unresolved:
    """Stands in for a string whose ``${VAR}`` could not be resolved (already reported)."""

    def __repr__(self) -> str:
        return "<unresolved>"


_UNRESOLVED = _Unresolved()


def _join(path: str, key: object) -> str:
    return f"{path}.{key}" if path else str(key)


def _describe(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, list | tuple):
        return "a list"
    return f"a {type(value).__name__}"


def _suggest(word: str, candidates: Iterable[str]) -> str | None:
    """The closest candidate to *word*, case-insensitively, or None."""
    by_lower = {c.lower(): c for c in candidates}
    if word.lower() in by_lower:
        return by_lower[word.lower()]
    close = difflib.get_close_matches(word.lower(), list(by_lower), n=1, cutoff=0.7)
    return by_lower[close[0]] if close else None


def _kind_not_implemented(kind: str, path: str) -> ConfigProblem | None:
    """Refuse wire formats this version cannot route yet; remove once every KINDS entry is."""
    if kind in IMPLEMENTED_KINDS:
        return None
    return ConfigProblem(
        path,
        f"kind '{kind}' is not supported by this version yet",
        'use kind = "openai" with base_url set to the provider\'s OpenAI-compatible endpoint',
        "kind_not_implemented",
    )


class _Checker:
    """Collects problems and converts raw values, reporting instead of raising."""

    def __init__(self) -> None:
        self.problems: list[ConfigProblem] = []

    def error(self, path: str, message: str, fix: str, code: str) -> None:
        self.problems.append(ConfigProblem(path, message, fix, code))

    def warn(self, path: str, message: str, fix: str, code: str) -> None:
        self.problems.append(ConfigProblem(path, message, fix, code, "warning"))

    def has_error_under(self, *prefixes: str) -> bool:
        return any(
            p.severity == "error"
            and any(p.path == pre or p.path.startswith((pre + ".", pre + "[")) for pre in prefixes)
            for p in self.problems
        )

    def bad_type(self, path: str, expected: str, value: object, fix: str) -> None:
        self.error(path, f"expected {expected}, got {_describe(value)}", fix, "bad_type")

    def keys(self, mapping: Mapping[Any, Any], path: str, allowed: Collection[str]) -> None:
        for key in mapping:
            if key in allowed:
                continue
            key_path = _join(path, key)
            if not isinstance(key, str):
                self.bad_type(key_path, "a string key", key, "use string keys only")
                continue
            suggestion = _suggest(key, allowed)
            fix = (
                f"did you mean '{suggestion}'?"
                if suggestion
                else f"remove it; known keys here: {', '.join(allowed)}"
            )
            self.error(key_path, f"unknown key '{key}'", fix, "unknown_key")

    def mapping(self, value: object, path: str, example: str) -> Mapping[Any, Any] | None:
        if value is _UNRESOLVED:
            return None
        if isinstance(value, Mapping):
            return value
        self.bad_type(path, "a table", value, f"write a table, e.g. {example}")
        return None

    def string(self, value: object, path: str, example: str) -> str | None:
        if value is _UNRESOLVED:
            return None
        if isinstance(value, str):
            return value
        self.bad_type(path, "a string", value, f"write a quoted string, e.g. {example}")
        return None

    def boolean(self, value: object, path: str, key: str) -> bool | None:
        if value is _UNRESOLVED:
            return None
        if isinstance(value, bool):
            return value
        self.bad_type(path, "a boolean", value, f"write true or false without quotes: {key} = true")
        return None

    def number(
        self,
        value: object,
        path: str,
        key: str,
        example: float,
        *,
        zero_ok: bool = False,
        maximum: float | None = None,
    ) -> float | None:
        if value is _UNRESOLVED:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.bad_type(
                path, "a number", value, f"write a number without quotes, e.g. {key} = {example}"
            )
            return None
        if (
            not math.isfinite(value)
            or value < 0
            or (value == 0 and not zero_ok)
            or (maximum is not None and value > maximum)
        ):
            bound = "0 or more" if zero_ok else "greater than 0"
            if maximum is not None:
                bound += f" and at most {maximum:g}"
            self.error(
                path,
                f"{key} must be a finite number {bound}, got {value}",
                f"e.g. {key} = {example}",
                "bad_value",
            )
            return None
        return float(value)

    def integer(
        self, value: object, path: str, key: str, example: int, *, minimum: int
    ) -> int | None:
        if value is _UNRESOLVED:
            return None
        if isinstance(value, bool) or not isinstance(value, int):
            self.bad_type(
                path, "an integer", value, f"write a whole number without quotes: {key} = {example}"
            )
            return None
        if value < minimum:
            self.error(
                path,
                f"{key} must be at least {minimum}, got {value}",
                f"e.g. {key} = {example}",
                "bad_value",
            )
            return None
        return value

    def choice(self, value: object, path: str, key: str, choices: tuple[str, ...]) -> str | None:
        text = self.string(value, path, f'{key} = "{choices[0]}"')
        if text is None:
            return None
        if text in choices:
            return text
        suggestion = _suggest(text, choices)
        self.error(
            path,
            f"{key} must be one of {', '.join(choices)}",
            f"did you mean '{suggestion}'?" if suggestion else f'e.g. {key} = "{choices[0]}"',
            "bad_value",
        )
        return None


# --------------------------------------------------------------------------- interpolation


def _interpolate(value: Any, env: Mapping[str, str], path: str, ck: _Checker) -> Any:
    """Resolve ``${VAR}`` in every string inside *value*, recursively."""
    if isinstance(value, str):
        return _interpolate_str(value, env, path, ck)
    if isinstance(value, Mapping):
        return {k: _interpolate(v, env, _join(path, k), ck) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_interpolate(v, env, f"{path}[{i}]", ck) for i, v in enumerate(value)]
    return value


def _interpolate_str(
    text: str, env: Mapping[str, str], path: str, ck: _Checker
) -> str | _Unresolved:
    if "$" not in text:
        return text
    resolved = True

    def replace(match: re.Match[str]) -> str:
        nonlocal resolved
        if match["dollar"]:
            return "$"
        fix = "write ${NAME} or ${NAME:-default}, and $$ for a literal $"
        if match["open"]:
            ck.error(path, "unterminated ${ in the value", fix, "bad_interpolation")
            resolved = False
            return ""
        name, has_default, default = match["body"].partition(":-")
        if not _VAR_NAME.fullmatch(name):
            ck.error(path, "malformed ${...} reference in the value", fix, "bad_interpolation")
            resolved = False
            return ""
        current = env.get(name)
        if has_default:
            return current or default
        if current is None:
            ck.error(
                path,
                f"environment variable {name} is not set",
                f"export {name}=… or write the value in the config",
                "env_missing",
            )
            resolved = False
            return ""
        return current

    result = _REFERENCE.sub(replace, text)
    return result if resolved else _UNRESOLVED


# --------------------------------------------------------------------------- validation


def _build(ck: _Checker, data: object) -> Config | None:
    if not isinstance(data, Mapping):
        ck.bad_type("config", "a table", data, "pass a dict or a TOML document")
        return None
    ck.keys(data, "", _TOP_KEYS)
    providers, names = _providers(ck, data.get("providers"))
    prices = _prices(ck, data.get("prices"))
    models = _aliases(ck, data.get("models"), names, prices)
    client_keys = _client_keys(ck, data.get("client_keys"))

    allow_anonymous = False
    if data.get("allow_anonymous") is not None:
        flag = ck.boolean(data["allow_anonymous"], "allow_anonymous", "allow_anonymous")
        allow_anonymous = bool(flag)

    authenticate = _authenticate(ck, data.get("authenticate"))

    default_provider = None
    if data.get("default_provider") is not None:
        default_provider = ck.string(
            data["default_provider"], "default_provider", 'default_provider = "openrouter"'
        )
        if default_provider is not None and names and default_provider not in names:
            _unknown_provider_ref(
                ck, "default_provider", default_provider, names, "bad_default_provider"
            )

    prefix = "/v1"
    if data.get("prefix") is not None:
        prefix = _prefix(ck, data["prefix"]) or prefix

    max_body_bytes = 16 * 1024 * 1024
    if data.get("max_body_bytes") is not None:
        max_body_bytes = (
            ck.integer(
                data["max_body_bytes"], "max_body_bytes", "max_body_bytes", 16777216, minimum=1024
            )
            or max_body_bytes
        )

    timeouts = _section(ck, data.get("timeouts"), "timeouts", Timeouts)
    retry = _section(
        ck,
        data.get("retry"),
        "retry",
        RetryPolicy,
        integers=("attempts_per_target",),
        zero_ok=("max_retry_after",),
    )
    cooldowns = _section(ck, data.get("cooldowns"), "cooldowns", Cooldowns)
    breaker = _section(
        ck,
        data.get("breaker"),
        "breaker",
        BreakerPolicy,
        integers=("consecutive_failures", "min_requests", "half_open_probes"),
        maximum={"failure_rate": 1.0},
    )
    state = _state(ck, data.get("state"))
    catalog = _catalog(ck, data.get("catalog"), names)
    status_keys, status_auth, status_pages = _status(ck, data, names)
    limits = _limits(ck, data.get("limits"))

    attempts_detail = False
    if data.get("attempts_detail") is not None:
        flag = ck.boolean(data["attempts_detail"], "attempts_detail", "attempts_detail")
        attempts_detail = bool(flag)
    quota_reserve = _quota_reserve(ck, data.get("quota_reserve"))

    if (
        not client_keys
        and authenticate is None
        and not allow_anonymous
        and not ck.has_error_under(*_INBOUND_KEYS)
    ):
        ck.warn(
            "client_keys",
            "no inbound authentication is configured: every request will be refused with 401",
            "add client_keys, an authenticate callable, or allow_anonymous = true for local "
            "development",
            "no_inbound_auth",
        )

    return Config(
        providers=MappingProxyType(providers),
        models=MappingProxyType(models),
        client_keys=client_keys,
        allow_anonymous=allow_anonymous,
        authenticate=authenticate,
        default_provider=default_provider,
        prefix=prefix,
        max_body_bytes=max_body_bytes,
        timeouts=timeouts,
        retry=retry,
        cooldowns=cooldowns,
        breaker=breaker,
        state=state,
        catalog=MappingProxyType(catalog),
        status_keys=status_keys,
        status_auth=status_auth,
        status_pages=status_pages,
        limits=limits,
        prices=MappingProxyType(prices),
        attempts_detail=attempts_detail,
        quota_reserve=quota_reserve,
        warnings=tuple(p for p in ck.problems if p.severity == "warning"),
    )


def _providers(ck: _Checker, raw: object) -> tuple[dict[str, ProviderConfig], set[str]]:
    providers: dict[str, ProviderConfig] = {}
    names: set[str] = set()
    if raw is None or (isinstance(raw, Mapping) and not raw):
        ck.error(
            "providers",
            "no providers are configured",
            'add one, e.g. providers.openrouter.api_key = "${OPENROUTER_API_KEY}"; without a '
            "config file, export a well-known key such as OPENROUTER_API_KEY or set BADGR_CONFIG",
            "no_providers",
        )
        return providers, names
    mapping = ck.mapping(raw, "providers", '{openrouter = {api_key = "${OPENROUTER_API_KEY}"}}')
    if mapping is None:
        return providers, names
    for name, body in mapping.items():
        path = _join("providers", name)
        if not isinstance(name, str) or not _PROVIDER_NAME.fullmatch(name):
            ck.error(
                path,
                "a provider name must start with a letter or digit and contain only letters, "
                "digits, '_', '.' and '-' (no '/')",
                "rename the provider, e.g. my-provider",
                "bad_provider_name",
            )
            continue
        names.add(name)
        provider = _provider(ck, name, body, path)
        if provider is not None:
            providers[name] = provider
    return providers, names


def _provider(ck: _Checker, name: str, body: object, path: str) -> ProviderConfig | None:
    before = len(ck.problems)
    mapping = ck.mapping({} if body is None else body, path, '{api_key = "${API_KEY}"}')
    if mapping is None:
        return None
    ck.keys(mapping, path, _PROVIDER_KEYS)
    known = KNOWN_PROVIDERS.get(name)
    raw_kind = mapping.get("kind")
    raw_url = mapping.get("base_url")
    custom_fix = 'set kind = "openai" and base_url = "https://…/v1" for a custom provider'

    if known is None and raw_kind is None and raw_url is None:
        suggestion = _suggest(name, KNOWN_PROVIDERS)
        hint = f"did you mean '{suggestion}'? otherwise " if suggestion else ""
        ck.error(
            path,
            f"'{name}' is not a well-known provider "
            f"({', '.join(KNOWN_PROVIDERS)}), so it needs kind and base_url",
            hint + custom_fix,
            "unknown_provider",
        )

    kind = known.kind if known is not None else "openai"
    kind_path = _join(path, "kind")
    if raw_kind is not None:
        given = ck.string(raw_kind, kind_path, 'kind = "openai"')
        if given is not None and given not in KINDS:
            suggestion = _suggest(given, KINDS)
            ck.error(
                kind_path,
                f"kind must be one of {', '.join(KINDS)}",
                f"did you mean '{suggestion}'?"
                if suggestion
                else 'use kind = "openai" for any OpenAI-compatible API',
                "bad_kind",
            )
        elif given is not None:
            kind = given
    if kind in KINDS:
        problem = _kind_not_implemented(kind, kind_path)
        if problem is not None:
            ck.problems.append(problem)

    base_url = known.base_url if known is not None and kind == known.kind else None
    url_path = _join(path, "base_url")
    if raw_url is not None:
        given_url = ck.string(raw_url, url_path, 'base_url = "https://api.example.com/v1"')
        base_url = _base_url(ck, given_url, url_path) if given_url is not None else None
    elif base_url is None and (known is not None or raw_kind is not None):
        why = (
            "base_url is required when kind differs from the well-known provider's"
            if known is not None
            else "base_url is required for a provider that is not well-known"
        )
        ck.error(url_path, why, 'base_url = "https://api.example.com/v1"', "bad_base_url")

    api_key = _api_key(ck, mapping.get("api_key"), _join(path, "api_key"), name)
    headers = _headers(ck, mapping.get("headers"), _join(path, "headers"))
    models = _model_list(ck, mapping.get("models"), _join(path, "models"))

    openrouter = known.openrouter if known is not None else False
    if mapping.get("openrouter") is not None:
        flag = ck.boolean(mapping["openrouter"], _join(path, "openrouter"), "openrouter")
        openrouter = openrouter if flag is None else flag

    api_version, deployment = _azure_fields(ck, mapping, path, kind)
    bypass = False
    if mapping.get("bypass") is not None:
        bypass_path = _join(path, "bypass")
        bypass = bool(ck.boolean(mapping["bypass"], bypass_path, "bypass"))
        if bypass and not openrouter:
            ck.error(
                bypass_path,
                "bypass applies only to an OpenRouter provider",
                "set bypass on the openrouter provider (or on one with openrouter = true)",
                "bad_bypass",
            )

    if len(ck.problems) != before or base_url is None:
        return None
    return ProviderConfig(
        name=name,
        kind=kind,
        base_url=base_url,
        api_key=api_key,
        headers=MappingProxyType(headers),
        models=models,
        openrouter=openrouter,
        api_version=api_version,
        deployment=deployment,
        bypass=bypass,
    )


def _azure_fields(
    ck: _Checker, mapping: Mapping[Any, Any], path: str, kind: str
) -> tuple[str | None, str | None]:
    """``api_version`` (required) and ``deployment`` (optional), for kind = "azure" only."""
    values: dict[str, str | None] = {}
    for name, example in (("api_version", "2024-10-21"), ("deployment", "my-gpt-4o")):
        field_path = _join(path, name)
        raw = mapping.get(name)
        value = ck.string(raw, field_path, f'{name} = "{example}"') if raw is not None else None
        if value is not None and not value.strip():
            ck.error(field_path, f"{name} must not be empty", f'{name} = "{example}"',
                     "bad_value")
            value = None
        elif value is not None and kind != "azure":
            ck.error(field_path, f'{name} applies only to kind = "azure"',
                     'remove it, or set kind = "azure"', "bad_value")
            value = None
        elif value is not None and any(c in "/?#&" or c.isspace() for c in value):
            ck.error(field_path, f"{name} must not contain '/', '?', '#', '&' or spaces",
                     f'{name} = "{example}"', "bad_value")
            value = None
        values[name] = value
    if kind == "azure" and mapping.get("api_version") is None:
        ck.error(
            _join(path, "api_version"),
            'api_version is required for kind = "azure"',
            'add api_version = "2024-10-21" (the Azure OpenAI REST API version to call)',
            "missing_api_version",
        )
    return values["api_version"], values["deployment"]


def _catalog(
    ck: _Checker, raw: object, names: set[str]
) -> dict[str, TargetConfig | bool]:
    """User entries laid over the shipped OpenRouter-id catalog."""
    catalog: dict[str, TargetConfig | bool] = {}
    if raw is None:
        return catalog
    mapping = ck.mapping(
        raw, "catalog", '{"anthropic/claude-sonnet-4.5" = "anthropic/claude-sonnet-4-5"}'
    )
    if mapping is None:
        return catalog
    for key, value in mapping.items():
        path = _join("catalog", key)
        if not isinstance(key, str) or "/" not in key.strip("/"):
            ck.error(
                path,
                "a catalog key must be an OpenRouter model id '<vendor>/<model>'",
                'e.g. "anthropic/claude-sonnet-4.5" = "anthropic/claude-sonnet-4-5"',
                "bad_catalog",
            )
            continue
        if value is False:
            catalog[key] = False
            continue
        if value is True or (value is not _UNRESOLVED and not isinstance(value, str)):
            ck.error(
                path,
                f"a catalog entry must be '<provider>/<model>' or false, got {_describe(value)}",
                'write "<provider>/<native model>", e.g. "anthropic/claude-sonnet-4-5", or '
                "false to switch off a shipped entry",
                "bad_catalog",
            )
            continue
        target = _target(ck, value, path, names)
        if target is not None:
            catalog[key] = target
    return catalog


def _base_url(ck: _Checker, value: str, path: str) -> str | None:
    fix = 'write an absolute URL, e.g. base_url = "https://api.example.com/v1"'
    try:
        parts = urlsplit(value)
        valid = (
            parts.scheme in ("http", "https")
            and bool(parts.hostname)
            and not any(c.isspace() for c in value)
        )
        if valid:
            parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        valid = False
    if not valid:
        message = "base_url must be an http:// or https:// URL with a host"
        ck.error(path, message, fix, "bad_base_url")
        return None
    if parts.query or parts.fragment:
        ck.error(path, "base_url must not contain a query or fragment", fix, "bad_base_url")
        return None
    if parts.username is not None or parts.password is not None:
        ck.error(
            path,
            "base_url must not contain credentials",
            "remove user:password@ from the URL; put the key in api_key or headers",
            "bad_base_url",
        )
        return None
    return value.rstrip("/")


def _api_key(ck: _Checker, raw: object, path: str, provider: str) -> Secret | None:
    if raw is _UNRESOLVED:
        return None
    key: Secret | None = None
    if isinstance(raw, Secret):
        key = raw if raw else None
    elif isinstance(raw, str):
        key = Secret(raw) if raw else None
    elif raw is not None:
        ck.bad_type(path, "a string", raw, 'api_key = "${API_KEY}"')
        return None
    known = KNOWN_PROVIDERS.get(provider)
    if key is None and known is not None and known.key_required:
        env_var = known.api_key_env or "API_KEY"
        ck.error(
            path,
            f"api_key is {'missing' if raw is None else 'empty'}; {provider} requires a key",
            f'add api_key = "${{{env_var}}}" and export {env_var}',
            "missing_api_key",
        )
    return key


def _headers(ck: _Checker, raw: object, path: str) -> dict[str, str]:
    headers: dict[str, str] = {}
    if raw is None:
        return headers
    mapping = ck.mapping(raw, path, '{"X-Title" = "my app"}')
    if mapping is None:
        return headers
    for name, value in mapping.items():
        header_path = _join(path, name)
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            ck.error(
                header_path,
                "not a valid HTTP header name",
                "use letters, digits and '-', e.g. X-Title",
                "bad_value",
            )
            continue
        text = ck.string(value, header_path, '"X-Title" = "my app"')
        if text is None:
            continue
        if "\r" in text or "\n" in text:
            ck.error(
                header_path,
                "a header value must not contain line breaks",
                "remove the line breaks",
                "bad_value",
            )
            continue
        headers[name] = text
    return headers


def _model_list(ck: _Checker, raw: object, path: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list | tuple):
        ck.bad_type(path, "a list of strings", raw, 'models = ["model-a", "model-b"]')
        return ()
    models: list[str] = []
    for i, entry in enumerate(raw):
        entry_path = f"{path}[{i}]"
        text = ck.string(entry, entry_path, '"model-a"')
        if text is None:
            continue
        if not text.strip():
            ck.error(entry_path, "a model name must not be empty", "remove the entry", "bad_value")
            continue
        models.append(text)
    return tuple(models)


def _aliases(
    ck: _Checker, raw: object, names: set[str], prices: Mapping[str, Price]
) -> dict[str, AliasConfig]:
    aliases: dict[str, AliasConfig] = {}
    if raw is None:
        return aliases
    mapping = ck.mapping(raw, "models", '{fast = ["groq/llama-3.1-8b-instant"]}')
    if mapping is None:
        return aliases
    for alias, body in mapping.items():
        path = _join("models", alias)
        if not isinstance(alias, str) or not alias.strip():
            ck.error(path, "a model alias must be a non-empty string", "rename it", "bad_value")
            continue
        before = len(ck.problems)
        targets_raw, targets_path = body, path
        routing: str | None = None
        hedge_after: float | str | None = None
        options: dict[str, Any] = {}
        if isinstance(body, Mapping):
            ck.keys(body, path, _ALIAS_KEYS)
            targets_raw, targets_path = body.get("targets"), _join(path, "targets")
            if body.get("routing") is not None:
                routing = ck.choice(body["routing"], _join(path, "routing"), "routing", _ROUTINGS)
            if body.get("hedge_after") is not None:
                hedge_after = _hedge_after(ck, body["hedge_after"], _join(path, "hedge_after"))
            for name, example in (("max_price_ratio", 2), ("max_cost", 0.05)):
                if body.get(name) is not None:
                    options[name] = ck.number(body[name], _join(path, name), name, example)
            if body.get("resume") is not None:
                options["resume"] = _resume(ck, body["resume"], _join(path, "resume"))
        if targets_raw is _UNRESOLVED:
            continue
        if isinstance(targets_raw, str | Mapping):
            # A single target is accepted without the surrounding list.
            entries: list[tuple[object, str]] = [(targets_raw, targets_path)]
        elif isinstance(targets_raw, list | tuple):
            entries = [(t, f"{targets_path}[{i}]") for i, t in enumerate(targets_raw)]
        elif targets_raw is None:
            entries = []
        else:
            ck.bad_type(
                targets_path, "a list of targets", targets_raw, f'{alias} = ["<provider>/<model>"]'
            )
            continue
        if not entries:
            ck.error(
                targets_path,
                "the alias has no targets",
                'list at least one target, e.g. ["openrouter/openai/gpt-4o"]',
                "empty_alias",
            )
            continue
        targets = [_target(ck, entry, entry_path, names) for entry, entry_path in entries]
        if len(ck.problems) != before or not all(t is not None for t in targets):
            continue
        parsed = tuple(t for t in targets if t is not None)
        if routing is None:
            # Weights given without a routing mean the weights are meant to be used.
            routing = "weighted" if any(t.weight is not None for t in parsed) else "ordered"
        _warn_unpriced(ck, path, options, parsed, [p for _, p in entries], prices)
        aliases[alias] = AliasConfig(
            alias, parsed, routing=routing, hedge_after=hedge_after, **options
        )
    return aliases


def _warn_unpriced(
    ck: _Checker,
    path: str,
    options: Mapping[str, Any],
    targets: tuple[TargetConfig, ...],
    paths: list[str],
    prices: Mapping[str, Price],
) -> None:
    """Warn about targets whose price a price limit of the alias needs but nobody knows."""
    given = [name for name in ("max_price_ratio", "max_cost") if options.get(name) is not None]
    if not given:
        return
    option = " and ".join(given)
    for target, target_path in zip(targets, paths, strict=True):
        if target.price is None and lookup_price(target.model, prices) is None:
            ck.warn(
                target_path,
                f"the price of this target is not known, so {option} cannot account for it",
                'give the target a price, e.g. {target = "<provider>/<model>", price = '
                "{input = 0.5, output = 1.5}} (US dollars per million tokens), or add its "
                f"model under prices (see {_join(path, given[0])})",
                "unknown_price",
            )


def _price(ck: _Checker, raw: object, path: str) -> Price | None:
    """``{input = <USD>, output = <USD>}`` per million tokens, both required, 0 allowed."""
    example = "price = {input = 2.5, output = 10.0}"
    if raw is _UNRESOLVED:
        return None
    if not isinstance(raw, Mapping):
        ck.error(path, f"a price must be a table of input and output, got {_describe(raw)}",
                 f"write {example} (US dollars per million tokens)", "bad_price")
        return None
    ck.keys(raw, path, _PRICE_KEYS)
    values: dict[str, float] = {}
    for name in _PRICE_KEYS:
        value = raw.get(name)
        field_path = _join(path, name)
        if value is _UNRESOLVED:
            continue
        if value is None:
            ck.error(field_path, f"a price needs {name}", f"write {example}", "bad_price")
        elif (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            number = isinstance(value, int | float) and not isinstance(value, bool)
            ck.error(
                field_path,
                f"{name} must be a finite number of 0 or more (US dollars per million tokens), "
                f"got {value if number else _describe(value)}",
                f"write {example}",
                "bad_price",
            )
        else:
            values[name] = float(value)
    if len(values) != len(_PRICE_KEYS):
        return None
    return Price(values["input"], values["output"])


def _prices(ck: _Checker, raw: object) -> dict[str, Price]:
    """``prices``: model name -> price, laid over the shipped list prices."""
    prices: dict[str, Price] = {}
    if raw is None:
        return prices
    mapping = ck.mapping(raw, "prices", '{"gpt-4o" = {input = 2.5, output = 10.0}}')
    for number, (model, body) in enumerate((mapping or {}).items(), 1):
        if not isinstance(model, str) or not model.strip():
            ck.error("prices", f"entry {number} is not named by a model name",
                     'e.g. "gpt-4o" = {input = 2.5, output = 10.0}', "bad_price")
            continue
        path = _join("prices", model)
        price = _price(ck, body, path)
        if price is not None:
            prices[model] = price
    return prices


def _resume(ck: _Checker, raw: object, path: str) -> ResumePolicy | None:
    """``true``, ``false`` or ``{max_sent_tokens = <n>}``."""
    if raw is _UNRESOLVED:
        return None
    if isinstance(raw, bool):
        return ResumePolicy() if raw else None
    if not isinstance(raw, Mapping):
        ck.bad_type(path, "a boolean or a table", raw,
                    "write resume = true, or resume = {max_sent_tokens = 2000}")
        return None
    ck.keys(raw, path, _RESUME_KEYS)
    if raw.get("max_sent_tokens") is None:
        return ResumePolicy()
    tokens = ck.integer(raw["max_sent_tokens"], _join(path, "max_sent_tokens"),
                        "max_sent_tokens", 2000, minimum=1)
    return None if tokens is None else ResumePolicy(tokens)


def _quota_reserve(ck: _Checker, raw: object) -> float:
    default = Config.quota_reserve
    if raw is None:
        return default
    value = ck.number(raw, "quota_reserve", "quota_reserve", default, zero_ok=True)
    if value is None:
        return default
    if value >= 1:
        ck.error("quota_reserve",
                 f"quota_reserve is a share of a rate limit, below 1, got {value:g}",
                 "e.g. quota_reserve = 0.05 (5 % left), or 0 to switch it off", "bad_value")
        return default
    return value


def _hedge_after(ck: _Checker, raw: object, path: str) -> float | str | None:
    if raw is _UNRESOLVED:
        return None
    fix = 'write a number of seconds without quotes, e.g. hedge_after = 0.5, or hedge_after = "p95"'
    if isinstance(raw, str):
        if raw in _HEDGE_PERCENTILES:
            return raw
        suggestion = _suggest(raw, _HEDGE_PERCENTILES)
        ck.error(
            path,
            'hedge_after must be a number of seconds or "p95"',
            f"did you mean '{suggestion}'?" if suggestion else fix,
            "bad_value",
        )
        return None
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        ck.bad_type(path, 'a number or "p95"', raw, fix)
        return None
    return ck.number(raw, path, "hedge_after", 0.5)


def _target(ck: _Checker, raw: object, path: str, names: set[str]) -> TargetConfig | None:
    form_fix = (
        'write "<provider>/<model>", e.g. "openrouter/anthropic/claude-sonnet-4.5", or a table '
        '{target = "openai/gpt-4.1", context_window = 1000000}'
    )
    if raw is _UNRESOLVED:
        return None
    context_window: int | None = None
    weight: float | None = None
    price: Price | None = None
    spec_path = path
    if isinstance(raw, Mapping):
        ck.keys(raw, path, _TARGET_KEYS)
        spec, spec_path = raw.get("target"), _join(path, "target")
        if spec is None:
            ck.error(path, "a target table needs a 'target' key", form_fix, "bad_target")
            return None
        invalid = False
        if raw.get("context_window") is not None:
            context_window = ck.integer(
                raw["context_window"],
                _join(path, "context_window"),
                "context_window",
                128000,
                minimum=1,
            )
            invalid = context_window is None
        if raw.get("weight") is not None:
            weight = ck.number(raw["weight"], _join(path, "weight"), "weight", 3)
            invalid = invalid or weight is None
        if raw.get("price") is not None:
            price = _price(ck, raw["price"], _join(path, "price"))
            invalid = invalid or price is None
        if invalid:
            return None
    else:
        spec = raw
    if spec is _UNRESOLVED:
        return None
    if not isinstance(spec, str):
        ck.error(
            spec_path,
            f"a target must be a '<provider>/<model>' string or a table, got {_describe(spec)}",
            form_fix,
            "bad_target",
        )
        return None
    provider, _, model = spec.partition("/")
    if not provider or not model.strip():
        ck.error(spec_path, "a target must look like '<provider>/<model>'", form_fix, "bad_target")
        return None
    # With no provider at all, no_providers already says everything.
    if names and provider not in names:
        _unknown_provider_ref(ck, spec_path, provider, names, "unknown_target_provider")
        return None
    return TargetConfig(
        provider=provider, model=model, context_window=context_window, weight=weight, price=price
    )


def _unknown_provider_ref(ck: _Checker, path: str, name: str, names: set[str], code: str) -> None:
    suggestion = _suggest(name, names)
    if suggestion:
        fix = f"did you mean '{suggestion}'?"
    elif names:
        fix = f"use a configured provider ({', '.join(sorted(names))}) or add it under providers"
    else:
        fix = "add the provider under providers"
    message = (
        "the target's provider is not configured"
        if code == "unknown_target_provider"
        else "default_provider does not name a configured provider"
    )
    ck.error(path, message, fix, code)


def _client_keys(ck: _Checker, raw: object, name: str = "client_keys") -> tuple[Secret, ...]:
    if raw is None or raw is _UNRESOLVED:
        return ()
    fix = f'{name} = ["${{BADGR_{name[:-5].upper()}_KEY}}"]'
    if not isinstance(raw, list | tuple):
        ck.bad_type(name, "a list of strings", raw, fix)
        return ()
    keys: list[Secret] = []
    for i, entry in enumerate(raw):
        path = f"{name}[{i}]"
        if entry is _UNRESOLVED:
            continue
        if not isinstance(entry, str | Secret):
            ck.bad_type(path, "a string", entry, fix)
            continue
        value = entry.reveal() if isinstance(entry, Secret) else entry
        if not value.strip():
            ck.error(path, "a client key must not be empty", "set a long random key", "bad_value")
            continue
        keys.append(Secret(value))
    return tuple(keys)


def _authenticate(ck: _Checker, raw: object) -> Callable[..., Any] | None:
    path = "authenticate"
    if raw is None or raw is _UNRESOLVED:
        return None
    if isinstance(raw, str):
        return _import_callable(ck, raw, path)
    if callable(raw):
        return raw
    ck.bad_type(path, "a callable or a dotted path", raw, 'authenticate = "myapp.auth:check"')
    return None


def _import_callable(ck: _Checker, dotted: str, path: str) -> Callable[..., Any] | None:
    fix = 'write "package.module:function" (or "package.module.function") naming a callable'
    if ":" in dotted:
        module_name, _, attrs = dotted.partition(":")
    else:
        module_name, _, attrs = dotted.rpartition(".")
    parts = [*module_name.split("."), *attrs.split(".")]
    if not module_name or not attrs or not all(p.isidentifier() for p in parts):
        ck.error(path, "authenticate is not a valid dotted path", fix, "bad_authenticate")
        return None
    try:
        obj: object = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            message = "the module named by authenticate does not exist"
        else:
            message = f"importing the module named by authenticate failed: no module {exc.name!r}"
        ck.error(path, message, fix, "bad_authenticate")
        return None
    except Exception as exc:  # any error raised by the user's module at import time
        ck.error(
            path,
            f"importing the module named by authenticate raised {type(exc).__name__}",
            "fix the error in that module",
            "bad_authenticate",
        )
        return None
    for attr in attrs.split("."):
        try:
            obj = getattr(obj, attr)
        except AttributeError:
            ck.error(
                path,
                "the module has no attribute named by authenticate",
                fix,
                "bad_authenticate",
            )
            return None
    if not callable(obj):
        ck.error(path, "authenticate does not name a callable", fix, "bad_authenticate")
        return None
    return obj


def _prefix(ck: _Checker, raw: object) -> str | None:
    value = ck.string(raw, "prefix", 'prefix = "/v1"')
    if value is None:
        return None
    fix = 'write a path like prefix = "/v1" or "/api/llm"'
    if not value.startswith("/"):
        ck.error("prefix", "prefix must start with '/'", fix, "bad_prefix")
    elif value.endswith("/"):
        ck.error("prefix", "prefix must not end with '/'", fix, "bad_prefix")
    elif any(c.isspace() or c in "?#" for c in value):
        ck.error("prefix", "prefix must be a plain path (no spaces, '?' or '#')", fix, "bad_prefix")
    else:
        return value
    return None


def _section(
    ck: _Checker,
    raw: object,
    path: str,
    cls: type[_T],
    *,
    integers: Collection[str] = (),
    zero_ok: Collection[str] = (),
    maximum: Mapping[str, float] = MappingProxyType({}),
) -> _T:
    if raw is None:
        return cls()
    defaults = cls()
    mapping = ck.mapping(raw, path, "{...}")
    if mapping is None:
        return defaults
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    ck.keys(mapping, path, names)
    values: dict[str, Any] = {}
    for name in names:
        if mapping.get(name) is None:
            continue
        example = getattr(defaults, name)
        if name in integers:
            value: Any = ck.integer(mapping[name], _join(path, name), name, example, minimum=1)
        else:
            value = ck.number(
                mapping[name],
                _join(path, name),
                name,
                example,
                zero_ok=name in zero_ok,
                maximum=maximum.get(name),
            )
        if value is not None:
            values[name] = value
    return cls(**values)


def _client_limits(ck: _Checker, mapping: Mapping[Any, Any], path: str) -> dict[str, int]:
    values: dict[str, int] = {}
    for name in _LIMIT_NAMES:
        raw = mapping.get(name)
        if raw is None or raw is _UNRESOLVED:
            continue
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 1:
            ck.error(
                _join(path, name),
                f"{name} must be a whole number of at least 1 (or left out for no limit), "
                f"got {_describe(raw)}",
                f"e.g. {name} = 60",
                "bad_limits",
            )
            continue
        values[name] = raw
    return values


def _limits(ck: _Checker, raw: object) -> LimitsConfig:
    path = "limits"
    if raw is None:
        return LimitsConfig()
    mapping = ck.mapping(raw, path, "{requests_per_minute = 60, concurrent_streams = 2}")
    if mapping is None:
        return LimitsConfig()
    ck.keys(mapping, path, (*_LIMIT_NAMES, "clients"))
    values: dict[str, Any] = _client_limits(ck, mapping, path)
    clients: dict[str, ClientLimits] = {}
    raw_clients = mapping.get("clients")
    if raw_clients is not None:
        clients_path = _join(path, "clients")
        example = '{"key:1a2b3c4d" = {requests_per_minute = 5}}'
        table = ck.mapping(raw_clients, clients_path, example)
        for number, (client, body) in enumerate((table or {}).items(), 1):
            if not isinstance(client, str) or not _CLIENT_ID.fullmatch(client):
                # the path would repeat the entry's name, which may be a pasted key
                ck.error(
                    clients_path,
                    f"entry {number} is not a client id: write 'anonymous', 'key:<8 hex>' or "
                    "'principal:<8 hex>', never the key itself",
                    "copy the id from a 429 response's x-badgr-client header or from "
                    "docs/limits.md (python -c 'import hashlib; print(hashlib.sha256(b\"KEY\")"
                    ".hexdigest()[:8])')",
                    "bad_limits",
                )
                continue
            client_path = _join(clients_path, client)
            entry = ck.mapping(body, client_path, "{requests_per_minute = 5}")
            if entry is None:
                continue
            ck.keys(entry, client_path, _LIMIT_NAMES)
            clients[client] = ClientLimits(**_client_limits(ck, entry, client_path))
    return LimitsConfig(**values, clients=MappingProxyType(clients))


def _state(ck: _Checker, raw: object) -> StateConfig:
    path = "state"
    defaults = StateConfig()
    if raw is None:
        return defaults
    mapping = ck.mapping(raw, path, '{backend = "redis", url = "${REDIS_URL}"}')
    if mapping is None:
        return defaults
    ck.keys(mapping, path, _STATE_KEYS)
    values: dict[str, Any] = {}

    # The URL may carry a password: it is never put in a message, and is kept as a Secret.
    url_path = _join(path, "url")
    url_fix = (
        'write url = "${REDIS_URL}" and export REDIS_URL=redis://host:6379/0 '
        "(or rediss://…, unix:///path/to/redis.sock)"
    )
    raw_url = mapping.get("url")
    url_given = raw_url is not None
    if isinstance(raw_url, Secret):
        raw_url = raw_url.reveal()
    if isinstance(raw_url, str):
        # An empty URL counts as none, so url = "${REDIS_URL:-}" makes Redis optional.
        url_given = bool(raw_url)
        problem = _redis_url_problem(raw_url) if raw_url else None
        if problem is not None:
            ck.error(url_path, problem, url_fix, "bad_value")
        elif raw_url:
            values["url"] = Secret(raw_url)
    elif url_given and raw_url is not _UNRESOLVED:
        ck.bad_type(url_path, "a string", raw_url, url_fix)

    backend: str | None = "redis" if url_given else "memory"
    if mapping.get("backend") is not None:
        backend = ck.choice(mapping["backend"], _join(path, "backend"), "backend", _BACKENDS)
    if backend is not None:
        values["backend"] = backend
    if backend == "redis" and not url_given:
        ck.error(
            url_path,
            'url is required when backend is "redis"',
            url_fix + ", or export BADGR_REDIS_URL",
            "bad_value",
        )

    for name in ("timeout", "retry_interval"):
        if mapping.get(name) is not None:
            number = ck.number(mapping[name], _join(path, name), name, getattr(defaults, name))
            if number is not None:
                values[name] = number

    if mapping.get("key_prefix") is not None:
        prefix_path = _join(path, "key_prefix")
        key_prefix = ck.string(mapping["key_prefix"], prefix_path, 'key_prefix = "badgr:"')
        if key_prefix is not None and not key_prefix.strip():
            ck.error(
                prefix_path,
                "key_prefix must not be empty",
                'e.g. key_prefix = "myapp:badgr:"',
                "bad_value",
            )
        elif key_prefix is not None:
            values["key_prefix"] = key_prefix
    return StateConfig(**values)


_STATUS_AUTHS = ("clients", "operators", "staff")
_STATUS_PAGE_KEYS = ("enabled", "interval", "timeout", "sources")


def _status(
    ck: _Checker, data: Mapping[str, Any], names: set[str]
) -> tuple[tuple[Secret, ...], str, StatusPagesConfig]:
    """``status_keys``, ``status_auth`` and ``status_pages``."""
    keys = _client_keys(ck, data.get("status_keys"), "status_keys")
    auth = "clients"
    if data.get("status_auth") is not None:
        auth = ck.choice(data["status_auth"], "status_auth", "status_auth", _STATUS_AUTHS) or auth
    if auth == "operators" and not keys and not ck.has_error_under("status_keys"):
        ck.error("status_keys", 'status_auth = "operators" needs at least one status key',
                 'add status_keys = ["${BADGR_STATUS_KEY}"]', "bad_value")
    raw = data.get("status_pages")
    path = "status_pages"
    if raw is None:
        return keys, auth, StatusPagesConfig()
    mapping = ck.mapping(raw, path, "{enabled = true, interval = 60}")
    if mapping is None:
        return keys, auth, StatusPagesConfig()
    ck.keys(mapping, path, _STATUS_PAGE_KEYS)
    values: dict[str, Any] = {}
    if mapping.get("enabled") is not None:
        flag = ck.boolean(mapping["enabled"], _join(path, "enabled"), "enabled")
        if flag is not None:
            values["enabled"] = flag
    for name, example in (("interval", 60), ("timeout", 5)):
        if mapping.get(name) is not None:
            number = ck.number(mapping[name], _join(path, name), name, example)
            if number is not None:
                values[name] = number
    sources_raw = mapping.get("sources")
    if sources_raw is not None:
        sources_path = _join(path, "sources")
        sources = ck.mapping(
            sources_raw, sources_path,
            '{openai = "https://status.openai.com/api/v2/summary.json"}',
        )
        out: dict[str, str | bool] = {}
        for name, url in (sources or {}).items():
            entry = _join(sources_path, name)
            if names and name not in names:
                suggestion = _suggest(str(name), names)
                ck.error(entry, f"'{name}' is not a configured provider",
                         f"did you mean '{suggestion}'?" if suggestion
                         else f"use one of: {', '.join(sorted(names))}", "unknown_provider")
                continue
            if url is False:
                out[name] = False
                continue
            if url is _UNRESOLVED:
                continue
            if not isinstance(url, str) or not url.startswith(("http://", "https://")):
                ck.error(entry, "a status source must be an http(s) URL or false",
                         f'e.g. {name} = "https://status.example.com/api/v2/summary.json"',
                         "bad_status_page")
                continue
            out[name] = url
        values["sources"] = MappingProxyType(out)
    return keys, auth, StatusPagesConfig(**values)


def _redis_url_problem(url: str) -> str | None:
    """What is wrong with a Redis URL, in words that never repeat any part of it; or None."""
    if not url.startswith(_REDIS_SCHEMES):
        return "url must start with redis://, rediss:// or unix://"
    if any(c.isspace() for c in url):
        return "url must not contain spaces or line breaks"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
    except ValueError:
        # The exception's text may quote the URL, so it is not used.
        return "url has a malformed host or port (a password must be percent-encoded)"
    if parts.scheme == "unix" and not parts.path:
        return "a unix:// url needs the path of the socket, e.g. unix:///run/redis.sock"
    return None


# --------------------------------------------------------------------------- loading


def _load(
    data: object,
    env: Mapping[str, str],
    *,
    overrides: Mapping[str, Any] | None = None,
    problems: Iterable[ConfigProblem] = (),
) -> Config:
    """Interpolate *data*, lay *overrides* (already final values) on top, and validate.

    An override that is a table is merged into the table it overrides, key by key."""
    ck = _Checker()
    ck.problems.extend(problems)
    resolved = _interpolate(data, env, "", ck)
    if overrides and isinstance(resolved, dict):
        for key, value in overrides.items():
            current = resolved.get(key)
            if isinstance(value, Mapping) and isinstance(current, Mapping):
                resolved[key] = {**current, **value}
            else:
                resolved[key] = value
    config = _build(ck, resolved)
    errors = [p for p in ck.problems if p.severity == "error"]
    if errors or config is None:
        raise ConfigError(errors, [p for p in ck.problems if p.severity == "warning"])
    return config


def _read_toml(path: str | os.PathLike[str]) -> dict[str, Any]:
    where = os.fspath(path)
    try:
        with open(path, "rb") as file:
            return tomllib.load(file)
    except FileNotFoundError:
        problem = ConfigProblem(
            where,
            "config file not found",
            "check the path; a relative path is resolved from the current directory",
            "bad_file",
        )
    except OSError as exc:
        problem = ConfigProblem(
            where,
            f"config file cannot be read ({exc.strerror or type(exc).__name__})",
            "check the path and its permissions",
            "bad_file",
        )
    except tomllib.TOMLDecodeError as exc:
        # tomllib's messages give a position, never the offending value.
        problem = ConfigProblem(
            where, f"not valid TOML: {exc}", "fix the TOML syntax at that position", "bad_toml"
        )
    except UnicodeDecodeError:
        problem = ConfigProblem(where, "config file is not UTF-8", "save it as UTF-8", "bad_toml")
    raise ConfigError([problem])


def _env_overrides(env: Mapping[str, str]) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """The ``BADGR_*`` variables that apply on top of any configuration source."""
    overrides: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    if env.get("BADGR_CLIENT_KEYS"):
        keys = [k.strip() for k in env["BADGR_CLIENT_KEYS"].split(",")]
        overrides["client_keys"] = [k for k in keys if k]
    if env.get("BADGR_ALLOW_ANONYMOUS"):
        flag = env["BADGR_ALLOW_ANONYMOUS"].strip().lower()
        if flag in _TRUE | _FALSE:
            overrides["allow_anonymous"] = flag in _TRUE
        else:
            problems.append(
                ConfigProblem(
                    "allow_anonymous",
                    "BADGR_ALLOW_ANONYMOUS must be one of 1, true, yes, 0, false, no",
                    "export BADGR_ALLOW_ANONYMOUS=true (or false)",
                    "bad_value",
                )
            )
    if env.get("BADGR_PREFIX"):
        overrides["prefix"] = env["BADGR_PREFIX"]
    if env.get("BADGR_DEFAULT_PROVIDER"):
        overrides["default_provider"] = env["BADGR_DEFAULT_PROVIDER"]
    if env.get("BADGR_REDIS_URL"):
        url = env["BADGR_REDIS_URL"]
        problem = _redis_url_problem(url)
        if problem is None:
            # Merged into the file's [state]: its other keys still apply.
            overrides["state"] = {"backend": "redis", "url": Secret(url)}
        else:
            problems.append(
                ConfigProblem(
                    "state.url",
                    f"BADGR_REDIS_URL is not a valid Redis URL: {problem}",
                    "export BADGR_REDIS_URL=redis://host:6379/0 (or rediss://…, unix:///path)",
                    "bad_value",
                )
            )
    return overrides, problems


def _env_providers(env: Mapping[str, str]) -> tuple[dict[str, Any], list[ConfigProblem]]:
    """Providers for every well-known provider whose API key variable is set."""
    providers: dict[str, Any] = {}
    problems: list[ConfigProblem] = []
    for name, known in KNOWN_PROVIDERS.items():
        if known.api_key_env is None or not env.get(known.api_key_env):
            continue
        problem = _kind_not_implemented(known.kind, f"providers.{name}.kind")
        if problem is not None:
            problems.append(
                dataclasses.replace(
                    problem,
                    message=f"{problem.message}; {known.api_key_env} is set but provider "
                    f"'{name}' was not added",
                    severity="warning",
                )
            )
            continue
        providers[name] = {"api_key": env[known.api_key_env]}
    return providers, problems


def _load_env(env: Mapping[str, str]) -> Config:
    overrides, problems = _env_overrides(env)
    file: str | None = env.get("BADGR_CONFIG") or None
    if file is None and Path("badgr.toml").is_file():
        file = "badgr.toml"
    if file is not None:
        try:
            data = _read_toml(file)
        except ConfigError as exc:
            raise ConfigError([*exc.problems, *problems]) from None
        return _load(data, env, overrides=overrides, problems=problems)

    providers, more = _env_providers(env)
    if "default_provider" not in overrides:
        if len(providers) == 1:
            overrides["default_provider"] = next(iter(providers))
        elif "openrouter" in providers:
            overrides["default_provider"] = "openrouter"
    # Values read from the environment are final: they are not interpolated again.
    return _load(
        {}, env, overrides={"providers": providers, **overrides}, problems=[*problems, *more]
    )
