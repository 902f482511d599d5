"""Pure builders for the simulated provider's response bodies, SSE events and headers.

Nothing here does I/O or reads a clock: ids, timestamps and "now" are passed in, so every shape
is easy to test and matches docs/simulator.md exactly.
"""

from __future__ import annotations

import email.utils
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .faults import Fault

SSE_DONE = b"data: [DONE]\n\n"
TOOL_CALL_ID = "call_sim_1"
TOOL_ARGUMENTS = json.dumps({"ok": True})
MODEL_IDS = ("sim-small", "sim-large", "sim-embed")
EMBEDDING_SIZE = 8
CONTEXT_LIMIT = 8192

JsonObject = dict[str, Any]
Headers = list[tuple[bytes, bytes]]

# status -> (type, code, message); {model} is filled in
_STATUS_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Invalid value for 'messages' (simulated bad request)."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided"),
    403: (
        "request_forbidden",
        "unsupported_country_region_territory",
        "Country, region, or territory not supported",
    ),
    404: (
        "invalid_request_error",
        "model_not_found",
        "The model `{model}` does not exist or you do not have access to it.",
    ),
    408: ("timeout", "request_timeout", "Request timed out."),
    422: ("invalid_request_error", None, "Unprocessable entity (simulated)."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests (simulated)."),
    500: (
        "server_error",
        None,
        "The server had an error while processing your request. Sorry about that!",
    ),
    502: ("server_error", None, "Bad gateway (simulated)."),
    503: ("server_error", None, "The engine is currently overloaded, please try again later."),
    504: ("server_error", None, "Gateway timeout (simulated)."),
    529: ("overloaded_error", None, "Overloaded"),
}


@dataclass(frozen=True)
class ResponseMeta:
    """Values shared by every body or chunk of one response."""

    id: str
    created: int
    model: str
    provider: str


@dataclass(frozen=True)
class StreamPlan:
    """A complete SSE response, split where stream faults need to cut into it.

    ``content`` holds the events that carry the answer (text or tool-call argument pieces);
    ``head`` comes before them (the role chunk), ``tail`` after (finish, usage, ``[DONE]``).
    """

    head: tuple[bytes, ...]
    content: tuple[bytes, ...]
    tail: tuple[bytes, ...]
    error_event: bytes  # an OpenRouter-style mid-stream error chunk

    @property
    def events(self) -> tuple[bytes, ...]:
        """Every event of the healthy stream, in order."""
        return (*self.head, *self.content, *self.tail)


def encode_json(value: Any) -> bytes:
    """Compact UTF-8 JSON."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def sse_event(value: Any) -> bytes:
    """One ``data:`` event, terminated by a blank line."""
    return b"data: " + encode_json(value) + b"\n\n"


def count_words(value: Any) -> int:
    """Deterministic stand-in for a tokenizer: whitespace-separated words, found recursively."""
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(count_words(item) for item in value)
    if isinstance(value, dict):
        return count_words(value.get("content")) + count_words(value.get("text"))
    return 0


def split_text(text: str, pieces: int) -> list[str]:
    """Split ``text`` into at most ``pieces`` non-empty parts whose concatenation is ``text``."""
    n = max(1, min(pieces, len(text)))
    return [text[i * len(text) // n : (i + 1) * len(text) // n] for i in range(n)]


def usage(prompt_tokens: int, completion_tokens: int) -> JsonObject:
    """An OpenAI ``usage`` object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def openai_error(
    message: str, type_: str, *, param: str | None = None, code: str | None = None
) -> JsonObject:
    """The OpenAI error envelope (all four keys present)."""
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def upstream_error(provider: str) -> JsonObject:
    """The inner OpenRouter-style error used by ``error-body`` and ``midstream-error``."""
    return {"message": f"Upstream provider error (simulated by {provider}).", "code": 502}


def status_error(fault: Fault, *, model: str | None, prompt_tokens: int) -> JsonObject:
    """The JSON body for a status fault."""
    if fault.status == 402:
        return {
            "error": {
                "code": 402,
                "message": "Insufficient credits. Add more using https://openrouter.ai/settings/credits",
            }
        }
    if fault.variant == "quota":
        return openai_error(
            "You exceeded your current quota, please check your plan and billing details.",
            "insufficient_quota",
            code="insufficient_quota",
        )
    if fault.variant == "context":
        return openai_error(
            f"This model's maximum context length is {CONTEXT_LIMIT} tokens. However, your "
            f"messages resulted in {max(prompt_tokens, CONTEXT_LIMIT + 1)} tokens. "
            "Please reduce the length of the messages.",
            "invalid_request_error",
            param="messages",
            code="context_length_exceeded",
        )
    generic = "server_error" if fault.status >= 500 else "invalid_request_error"
    type_, code, message = _STATUS_ERRORS.get(
        fault.status, (generic, None, f"Simulated HTTP {fault.status} error.")
    )
    param = "messages" if fault.status == 400 else None
    return openai_error(message.format(model=model), type_, param=param, code=code)


