"""A fake Anthropic Messages API that validates requests the way the real one does.

``SimulatedAnthropic`` serves ``POST /v1/messages`` (plain and streamed, text and tool use)
over any ASGI server (``SimulatedServer``). It refuses what the real API refuses: a missing
``x-api-key`` or ``anthropic-version``, a missing ``max_tokens``, unknown body fields, roles
that do not alternate starting with ``user``, empty text blocks, and ``tool_result`` blocks
that do not answer (first, and all of) the ``tool_use`` blocks of the assistant turn before.
Faults (docs/simulator.md) make it answer 429 with ``retry-after`` and ``anthropic-ratelimit-*``
headers, 529 ``overloaded_error``, an ``error`` event mid-stream, or a cut connection. With a
``rate_limit`` it reports its quota in ``anthropic-ratelimit-*`` headers on every answer and
refuses requests beyond it. A final assistant turn that starts the reply (a prefill) is
answered with the rest of the reply.

The fault queue, rate limit, request log and ASGI plumbing live in :class:`NativeSimulator`,
which the fake Gemini API shares.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from . import payloads
from .continuation import continuation
from .exchange import ClientGone, Exchange, Receive, Scope, Send, SimulatedConnectionAbort
from .faults import Fault, parse_fault
from .payloads import Headers
from .provider import RecordedRequest, _headers, _lifespan, _read_body, _route_path
from .ratelimit import RateLimited, RateState, RateWindow, anthropic_headers

__all__ = ["NativeSimulator", "SimulatedAnthropic", "SimulatedResponse"]

JSON_HEADERS: Headers = [(b"content-type", b"application/json")]
SSE_HEADERS: Headers = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
]
# fault kinds a native fake can play
_FAULT_KINDS = frozenset({"status", "midstream-error", "cut", "slow", "hang"})


@dataclass
class SimulatedResponse:
    """A prepared answer: a JSON body, or SSE events split where stream faults cut in.

    ``head`` precedes the events that carry content, ``content`` are those events (a fault
    count ``N`` keeps the first ``N``), ``tail`` ends a healthy stream.
    """

    status: int = 200
    headers: Headers = field(default_factory=list)
    body: Any = None
    head: list[bytes] = field(default_factory=list)
    content: list[bytes] = field(default_factory=list)
    tail: list[bytes] = field(default_factory=list)
    stream: bool = False
    input_tokens: int = 0  # what the answer counts against a rate limit's token budgets
    output_tokens: int = 0


class Refusal(Exception):
    """An error the request earns before any fault applies (validation, auth, routing)."""

    def __init__(self, status: int, body: Any, headers: Headers | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or []


@dataclass
class _Queued:
    fault: Fault
    remaining: int


class NativeSimulator(RateLimited):
    """Shared machinery of the native fakes: faults, request log, ASGI entry point.

    Faults per request, first match wins: a queued :meth:`fail_next` entry, the
    ``x-sim-fault`` request header, the fault set with :meth:`set_fault`. A request the rate
    limit refuses gets its 429 and consumes no fault. Thread-safe.
    """

    def __init__(self, name: str, *, api_key: str | None, reply: str | None,
                 stream_pieces: int, chunk_delay: float, fault: str | None,
                 rate_limit: int | None = None, rate_limit_window: float = 60.0) -> None:
        if stream_pieces < 1:
            raise ValueError("stream_pieces must be at least 1")
        self._rate = RateWindow(rate_limit, rate_limit_window) if rate_limit is not None else None
        self.name = name
        self.api_key = api_key
        self.reply = reply if reply is not None else f"Hello from {name}."
        self.stream_pieces = stream_pieces
        self.chunk_delay = chunk_delay
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._numbers = itertools.count(1)
        self._queue: list[_Queued] = []
        self._fault = self._parse(fault) if fault else None

    # -- configuration ----------------------------------------------------------------------

    def fail_next(self, spec: str, times: int = 1) -> None:
        """Apply ``spec`` to the next ``times`` requests."""
        if times < 1:
            raise ValueError("times must be at least 1")
        queued = _Queued(self._parse(spec), times)
        with self._lock:
            self._queue.append(queued)

    def set_fault(self, spec: str | None) -> None:
        """Apply ``spec`` to every request; None removes it."""
        fault = self._parse(spec) if spec else None
        with self._lock:
            self._fault = fault

    def clear(self) -> None:
        """Drop every fault and the request log, and start a fresh rate-limit window."""
        with self._lock:
            self._queue.clear()
            self._fault = None
            self.requests.clear()
            if self._rate is not None:
                self._rate.reset()

    @staticmethod
    def _parse(spec: str) -> Fault:
        fault = parse_fault(spec)
        if fault.kind not in _FAULT_KINDS:
            raise ValueError(f"fault {spec!r} is not supported by the native fakes "
                             f"(use a status, midstream-error=N, cut=N, slow=S or hang)")
        return fault

    # -- what subclasses provide --------------------------------------------------------------

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str],
               data: Any, number: int) -> SimulatedResponse:
        raise NotImplementedError

    def fault_response(self, fault: Fault, number: int, stream: bool) -> SimulatedResponse:
        """The error answer of a status fault."""
        raise NotImplementedError

    def error_event(self) -> bytes:
        """The in-band error a ``midstream-error`` fault sends."""
        raise NotImplementedError

    def rate_limited(self, state: RateState, number: int) -> SimulatedResponse:
        """The 429 for a request beyond the rate limit."""
        raise NotImplementedError

    def quota_headers(self, state: RateState, now: float) -> Headers:
        """The headers reporting the rate limit on every answer (``now``: Unix time)."""
        return []

    # -- ASGI -------------------------------------------------------------------------------

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if body is None:
            return
        headers = _headers(scope)
        number = next(self._numbers)
        try:
            data = json.loads(body) if body else None
        except ValueError:
            data = None
        received_at = time.monotonic()
        fault: Fault | None = None
        quota: Headers = []
        query = scope.get("query_string", b"").decode("latin-1")
        try:
            response = self.handle(scope["method"], _route_path(scope), query, headers, data,
                                   number)
            from_header = self._header_fault(headers.get("x-sim-fault", ""))
            state = self._take(response, received_at)
            if state is not None:
                quota = self.quota_headers(state, time.time())
            if state is not None and not state.allowed:
                response = self.rate_limited(state, number)
            else:
                fault = self._select(from_header)
        except Refusal as refusal:
            response = SimulatedResponse(refusal.status, refusal.headers, refusal.body)
        record = RecordedRequest(scope["method"], scope["path"] + (f"?{query}" if query else ""),
                                 headers, body, data, received_at,
                                 fault.spec if fault else None)
        with self._lock:
            self.requests.append(record)
        async with Exchange(receive, send) as ex:
            with contextlib.suppress(ClientGone):
                await self._play(ex, response, fault, number, quota)

    def _take(self, response: SimulatedResponse, now: float) -> RateState | None:
        """Count the request against the rate limit, if there is one."""
        with self._lock:
            if self._rate is None:
                return None
            return self._rate.take(now, input_tokens=response.input_tokens,
                                   output_tokens=response.output_tokens)

    def _header_fault(self, header: str) -> Fault | None:
        try:
            return self._parse(header) if header.strip() else None
        except ValueError as error:
            raise Refusal(400, self.bad_request(str(error))) from None

    def _select(self, from_header: Fault | None) -> Fault | None:
        with self._lock:
            if self._queue:
                queued = self._queue[0]
                queued.remaining -= 1
                if not queued.remaining:
                    self._queue.pop(0)
                return queued.fault
            return from_header or self._fault

    def bad_request(self, message: str) -> Any:
        return {"error": {"message": message}}

    async def _play(self, ex: Exchange, response: SimulatedResponse, fault: Fault | None,
                    number: int, quota: Headers) -> None:
        if fault is not None and fault.kind == "hang":
            await ex.pause(math.inf)
        if fault is not None and fault.kind == "slow":
            await ex.pause(fault.seconds)
            fault = None
        if fault is not None and fault.kind == "status":
            response = self.fault_response(fault, number, response.stream)
            fault = None
        # the real quota replaces the made-up one a 429 fault reports
        names = {name for name, _ in quota}
        headers = [*(h for h in response.headers if h[0] not in names), *quota]
        if not response.stream or response.status != 200:
            body = payloads.encode_json(response.body)
            await ex.start(response.status, [*headers, *JSON_HEADERS,
                                             (b"content-length", str(len(body)).encode())])
            await ex.body(body, more=False)
            return
        await ex.start(200, [*headers, *SSE_HEADERS])
        events = [*response.head, *response.content, *response.tail]
        if fault is not None:  # midstream-error=N or cut=N
            events = [*response.head, *response.content[: fault.count]]
        for i, event in enumerate(events):
            if i:
                await ex.pause(self.chunk_delay)
            await ex.body(event)
        if fault is not None and fault.kind == "cut":
            raise SimulatedConnectionAbort(f"simulated fault {fault.spec!r}")
        if fault is not None:
            await ex.pause(self.chunk_delay)
            await ex.body(self.error_event())
        await ex.body(b"", more=False)


# -- Anthropic --------------------------------------------------------------------------------

_TOP_LEVEL = frozenset({
    "model", "max_tokens", "messages", "system", "stop_sequences", "temperature", "top_p",
    "top_k", "tools", "tool_choice", "metadata", "stream", "thinking", "service_tier",
})
_IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
_TOOL_NAME = re.compile(r"[a-zA-Z0-9_-]{1,128}")
_ERROR_TYPES = {
    400: "invalid_request_error", 401: "authentication_error", 402: "billing_error",
    403: "permission_error", 404: "not_found_error", 413: "request_too_large",
    429: "rate_limit_error", 500: "api_error", 504: "timeout_error", 529: "overloaded_error",
}
DEFAULT_TOOL_INPUT: dict[str, Any] = {"city": "Paris", "unit": "celsius"}


def anthropic_error(kind: str, message: str, **extra: Any) -> dict[str, Any]:
    return {"type": "error", "error": {"type": kind, "message": message, **extra},
            "request_id": "req_sim"}


def _invalid(message: str) -> Refusal:
    return Refusal(400, anthropic_error("invalid_request_error", message))


def sse(name: str, data: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


class SimulatedAnthropic(NativeSimulator):
    """A fake ``api.anthropic.com``: point an ``anthropic`` provider's ``base_url`` at
    ``server.base_url`` (``…/v1``).

    The answer is ``reply`` as text; or, when the last user turn carries tool results,
    ``"Tool results: <r1> | <r2>"``; or, when the conversation ends with an assistant turn
    starting ``reply`` (a prefill), optionally followed by one user turn, the rest of
    ``reply``; or, when the request has tools and ``tool_choice`` is not ``none``, a
    ``tool_use`` of the named tool (else the first) with input ``tool_input``, after a short
    text block when ``tool_choice`` is ``auto``. Streams split text and tool input into
    ``stream_pieces`` deltas and send a ``ping`` after the first block starts. With
    ``rate_limit``, at most that many requests per ``rate_limit_window`` seconds.
    """

    def __init__(self, name: str = "anthropic", *, api_key: str | None = None,
                 reply: str | None = None, tool_input: Mapping[str, Any] | None = None,
                 stream_pieces: int = 4, chunk_delay: float = 0.0,
                 fault: str | None = None, rate_limit: int | None = None,
                 rate_limit_window: float = 60.0) -> None:
        super().__init__(name, api_key=api_key, reply=reply, stream_pieces=stream_pieces,
                         chunk_delay=chunk_delay, fault=fault, rate_limit=rate_limit,
                         rate_limit_window=rate_limit_window)
        self.tool_input = dict(tool_input if tool_input is not None else DEFAULT_TOOL_INPUT)

    def bad_request(self, message: str) -> Any:
        return anthropic_error("invalid_request_error", message)

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str],
               data: Any, number: int) -> SimulatedResponse:
        if (method, path) != ("POST", "/v1/messages"):
            raise Refusal(404, anthropic_error("not_found_error", f"Not found: {method} {path}"))
        key = headers.get("x-api-key")
        if not key:
            raise Refusal(401, anthropic_error("authentication_error",
                                               "x-api-key header is required"))
        if self.api_key is not None and key != self.api_key:
            raise Refusal(401, anthropic_error("authentication_error", "invalid x-api-key"))
        if not headers.get("anthropic-version"):
            raise _invalid("anthropic-version: header is required")
        if not isinstance(data, dict):
            raise _invalid("The request body is not valid JSON.")
        validate_messages_request(data)
        return self._answer(data, number)

    # -- answers ----------------------------------------------------------------------------

    def _answer(self, data: dict[str, Any], number: int) -> SimulatedResponse:
        messages = data["messages"]
        last = messages[-1]
        results = [b for b in _blocks(last) if b.get("type") == "tool_result"] if (
            last["role"] == "user") else []
        tool = _tool_to_call(data)
        rest = continuation(self.reply, [(m["role"], _text(m)) for m in messages],
                            assistant="assistant")
        blocks: list[dict[str, Any]] = []
        if results:
            texts = [_result_text(b.get("content")) for b in results]
            blocks.append({"type": "text", "text": "Tool results: " + " | ".join(texts)})
        elif rest is not None:
            # like the real API, the answer does not repeat the prefill
            blocks.append({"type": "text", "text": rest})
        elif tool is not None:
            if (data.get("tool_choice") or {"type": "auto"}).get("type") == "auto":
                blocks.append({"type": "text", "text": "Let me check."})
            blocks.append({"type": "tool_use", "id": f"toolu_sim_{number}", "name": tool,
                           "input": dict(self.tool_input)})
        else:
            blocks.append({"type": "text", "text": self.reply})
        stop = "tool_use" if blocks[-1]["type"] == "tool_use" else "end_turn"
        usage = {"input_tokens": payloads.count_words(messages) + payloads.count_words(
            data.get("system") if isinstance(data.get("system"), str) else ""),
            "output_tokens": sum(payloads.count_words(b.get("text", "")) for b in blocks)
            + (5 if stop == "tool_use" else 0)}
        message = {"id": f"msg_sim_{number}", "type": "message", "role": "assistant",
                   "model": data["model"], "content": blocks, "stop_reason": stop,
                   "stop_sequence": None, "usage": usage}
        common: Headers = [(b"request-id", f"req_sim_{number}".encode()),
                           (b"x-sim-provider", self.name.encode())]
        tokens = {"input_tokens": usage["input_tokens"], "output_tokens": usage["output_tokens"]}
        if not data.get("stream"):
            return SimulatedResponse(200, common, message, **tokens)
        start = {**message, "content": [], "stop_reason": None,
                 "usage": {"input_tokens": usage["input_tokens"], "output_tokens": 1}}
        head = [sse("message_start", {"type": "message_start", "message": start})]
        content: list[bytes] = []
        for index, block in enumerate(blocks):
            content.extend(self._block_events(index, block))
            if index == 0:
                content.insert(1, sse("ping", {"type": "ping"}))
        tail = [
            sse("message_delta", {"type": "message_delta",
                                  "delta": {"stop_reason": stop, "stop_sequence": None},
                                  "usage": {"output_tokens": usage["output_tokens"]}}),
            sse("message_stop", {"type": "message_stop"}),
        ]
        return SimulatedResponse(200, common, None, head, content, tail, stream=True, **tokens)

    def _block_events(self, index: int, block: dict[str, Any]) -> list[bytes]:
        def delta(d: dict[str, Any]) -> bytes:
            return sse("content_block_delta",
                       {"type": "content_block_delta", "index": index, "delta": d})

        if block["type"] == "text":
            start = {"type": "text", "text": ""}
            deltas = [delta({"type": "text_delta", "text": piece})
                      for piece in payloads.split_text(block["text"], self.stream_pieces)]
        else:
            start = {**block, "input": {}}
            arguments = json.dumps(block["input"], ensure_ascii=False)
            deltas = [delta({"type": "input_json_delta", "partial_json": ""})] + [
                delta({"type": "input_json_delta", "partial_json": piece})
                for piece in payloads.split_text(arguments, self.stream_pieces)]
        return [
            sse("content_block_start",
                {"type": "content_block_start", "index": index, "content_block": start}),
            *deltas,
            sse("content_block_stop", {"type": "content_block_stop", "index": index}),
        ]

    # -- faults -----------------------------------------------------------------------------

    def fault_response(self, fault: Fault, number: int, stream: bool) -> SimulatedResponse:
        status = fault.status
        kind = _ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        headers: Headers = [(b"request-id", f"req_sim_{number}".encode())]
        now = time.time()
        extra: dict[str, Any] = {}
        message = {"overloaded_error": "Overloaded",
                   "rate_limit_error": "Number of requests has exceeded your rate limit."}.get(
            kind, f"Simulated {status}.")
        if status == 429 and fault.variant == "quota":
            extra["details"] = {"error_code": "enforced_spend_limit_reached"}
            message = "You have reached your specified API usage limits."
        elif status == 429:
            headers += payloads.retry_after_headers(fault, now)
            wait = fault.retry_after_value or 1.0
            reset = datetime.fromtimestamp(math.ceil(now + wait), UTC).strftime(
                "%Y-%m-%dT%H:%M:%SZ")
            for family in ("requests", "tokens"):
                headers += [
                    (f"anthropic-ratelimit-{family}-limit".encode(), b"50"),
                    (f"anthropic-ratelimit-{family}-remaining".encode(),
                     b"0" if family == "requests" else b"1000"),
                    (f"anthropic-ratelimit-{family}-reset".encode(), reset.encode()),
                ]
        else:
            headers += payloads.retry_after_headers(fault, now)
        if status == 400 and fault.variant == "context":
            message = "prompt is too long: 210000 tokens > 200000 maximum"
        return SimulatedResponse(status, headers, anthropic_error(kind, message, **extra))

    def error_event(self) -> bytes:
        return sse("error", {"type": "error", "error": {"type": "overloaded_error",
                                                        "message": "Overloaded"}})

    def quota_headers(self, state: RateState, now: float) -> Headers:
        return anthropic_headers(state, now)

    def rate_limited(self, state: RateState, number: int) -> SimulatedResponse:
        message = (f"This request would exceed the rate limit of {state.limit} requests per "
                   f"{state.window:g} seconds (simulated). You can see the response headers "
                   "for current usage. Please try again later.")
        headers: Headers = [(b"request-id", f"req_sim_{number}".encode()),
                            (b"retry-after", str(state.retry_after).encode())]
        return SimulatedResponse(429, headers, anthropic_error("rate_limit_error", message))


# -- validation -------------------------------------------------------------------------------


def validate_messages_request(data: dict[str, Any]) -> None:
    """Raise the 400 the real Messages API would give this body, if any."""
    for key in data:
        if key not in _TOP_LEVEL:
            raise _invalid(f"{key}: Extra inputs are not permitted")
    if not isinstance(data.get("model"), str) or not data["model"]:
        raise _invalid("model: Field required")
    max_tokens = data.get("max_tokens")
    if max_tokens is None:
        raise _invalid("max_tokens: Field required")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise _invalid("max_tokens: Input should be a valid integer greater than 0")
    for name, low, high in (("temperature", 0, 1), ("top_p", 0, 1)):
        value = data.get(name)
        if value is not None and (not isinstance(value, int | float) or not low <= value <= high):
            raise _invalid(f"{name}: Input should be between {low} and {high}")
    system = data.get("system")
    if system is not None and not isinstance(system, str) and not (
        isinstance(system, list) and all(_is_text_block(b) for b in system)
    ):
        raise _invalid("system: Input should be a string or a list of text blocks")
    stops = data.get("stop_sequences")
    if stops is not None and not (isinstance(stops, list) and all(isinstance(s, str)
                                                                 for s in stops)):
        raise _invalid("stop_sequences: Input should be a list of strings")
    metadata = data.get("metadata")
    if metadata is not None and (not isinstance(metadata, dict) or set(metadata) - {"user_id"}):
        raise _invalid("metadata: only user_id is permitted")
    tool_names = _validate_tools(data.get("tools"))
    _validate_tool_choice(data.get("tool_choice"), tool_names)
    _validate_messages(data.get("messages"))


def _is_text_block(block: Any) -> bool:
    return (isinstance(block, dict) and block.get("type") == "text"
            and isinstance(block.get("text"), str) and bool(block["text"]))


def _validate_tools(tools: Any) -> set[str]:
    if tools is None:
        return set()
    if not isinstance(tools, list):
        raise _invalid("tools: Input should be a valid list")
    names: set[str] = set()
    for i, tool in enumerate(tools):
        if not isinstance(tool, dict) or not isinstance(tool.get("name"), str) or (
            not _TOOL_NAME.fullmatch(tool["name"])
        ):
            raise _invalid(f"tools.{i}.name: String should match pattern "
                           "'^[a-zA-Z0-9_-]{1,128}$'")
        if set(tool) - {"name", "description", "input_schema", "cache_control", "type"}:
            raise _invalid(f"tools.{i}: Extra inputs are not permitted")
        schema = tool.get("input_schema")
        if not isinstance(schema, dict) or schema.get("type") != "object":
            raise _invalid(f"tools.{i}.input_schema: Input should be an object schema "
                           "with type 'object'")
        names.add(tool["name"])
    return names


def _validate_tool_choice(choice: Any, names: set[str]) -> None:
    if choice is None:
        return
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise _invalid("tool_choice: Input tag does not match any of the expected tags: "
                       "'auto', 'any', 'tool', 'none'")
    if not names:
        raise _invalid("tool_choice may only be specified while providing tools.")
    if choice["type"] == "tool" and choice.get("name") not in names:
        raise _invalid(f"tool_choice.name: tool {choice.get('name')!r} is not in tools")
    allowed = {"type", "name"} if choice["type"] == "tool" else {"type"}
    if choice["type"] != "none":
        allowed.add("disable_parallel_tool_use")
    if set(choice) - allowed:
        raise _invalid("tool_choice: Extra inputs are not permitted")


def _blocks(message: dict[str, Any]) -> list[dict[str, Any]]:
    content = message.get("content")
    if isinstance(content, str):
        return [{"type": "text", "text": content}]
    return content if isinstance(content, list) else []


def _validate_messages(messages: Any) -> None:
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages: at least one message is required")
    previous_uses: list[str] = []
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or set(message) - {"role", "content"}:
            raise _invalid(f"messages.{i}: only role and content are permitted")
        role = message.get("role")
        expected = "user" if i % 2 == 0 else "assistant"
        if role not in ("user", "assistant"):
            raise _invalid(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if role != expected:
            raise _invalid("messages: roles must alternate between \"user\" and \"assistant\", "
                           "starting with \"user\"")
        content = message.get("content")
        if isinstance(content, str):
            if not content:
                raise _invalid(f"messages.{i}: text content blocks must be non-empty")
        elif not isinstance(content, list) or not content:
            raise _invalid(f"messages.{i}.content: at least one content block is required")
        blocks = _blocks(message)
        for j, block in enumerate(blocks):
            _validate_block(block, role, f"messages.{i}.content.{j}")
        if role == "assistant" and i == len(messages) - 1:
            last = blocks[-1]
            if last.get("type") == "text" and last["text"] != last["text"].rstrip():
                raise _invalid("messages: final assistant content cannot end with trailing "
                               "whitespace")
        results = [b["tool_use_id"] for b in blocks if b.get("type") == "tool_result"]
        if role == "user":
            if previous_uses:
                missing = [u for u in previous_uses if u not in results]
                if missing:
                    raise _invalid(
                        f"messages.{i}: `tool_use` ids were found without `tool_result` "
                        f"blocks immediately after: {', '.join(missing)}. Each `tool_use` "
                        "block must have a corresponding `tool_result` block in the next "
                        "message.")
            unexpected = [r for r in results if r not in previous_uses]
            if unexpected:
                raise _invalid(
                    f"messages.{i}.content: unexpected `tool_use_id` found in `tool_result` "
                    f"blocks: {unexpected[0]}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message.")
            kinds = [b.get("type") for b in blocks]
            if results and kinds[: len(results)] != ["tool_result"] * len(results):
                raise _invalid(
                    f"messages.{i}: Did not find {len(results)} `tool_result` block(s) at the "
                    "beginning of this message. Messages following `tool_use` blocks must "
                    "begin with a matching number of `tool_result` blocks.")
            previous_uses = []
        else:
            previous_uses = [b["id"] for b in blocks if b.get("type") == "tool_use"]


def _validate_block(block: Any, role: str, where: str) -> None:
    if not isinstance(block, dict):
        raise _invalid(f"{where}: Input should be an object")
    kind = block.get("type")
    if kind == "text":
        if not _is_text_block(block):
            raise _invalid(f"{where}: text content blocks must be non-empty")
    elif kind == "image" and role == "user":
        source = block.get("source")
        if not isinstance(source, dict):
            raise _invalid(f"{where}.source: Field required")
        if source.get("type") == "base64":
            if source.get("media_type") not in _IMAGE_TYPES or not isinstance(
                source.get("data"), str
            ):
                raise _invalid(f"{where}.source: media_type must be one of image/jpeg, "
                               "image/png, image/gif, image/webp")
        elif source.get("type") != "url" or not str(source.get("url", "")).startswith(
            ("http://", "https://")
        ):
            raise _invalid(f"{where}.source: Input tag does not match 'base64' or 'url'")
    elif kind == "tool_use" and role == "assistant":
        if not (isinstance(block.get("id"), str) and block["id"] and isinstance(
            block.get("name"), str) and isinstance(block.get("input"), dict)):
            raise _invalid(f"{where}: tool_use needs id, name and an object input")
    elif kind == "tool_result" and role == "user":
        if not isinstance(block.get("tool_use_id"), str):
            raise _invalid(f"{where}.tool_use_id: Field required")
        content = block.get("content")
        if content is not None and not isinstance(content, str | list):
            raise _invalid(f"{where}.content: Input should be a string or a list")
    else:
        raise _invalid(f"{where}: block type {kind!r} is not allowed in a {role} message")


def _tool_to_call(data: dict[str, Any]) -> str | None:
    tools = data.get("tools")
    choice = data.get("tool_choice") or {"type": "auto"}
    if not tools or choice.get("type") == "none":
        return None
    if choice.get("type") == "tool":
        return str(choice["name"])
    return str(tools[0]["name"])


def _text(message: dict[str, Any]) -> str:
    """The text blocks of a message, joined."""
    return "".join(b["text"] for b in _blocks(message)
                   if b.get("type") == "text" and isinstance(b.get("text"), str))


def _result_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(b.get("text", "")) for b in content if isinstance(b, dict))
    return ""
