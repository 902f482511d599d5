"""Pieces the translating wire formats (Anthropic, Gemini) share.

Native wires build the upstream body from the request fields they understand and drop
everything else; fields whose loss would change the shape of the answer the client asked for
are refused with a 400 ``unsupported_parameter`` instead (docs/providers.md has the table).
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Callable, Mapping
from typing import Any

from ..errors import ApiError, error_body
from ..routing.outcomes import Failure, FailureKind
from ..sse import SSEEvent, SSEScanner, encode_event

__all__ = [
    "ChunkWriter",
    "UnsupportedRequest",
    "dumps",
    "image_url",
    "include_usage",
    "max_tokens_of",
    "openai_usage",
    "parse_data_url",
    "stop_list",
    "text_of",
]

DONE_EVENT = b"data: [DONE]\n\n"


class UnsupportedRequest(ApiError):
    """A request this target cannot serve without changing the answer's contract.

    Raised by ``Wire.build_request``; the drivers turn it into its :attr:`failure`, so the
    request moves on to the next target, and reaches the client as a 400 only when no
    target could serve it.
    """

    def __init__(self, message: str, *, param: str | None = None,
                 code: str = "unsupported_parameter") -> None:
        super().__init__(400, message, param=param, code=code,
                         headers=[("x-should-retry", "false")])

    @property
    def failure(self) -> Failure:
        return Failure(FailureKind.UNSUPPORTED, 400, self.message, self.code, None, self.param)


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON, as every wire sends it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


def arguments_json(value: Any) -> str:
    """A tool call's arguments as the JSON string OpenAI clients expect."""
    return json.dumps(value if value is not None else {}, ensure_ascii=False,
                      separators=(",", ":"))


def parse_arguments(raw: Any) -> dict[str, Any]:
    """An OpenAI ``function.arguments`` string as an object; anything else becomes ``{}``."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, str) and raw.strip():
        try:
            value = json.loads(raw)
        except (ValueError, RecursionError):
            return {}
        if isinstance(value, dict):
            return value
    return {}


def text_of(content: Any) -> str:
    """The text of a string content or of a list of text parts (other parts ignored)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(part.get("text") or "")
            for part in content
            if isinstance(part, dict) and part.get("type") in ("text", "refusal", None)
        )
    return ""


def image_url(part: Mapping[str, Any], param: str) -> str:
    """The URL of an OpenAI ``image_url`` content part (a ``{"url": ...}`` or a bare string)."""
    spec = part.get("image_url")
    url = spec.get("url") if isinstance(spec, dict) else spec
    if not isinstance(url, str):
        raise UnsupportedRequest("An image_url part needs a 'url'.", param=param,
                                 code="unsupported_content")
    return url


def parse_data_url(url: str) -> tuple[str, str] | None:
    """``data:<mime>;base64,<data>`` as ``(mime, data)``; None for any other URL."""
    if not url.startswith("data:"):
        return None
    header, sep, data = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        return None
    mime = header[: -len(";base64")].strip().lower()
    return (mime or "application/octet-stream"), data


def max_tokens_of(body: Mapping[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    return None


def stop_list(body: Mapping[str, Any]) -> list[str]:
    stop = body.get("stop")
    if isinstance(stop, str):
        return [stop] if stop else []
    if isinstance(stop, list):
        return [s for s in stop if isinstance(s, str) and s]
    return []


def include_usage(body: Mapping[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def openai_usage(
    prompt: int, completion: int, *, cached: int | None = None, reasoning: int | None = None,
    total: int | None = None,
) -> dict[str, Any]:
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion if total is None else total,
    }
    if cached is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": cached}
    if reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning}
    return usage


def synthetic_id(*parts: object) -> str:
    """A deterministic tool-call id for upstreams that send none."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()
    return f"call_{digest[:24]}"


def reject(body: Mapping[str, Any], target: str) -> None:
    """Refuse what no native wire can honour without changing the answer's shape."""
    if body.get("functions") is not None or body.get("function_call") is not None:
        raise UnsupportedRequest(
            f"'functions'/'function_call' are not supported by {target}; use 'tools'.",
            param="functions")
    modalities = body.get("modalities")
    if body.get("audio") is not None or (
        isinstance(modalities, list) and any(m != "text" for m in modalities)
    ):
        raise UnsupportedRequest(f"Audio output is not supported by {target}.",
                                 param="modalities")


def float32_base64(values: list[float]) -> str:
    """An embedding as OpenAI's ``encoding_format: "base64"`` sends it (little-endian f32)."""
    return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()


class ChunkWriter:
    """Builds the ``chat.completion.chunk`` events of one translated stream."""

    __slots__ = ("id", "created", "model", "usage_field")

    def __init__(self, id: str, created: int, model: str, include_usage: bool) -> None:
        self.id = id
        self.created = created
        self.model = model
        self.usage_field = include_usage  # every chunk then carries "usage": null

    def chunk(self, delta: dict[str, Any], finish: str | None = None, index: int = 0) -> bytes:
        obj: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
            ],
        }
        if self.usage_field:
            obj["usage"] = None
        return encode_event(dumps(obj))

    def usage_chunk(self, usage: dict[str, Any]) -> bytes:
        return encode_event(dumps({
            "id": self.id, "object": "chat.completion.chunk", "created": self.created,
            "model": self.model, "choices": [], "usage": usage,
        }))


def failed_mid_stream(stream: TranslatingStream, failure: Failure, *, malformed: bool) -> bytes:
    """Record a failure after the stream started: the error event is kept for the relay."""
    if malformed:
        kind, code = FailureKind.STREAM_MALFORMED, "stream_malformed"
    else:
        kind, code = FailureKind.STREAM_ERROR, failure.code
    stream.error = Failure(kind, 200, failure.message, code)
    stream.error_in_band = True
    stream.error_event = error_event(failure.message, code)
    return b""


def error_event(message: str, code: str | None) -> bytes:
    """The in-band OpenAI error event that ends a stream whose upstream failed mid-answer."""
    return encode_event(error_body(message, "upstream_error", None, code))


def unfinished_stream() -> Failure:
    """The failure of a stream that ended before its terminal marker."""
    return Failure(FailureKind.STREAM_INCOMPLETE, None,
                   "The upstream stream ended before the answer was complete.",
                   "stream_interrupted")


class TranslatingStream:
    """The shared part of the native stream translators: the SSE scanning, the
    :class:`~badgr_middleware.providers.base.StreamTranslator` state, and the loop that turns
    each upstream event into OpenAI bytes (:meth:`_event`, written by each format)."""

    def __init__(self, scrub: Callable[[str], str]) -> None:
        self._scanner = SSEScanner()
        self._scrub = scrub
        self._usage: dict[str, Any] = {}
        self.started = False
        self.finished = False
        self.error: Failure | None = None
        self.error_in_band = False
        self.error_event = b""
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: bytes) -> bytes:
        if self.finished or self.error is not None:
            return b""
        _, events = self._scanner.feed(chunk)
        out: list[bytes] = []
        for event in events:
            out.append(self._event(event))
            if self.finished or self.error is not None:
                break
        return b"".join(out)

    def close(self) -> bytes:
        if not self.finished and self.error is None:
            self.error = unfinished_stream()
        return b""

    def _event(self, event: SSEEvent) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError
