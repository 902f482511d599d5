"""A string wrapper that never shows its value in reprs, logs or error messages."""

from __future__ import annotations

import hmac
from typing import Any, NoReturn

__all__ = ["Secret", "mask"]

# Shorter values reveal nothing: four characters of a short key is too large a share of it.
_MIN_LEN_FOR_HINT = 16


def mask(value: str) -> str:
    """Return the masked form of *value*: ``****`` plus its last 4 characters if it is long.

    A URL (``redis://...``) shows nothing: its credentials may sit anywhere, even at the end.
    """
    if len(value) >= _MIN_LEN_FOR_HINT and "://" not in value:
        return "****" + value[-4:]
    return "****"


class Secret:
    """An immutable secret string (an API key) whose repr and str are masked.

    Use :meth:`reveal` to get the value when it must be sent somewhere.
    """

    __slots__ = ("_value",)
    _value: str

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError(f"Secret value must be a str, not {type(value).__name__}")
        object.__setattr__(self, "_value", value)

    def reveal(self) -> str:
        """Return the secret value itself."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret('{mask(self._value)}')"

    def __str__(self) -> str:
        return mask(self._value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Secret):
            other_value = other._value
        elif isinstance(other, str):
            other_value = other
        else:
            return NotImplemented
        # Bytes, because compare_digest rejects non-ASCII str.
        return hmac.compare_digest(self._value.encode(), other_value.encode())

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)

    def __setattr__(self, name: str, value: Any) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __delattr__(self, name: str) -> NoReturn:
        raise AttributeError("Secret is immutable")

    def __reduce__(self) -> tuple[type[Secret], tuple[str]]:
        # copy/deepcopy/pickle would otherwise restore the slot through the blocked __setattr__.
        return (Secret, (self._value,))
