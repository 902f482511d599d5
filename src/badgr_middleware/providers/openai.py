"""The OpenAI wire format: OpenAI itself, OpenRouter, Groq, Together, vLLM, Ollama, ...

Bodies and stream bytes pass through untouched. A stream is scanned only as far as needed:
event boundaries, error events (OpenRouter's mid-stream ``error`` chunks, vLLM's
``{"object": "error"}``), the finish reason, ``[DONE]`` and the usage chunk. Comments such
as ``: OPENROUTER PROCESSING`` are kept.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ..routing.outcomes import Failure, FailureKind
from ..routing.policy import classify_status, parse_retry_after
from ..sse import SSEScanner
from .base import UpstreamRequest
from .common import unfinished_stream

if TYPE_CHECKING:
    from ..config import ProviderConfig
    from ..routing.plan import RoutedRequest, Target

__all__ = ["OpenAICompatible", "OpenAIStream", "UpstreamRequest", "OPENROUTER_ONLY_FIELDS"]

# Request fields only OpenRouter understands. ``models``/``route``/``provider`` are honoured by
# badgr itself; the rest are forwarded to OpenRouter targets and removed for everyone else.
OPENROUTER_ONLY_FIELDS = (
    "models", "route", "provider", "transforms", "plugins", "usage", "debug", "trace",
    "session_id",
)
_OPENROUTER_ONLY = frozenset(OPENROUTER_ONLY_FIELDS)
_DONE = b"[DONE]"
_MODEL_VALUE = re.compile(rb'"model"\s*:\s*("(?:[^"\\]|\\.)*")')


class OpenAICompatible:
    """Builds upstream requests and reads upstream answers for one provider."""

    kind = "openai"
    prefill = False

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self.name = config.name
        self._key = config.api_key.reveal() if config.api_key else ""
        base = {"content-type": "application/json", "accept-encoding": "identity"}
        if self._key:
            base["authorization"] = f"Bearer {self._key}"
        base.update({k.lower(): v for k, v in config.headers.items()})
        self._json_headers = {**base, "accept": "application/json"}
        self._sse_headers = {**base, "accept": "text/event-stream"}

    def build_request(self, request: RoutedRequest, target: Target) -> UpstreamRequest:
        headers = self._sse_headers if request.stream else self._json_headers
        url = f"{self.config.base_url}/{request.route}"
        content = self._as_sent(request, target)
        if content is not None:
            return UpstreamRequest("POST", url, headers, content)
        body = dict(request.body)
        body["model"] = target.model
        for name in OPENROUTER_ONLY_FIELDS:
            body.pop(name, None)
        if self.config.openrouter:
            for name in OPENROUTER_ONLY_FIELDS[3:]:
                if name in request.body:
                    body[name] = request.body[name]
            if request.plan.openrouter_provider:
                body["provider"] = request.plan.openrouter_provider
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        return UpstreamRequest("POST", url, headers, content)

    @staticmethod
    def _as_sent(request: RoutedRequest, target: Target) -> bytes | None:
        """The client's own bytes with only the model's value replaced, when nothing else
        needs to change; None otherwise. Saves re-serialising a long conversation.

        The one unescaped ``"model"`` in a body without ``\\u`` escapes (which could spell
        another key "model") is the top-level key, whose value is a string.
        """
        raw = request.raw
        if (
            not raw
            or not isinstance(request.body.get("model"), str)
            or raw.count(b'"model"') != 1
            or b"\\u" in raw
            or not _OPENROUTER_ONLY.isdisjoint(request.body)
        ):
            return None
        found = _MODEL_VALUE.search(raw)
        if found is None:
            return None
        return b"".join((raw[: found.start(1)], _json_string(target.model), raw[found.end(1):]))

    def scrub(self, text: str) -> str:
        """Remove this provider's key from text an upstream wrote (some echo it back)."""
        if self._key and self._key in text:
            text = text.replace(self._key, "***")
        return text

    def classify_error(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> Failure:
        error = _error_object(body)
        message = self.scrub(str(error.get("message") or f"Upstream answered HTTP {status}."))
        code = _error_code(error)
        retry_after = parse_retry_after(headers, now)
        if retry_after is None:
            retry_after = _body_retry_after(error)
        param = error.get("param")
        return Failure(
            classify_status(status, code, message), status, message, code, retry_after,
            param if isinstance(param, str) else None,
        )

    def check_body(self, route: str, body: bytes) -> tuple[Failure | None, dict[str, Any] | None]:
        """Check a 200 body: a failure if it is not a usable answer, else its usage."""
        try:
            data = json.loads(body.decode("utf-8"))  # JSON between systems is UTF-8 (RFC 8259)
        except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
            return Failure(FailureKind.BAD_RESPONSE, 200, "The upstream answer was not JSON.",
                           "bad_response"), None
        if not isinstance(data, dict):
            return Failure(FailureKind.BAD_RESPONSE, 200, "The upstream answer was not an object.",
                           "bad_response"), None
        if data.get("error") or data.get("object") == "error":
            error = _error_object(body, data)
            message = self.scrub(str(error.get("message") or "The upstream returned an error."))
            return Failure(FailureKind.BAD_RESPONSE, 200, message,
                           _error_code(error) or "upstream_error"), None
        needed = "data" if route == "embeddings" else "choices"
        if not isinstance(data.get(needed), list):
            return Failure(FailureKind.BAD_RESPONSE, 200,
                           f"The upstream answer had no '{needed}'.", "bad_response"), None
        usage = data.get("usage")
        return None, usage if isinstance(usage, dict) else None

    def response_body(self, request: RoutedRequest, target: Target, body: bytes) -> bytes:
        return body  # passed through untouched

    def stream(self, request: RoutedRequest | None = None, target: Target | None = None
               ) -> OpenAIStream:
        return OpenAIStream(self.scrub)


class OpenAIStream:
    """Watches an OpenAI-format SSE stream while its bytes pass through.

    ``feed`` returns the bytes to forward (whole events only). ``started`` turns true at the
    first data event that is not an error; ``error`` is set by an in-band error event (kept
    in ``error_event`` for the relay, not in the returned bytes), by an event that is not a
    JSON object, or by :meth:`close` when the stream ended without ``[DONE]`` or a finish
    reason.
    """

    __slots__ = ("_scanner", "_scrub", "started", "finished", "error", "error_in_band",
                 "error_event", "usage", "_saw_finish")

    def __init__(self, scrub: Any = str) -> None:
        self._scanner = SSEScanner()
        self._scrub = scrub
        self.started = False
        self.finished = False
        self.error: Failure | None = None
        self.error_in_band = False
        self.error_event = b""
        self.usage: dict[str, Any] | None = None
        self._saw_finish = False

    def feed(self, chunk: bytes) -> bytes:
        out, parsed = self._scanner.feed_simple(chunk)
        if isinstance(parsed, int):  # ``parsed`` whole events, not yet read
            done = out.startswith(b"data: [DONE]") + out.count(b"\n\ndata: [DONE]")
            if (
                b"error" not in out and b'"usage"' not in out
                # every event a JSON object or [DONE]: else find the malformed one below
                # (counted at event starts: JSON strings cannot hold a raw blank line)
                and done + out.startswith(b"data: {") + out.count(b"\n\ndata: {") >= parsed
            ):
                self._feed_plain(out, parsed, done)
                return out
            parsed = SSEScanner().feed(out)[1]  # whole events: read them one by one
        events = parsed
        if not events:
            return out
        # One search of the whole chunk rules out what most events never carry, so a plain
        # content event costs a prefix check; the per-event checks run only when it might.
        may_error = b"error" in out
        may_finish = not self._saw_finish and (
            b'"finish_reason":"' in out or b'"finish_reason": "' in out
        )
        may_usage = b'"usage":{' in out or b'"usage": {' in out
        start = 0
        for event in events:
            data = event.data
            if data.startswith(_DONE):
                self.finished = True
                start = event.end
                continue
            if not data.lstrip().startswith(b"{"):
                self.error = Failure(
                    FailureKind.STREAM_MALFORMED if self.started else FailureKind.BAD_RESPONSE,
                    200, "The upstream sent a stream event that is not a JSON object.",
                    "stream_malformed")
                return out[:start]  # never forwarded: the client's parser would choke on it
            if may_error and (b'"error"' in data or event.event == b"error"):
                failure = self._error(data)
                if failure is not None:
                    self.error = failure
                    self.error_in_band = True
                    # the error event ends the stream and is kept for the relay to send or
                    # drop (a resumed stream); upstreams sometimes quote their key in it
                    self.error_event = self._scrub_bytes(out[start: event.end])
                    return out[:start]
            start = event.end
            if may_finish and not self._saw_finish and (
                b'"finish_reason":"' in data or b'"finish_reason": "' in data
            ):
                self._saw_finish = True
            if may_usage and (b'"usage":{' in data or b'"usage": {' in data):
                self._read_usage(data)
            self.started = True
        return out

    def _feed_plain(self, out: bytes, events: int, done: int) -> None:
        """:meth:`feed` for ``events`` whole ``data: `` events, ``done`` of them ``[DONE]``,
        with no error and no usage."""
        if done:
            self.finished = True
        if done < events:
            self.started = True
            if not self._saw_finish and (
                b'"finish_reason":"' in out or b'"finish_reason": "' in out
            ):
                self._saw_finish = True

    def _scrub_bytes(self, data: bytes) -> bytes:
        text = data.decode("utf-8", "replace")
        scrubbed = self._scrub(text)
        return data if scrubbed == text else scrubbed.encode()

    def close(self) -> bytes:
        """Call at the end of the upstream body; returns any bytes still to send."""
        if self.finished or self.error is not None:
            return b""
        if self._saw_finish:
            # some OpenAI-compatible servers end without [DONE]; the answer itself is whole
            self.finished = True
            return b"data: [DONE]\n\n"
        self.error = unfinished_stream()
        return b""

    def _error(self, data: bytes) -> Failure | None:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return None
        if not isinstance(obj, dict) or not (obj.get("error") or obj.get("object") == "error"):
            return None
        error = _error_object(b"", obj)
        kind = FailureKind.STREAM_ERROR if self.started else FailureKind.BAD_RESPONSE
        message = self._scrub(str(error.get("message") or "The upstream stream reported an error."))
        return Failure(kind, 200, message, _error_code(error) or "upstream_error")

    def _read_usage(self, data: bytes) -> None:
        try:
            obj = json.loads(data)
        except (ValueError, RecursionError):
            return
        if isinstance(obj, dict) and isinstance(obj.get("usage"), dict):
            self.usage = obj["usage"]


@functools.lru_cache(maxsize=1024)
def _json_string(text: str) -> bytes:
    return json.dumps(text, ensure_ascii=False).encode()


def _error_object(body: bytes, parsed: Any = None) -> dict[str, Any]:
    """Find the error object in any of the envelopes upstreams use (wire-formats §9.26)."""
    if parsed is None:
        try:
            parsed = json.loads(body) if body.strip() else None
        except (ValueError, RecursionError):
            return {"message": None}
    if isinstance(parsed, list) and parsed:
        parsed = parsed[0]
    if not isinstance(parsed, dict):
        return {}
    error = parsed.get("error")
    if isinstance(error, dict):
        return error
    if isinstance(error, str):
        return {"message": error}
    return parsed if parsed.get("object") == "error" or "message" in parsed else {}


def _error_code(error: Mapping[str, Any]) -> str | None:
    code = error.get("code")
    if isinstance(code, str) and code:
        return code
    metadata = error.get("metadata")
    if isinstance(metadata, dict) and isinstance(metadata.get("error_type"), str):
        return str(metadata["error_type"])
    kind = error.get("type")
    return kind if isinstance(kind, str) and kind in ("insufficient_quota",) else None


def _body_retry_after(error: Mapping[str, Any]) -> float | None:
    availability = error.get("availability")
    if isinstance(availability, dict):
        value = availability.get("retry_after")
        if isinstance(value, int | float) and value > 0:
            return float(value)
    return None