def retry_after_headers(fault: Fault, now: float) -> Headers:
    """The retry hint a status fault asked for: ``retry-after`` (seconds or HTTP date) or
    ``retry-after-ms``."""
    value = fault.retry_after_value
    if fault.retry_after_form == "seconds":
        return [(b"retry-after", _number(value).encode())]
    if fault.retry_after_form == "ms":
        return [(b"retry-after-ms", _number(value).encode())]
    if fault.retry_after_form == "date":
        # HTTP dates have whole-second resolution: round up so the wait is never shorter.
        date = email.utils.formatdate(math.ceil(now + value), usegmt=True)
        return [(b"retry-after", date.encode())]
    return []


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else str(value)


def chat_completion(
    meta: ResponseMeta, *, text: str, tool_name: str | None, prompt_tokens: int
) -> JsonObject:
    """A non-streaming ``chat.completion``: ``text``, or one call to ``tool_name``."""
    message: JsonObject = {"role": "assistant", "content": text, "refusal": None}
    finish_reason, produced = "stop", text
    if tool_name is not None:
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": TOOL_CALL_ID,
                "type": "function",
                "function": {"name": tool_name, "arguments": TOOL_ARGUMENTS},
            }
        ]
        finish_reason, produced = "tool_calls", TOOL_ARGUMENTS
    return {
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": usage(prompt_tokens, count_words(produced)),
    }


def chat_stream(
    meta: ResponseMeta,
    *,
    text: str,
    tool_name: str | None,
    prompt_tokens: int,
    pieces: int,
    include_usage: bool,
) -> StreamPlan:
    """The ``chat.completion.chunk`` stream for the same answer as :func:`chat_completion`."""
    base: JsonObject = {
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
    }

    def chunk(delta: JsonObject, finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        extra: JsonObject = {"usage": None} if include_usage else {}
        return sse_event({**base, "choices": [choice], **extra})

    if tool_name is None:
        head = chunk({"role": "assistant", "content": ""})
        content = [chunk({"content": piece}) for piece in split_text(text, pieces)]
        finish_reason, produced = "stop", text
    else:
        first = {
            "index": 0,
            "id": TOOL_CALL_ID,
            "type": "function",
            "function": {"name": tool_name, "arguments": ""},
        }
        head = chunk({"role": "assistant", "content": None, "tool_calls": [first]})
        content = [
            chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
            for piece in split_text(TOOL_ARGUMENTS, pieces)
        ]
        finish_reason, produced = "tool_calls", TOOL_ARGUMENTS
    error_choice = {"index": 0, "delta": {"content": ""}, "finish_reason": "error"}
    return StreamPlan(
        head=(head,),
        content=tuple(content),
        tail=_tail(
            chunk({}, finish_reason),
            base,
            include_usage,
            usage(prompt_tokens, count_words(produced)),
        ),
        error_event=_error_event(base, meta, error_choice),
    )


def text_completion(meta: ResponseMeta, *, text: str, prompt_tokens: int) -> JsonObject:
    """A non-streaming legacy ``text_completion``."""
    return {
        "id": meta.id,
        "object": "text_completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
        "usage": usage(prompt_tokens, count_words(text)),
    }


def text_completion_stream(
    meta: ResponseMeta, *, text: str, prompt_tokens: int, pieces: int, include_usage: bool
) -> StreamPlan:
    """The legacy completions stream: ``text_completion`` chunks, no role chunk."""
    base: JsonObject = {
        "id": meta.id,
        "object": "text_completion",
        "created": meta.created,
        "model": meta.model,
    }

    def chunk(piece: str, finish_reason: str | None = None) -> bytes:
        choice = {"text": piece, "index": 0, "logprobs": None, "finish_reason": finish_reason}
        return sse_event({**base, "choices": [choice]})

    error_choice = {"text": "", "index": 0, "logprobs": None, "finish_reason": "error"}
    return StreamPlan(
        head=(),
        content=tuple(chunk(piece) for piece in split_text(text, pieces)),
        tail=_tail(chunk("", "stop"), base, include_usage, usage(prompt_tokens, count_words(text))),
        error_event=_error_event(base, meta, error_choice),
    )


def _tail(
    finish: bytes, base: JsonObject, include_usage: bool, totals: JsonObject
) -> tuple[bytes, ...]:
    if include_usage:
        return (finish, sse_event({**base, "choices": [], "usage": totals}), SSE_DONE)
    return (finish, SSE_DONE)


def _error_event(base: JsonObject, meta: ResponseMeta, choice: JsonObject) -> bytes:
    return sse_event(
        {
            **base,
            "provider": meta.provider,
            "error": upstream_error(meta.provider),
            "choices": [choice],
        }
    )


def embedding_vector(text: str) -> list[float]:
    """A deterministic unit-range vector derived from a hash of ``text``."""
    digest = hashlib.sha256(text.encode()).digest()
    return [round((byte - 127.5) / 127.5, 6) for byte in digest[:EMBEDDING_SIZE]]


def embeddings(model: str, inputs: Sequence[str], prompt_tokens: int) -> JsonObject:
    """An embeddings ``list`` with one vector per input."""
    return {
        "object": "list",
        "model": model,
        "data": [
            {"object": "embedding", "index": i, "embedding": embedding_vector(text)}
            for i, text in enumerate(inputs)
        ],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }


def model_list(owner: str) -> JsonObject:
    """The ``GET /v1/models`` body."""
    return {
        "object": "list",
        "data": [
            {"id": model, "object": "model", "created": 1700000000, "owned_by": owner}
            for model in MODEL_IDS
        ],
    }
