"""Fault specs: the small language that tells the simulated provider how to misbehave.

A spec is ``HEAD[:OPTION]...``, for example ``"503"``, ``"429:retry-after=2"``, ``"cut=3"``.
See docs/simulator.md for the full list. Parsing is pure and eager: a bad spec raises
``ValueError`` where it is configured, not later in the middle of a request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

FaultKind = Literal[
    "status",
    "error-body",
    "invalid-json",
    "hang",
    "hang-after-headers",
    "slow",
    "cut",
    "midstream-error",
    "idle",
    "dribble",
]
RetryAfterForm = Literal["seconds", "ms", "date"]

Variant = Literal["quota", "context"]
_Argument = Literal["none", "seconds", "count"]

# name -> (kind, what follows "=")
_NAMED: dict[str, tuple[FaultKind, _Argument]] = {
    "error-body": ("error-body", "none"),
    "invalid-json": ("invalid-json", "none"),
    "hang": ("hang", "none"),
    "hang-after-headers": ("hang-after-headers", "none"),
    "slow": ("slow", "seconds"),
    "ttfb": ("slow", "seconds"),
    "idle": ("idle", "seconds"),
    "dribble": ("dribble", "seconds"),
    "cut": ("cut", "count"),
    "midstream-error": ("midstream-error", "count"),
}
_RETRY_AFTER_FORMS: dict[str, RetryAfterForm] = {
    "retry-after": "seconds",
    "retry-after-ms": "ms",
    "retry-after-date": "date",
}
# variant option -> the only status it may follow
_VARIANTS: dict[str, tuple[Variant, int]] = {"quota": ("quota", 429), "context": ("context", 400)}


@dataclass(frozen=True)
class Fault:
    """A parsed fault spec.

    ``seconds`` applies to slow/idle/dribble, ``count`` to cut/midstream-error; ``status``,
    ``variant`` and the retry-after fields only to ``kind == "status"``.
    """

    spec: str
    kind: FaultKind
    status: int = 200
    variant: Variant | None = None
    seconds: float = 0.0
    count: int = 0
    retry_after_form: RetryAfterForm | None = None
    retry_after_value: float = 0.0


def parse_fault(spec: str) -> Fault:
    """Parse a fault spec such as ``"429:retry-after=2"``; raise ``ValueError`` if it is invalid."""
    text = spec.strip().lower()
    head, *options = text.split(":")
    name, has_value, value = head.partition("=")
    if _is_number(name) and not has_value:
        return _parse_status(spec, int(name), options)
    if options:
        raise ValueError(f"fault {spec!r}: options like {options[0]!r} apply to status faults only")
    entry = _NAMED.get(name)
    if entry is None or bool(has_value) != (entry[1] != "none"):
        raise ValueError(f"unknown fault spec {spec!r} (see docs/simulator.md)")
    kind, argument = entry
    if argument == "seconds":
        return Fault(spec=spec, kind=kind, seconds=_seconds(spec, value))
    if argument == "count":
        return Fault(spec=spec, kind=kind, count=_count(spec, value))
    return Fault(spec=spec, kind=kind)


def _parse_status(spec: str, status: int, options: list[str]) -> Fault:
    if not 400 <= status <= 599:
        raise ValueError(f"fault {spec!r}: status must be 400-599")
    variant: Variant | None = None
    form: RetryAfterForm | None = None
    value = 0.0
    for option in options:
        key, has_value, raw = option.partition("=")
        if key in _RETRY_AFTER_FORMS and has_value:
            if form is not None:
                raise ValueError(f"fault {spec!r}: more than one retry-after option")
            form, value = _RETRY_AFTER_FORMS[key], _seconds(spec, raw)
        elif key in _VARIANTS and not has_value and _VARIANTS[key][1] == status and not variant:
            variant = _VARIANTS[key][0]
        else:
            raise ValueError(f"fault {spec!r}: unknown option {option!r} for status {status}")
    return Fault(
        spec=spec,
        kind="status",
        status=status,
        variant=variant,
        retry_after_form=form,
        retry_after_value=value,
    )


def _seconds(spec: str, raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"fault {spec!r}: {raw!r} is not a number of seconds") from None
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"fault {spec!r}: seconds must be a finite number >= 0")
    return value


def _count(spec: str, raw: str) -> int:
    if not _is_number(raw):
        raise ValueError(f"fault {spec!r}: {raw!r} is not a whole number >= 0")
    return int(raw)


def _is_number(text: str) -> bool:
    return text.isascii() and text.isdigit()
