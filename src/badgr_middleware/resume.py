"""Stream resume: a stream that broke mid-answer continues on another target. No I/O.

Three pieces, used by both drivers:

* :class:`SentLog` reads the OpenAI chunks the client has been sent (only for requests that
  may resume) and keeps the answer's text, whether a tool call started, and the first
  chunk's ``id``/``model``/``created``.
* :func:`continuation_body` is the request that asks the next target to go on: the original
  messages, the answer so far as an assistant message, and (for wires without a native
  prefill) a short instruction to continue it.
* :class:`Continuation` rewrites the continuation's chunks so that they read as the rest of
  the first answer: the same ``id``/``model``/``created``, no second role chunk, no repeated
  whitespace, the usage of both parts merged, and a ``badgr`` field on the final chunks
  saying where the answer was resumed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .pricing import estimate_tokens
from .sse import SSEScanner, encode_event

__all__ = [
    "CONTINUE_INSTRUCTION",
    "Continuation",
    "SentLog",
    "continuation_body",
    "resume_marker",
]

CONTINUE_INSTRUCTION = (
    "Your previous answer was cut off. Continue it from exactly where it stopped: do not "
    "repeat anything already written and do not add any preamble."
)
_DONE = b"[DONE]"


class SentLog:
    """What the client has received of one streamed chat completion (``n`` = 1).

    :meth:`resumable_text` is the answer so far when it can be continued, else None: after a
    tool call started (its arguments cannot be continued reliably), with several choices,
    or once more than ``max_tokens`` (estimated) were sent.
    """

    __slots__ = ("_scanner", "_parts", "_chars", "_limit", "tool_call", "several", "first")

    def __init__(self, max_tokens: int) -> None:
        self._scanner = SSEScanner()
        self._parts: list[str] = []
        self._chars = 0
        self._limit = max_tokens * 4  # estimate_tokens counts four characters a token
        self.tool_call = False
        self.several = False
        self.first: dict[str, Any] | None = None  # id, model, created of the first chunk

    def feed(self, sent: bytes) -> None:
        if self._chars > self._limit:
            return  # past the limit: it cannot be resumed, so stop reading
        for event in self._scanner.feed(sent)[1]:
            chunk = _json_object(event.data)
            if chunk is None:
                continue
            if self.first is None:
                self.first = {k: chunk[k] for k in ("id", "model", "created") if k in chunk}
            for choice in chunk.get("choices") or ():
                if not isinstance(choice, dict):
                    continue
                if choice.get("index", 0) != 0:
                    self.several = True
                delta = choice.get("delta")
                if not isinstance(delta, dict):
                    continue
                if delta.get("tool_calls") or delta.get("function_call"):
                    self.tool_call = True
                content = delta.get("content")
                if isinstance(content, str) and content:
                    self._parts.append(content)
                    self._chars += len(content)

    @property
    def text(self) -> str:
        return "".join(self._parts)

    def why_not(self) -> str | None:
        """Why this answer cannot be resumed, or None when it can."""
        if self.tool_call:
            return "the stream broke inside a tool call, which cannot be resumed"
        if self.several:
            return "a stream with several choices cannot be resumed"
        if self._chars > self._limit:
            return "more of the answer was sent than the resume policy allows"
        return None


def continuation_body(body: Mapping[str, Any], text: str, *, prefill: bool) -> dict[str, Any]:
    """The request body that asks a target to continue ``text``.

    ``prefill``: the wire continues a final assistant message natively (Anthropic), so no
    instruction is added; its API rejects trailing whitespace there, so that is cut (and
    :class:`Continuation` drops it again from the answer if the model repeats it).
    """
    messages = [m for m in body.get("messages") or () if isinstance(m, Mapping)]
    if prefill:
        messages.append({"role": "assistant", "content": text.rstrip()})
    else:
        messages.append({"role": "assistant", "content": text})
        messages.append({"role": "user", "content": CONTINUE_INSTRUCTION})
    out = dict(body)
    out["messages"] = messages
    if out.get("n") is not None:
        out["n"] = 1
    for name in ("max_completion_tokens", "max_tokens"):  # the rest of the budget only
        limit = out.get(name)
        if isinstance(limit, int) and not isinstance(limit, bool):
            out[name] = max(1, limit - estimate_tokens(text))
    return out


def resume_marker(from_target: str, to_target: str, sent_tokens: int) -> bytes:
    """The SSE comment sent where the answer continues (clients ignore comments)."""
    return (f": badgr-resumed from={from_target} to={to_target} "
            f"sent_tokens={sent_tokens}\n\n").encode()


class Continuation:
    """Rewrites a continuation's OpenAI chunks into the rest of the first answer."""

    __slots__ = ("_scanner", "_first", "_trailing", "_sent_tokens", "_note", "_began")

    def __init__(self, sent: SentLog, note: dict[str, Any], sent_tokens: int) -> None:
        self._scanner = SSEScanner()
        self._first = sent.first or {}
        text = sent.text
        self._trailing = len(text) - len(text.rstrip())  # whitespace the client already has
        self._sent_tokens = sent_tokens
        self._note = note  # the "badgr" field of the final chunks
        self._began = False  # the first content of the continuation has been sent

    def feed(self, out: bytes) -> bytes:
        if not out:
            return out
        events = self._scanner.feed(out)[1]
        rewritten: list[bytes] = []
        for event in events:
            if event.data.startswith(_DONE):
                rewritten.append(encode_event(event.data))
                continue
            chunk = _json_object(event.data)
            if chunk is None or "error" in chunk:
                rewritten.append(encode_event(event.data))
                continue
            if self._rewrite(chunk):
                rewritten.append(encode_event(json.dumps(
                    chunk, ensure_ascii=False, separators=(",", ":")).encode()))
        return b"".join(rewritten)

    def _rewrite(self, chunk: dict[str, Any]) -> bool:
        """Rewrite one chunk in place; False drops it (the continuation's role chunk)."""
        chunk.update(self._first)
        final = False
        empty = True
        for choice in chunk.get("choices") or ():
            if not isinstance(choice, dict):
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                delta.pop("role", None)
                content = delta.get("content")
                if isinstance(content, str) and content and not self._began:
                    if self._trailing:
                        cut = min(len(content) - len(content.lstrip()), self._trailing)
                        self._trailing -= cut
                        content = delta["content"] = content[cut:]
                    self._began = bool(content)
                empty = empty and not any(delta.values())
            if choice.get("finish_reason"):
                final, empty = True, False
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            completion = usage.get("completion_tokens")
            if isinstance(completion, int):
                usage["completion_tokens"] = completion + self._sent_tokens
                if isinstance(usage.get("total_tokens"), int):
                    usage["total_tokens"] += self._sent_tokens
            final, empty = True, False
        if final:
            chunk["badgr"] = self._note
        return not (empty and chunk.get("choices"))


def _json_object(data: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(data)
    except (ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None
