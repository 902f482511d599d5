"""OpenAI-shaped errors: ``{"error": {"message", "type", "param", "code"}}``."""

from __future__ import annotations

import json
from typing import Any

__all__ = ["ApiError", "error_body"]


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> bytes:
    """Encode an OpenAI-shaped error object."""
    return json.dumps(
        {"error": {"message": message, "type": type, "param": param, "code": code}},
        ensure_ascii=False,
    ).encode()


class ApiError(Exception):
    """A request the endpoint cannot serve, with the status and OpenAI error fields to send."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: list[tuple[str, str]] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or []

    def body(self) -> bytes:
        return error_body(self.message, self.type, self.param, self.code)

    def as_dict(self) -> dict[str, Any]:
        return {"message": self.message, "type": self.type, "param": self.param, "code": self.code}
