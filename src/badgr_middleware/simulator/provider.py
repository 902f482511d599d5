"""The simulated provider: an ASGI app that behaves like an OpenAI-compatible API."""

from __future__ import annotations

import hmac
import itertools
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from . import payloads
from .continuation import continuation
from .exchange import ClientGone, Exchange, Receive, Scope, Send
from .faults import Fault, parse_fault
from .payloads import Headers, JsonObject, ResponseMeta
from .playback import Reply, play, send_json
from .ratelimit import RateLimited, RateWindow, go_duration, openai_headers

# the endpoints a rate limit counts (GET /v1/models is free, as on the real APIs)
_METERED = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/embeddings"})


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the simulated provider received it."""

    method: str
    path: str
    headers: Mapping[str, str]  # names lower-cased; repeated headers joined with ", "
    body: bytes
    json: Any | None  # the parsed body, or None if it was not JSON
    received_at: float  # time.monotonic() once the body was read
    fault: str | None  # the spec of the fault applied, if any


class _Refusal(Exception):
    """An error response decided before any fault applies (auth, routing, validation, rate
    limit)."""

    def __init__(self, status: int, body: JsonObject, headers: Headers | None = None) -> None:
        super().__init__(status)
        self.status = status
        self.body = body
        self.headers = headers or []


@dataclass
class _Queued:
    fault: Fault
    remaining: int
    model: str | None


class SimulatedProvider(RateLimited):
    """An ASGI app that behaves like an OpenAI-compatible API, with injectable faults.

    Serves ``POST /v1/chat/completions`` (stream and not, with tool calls),
    ``POST /v1/completions``, ``POST /v1/embeddings`` and ``GET /v1/models``. Faults are spec
    strings (see :func:`parse_fault` and docs/simulator.md), chosen per request in this order:
    a queued :meth:`fail_next` entry, a per-model fault, the ``x-sim-fault`` request header,
    the provider-wide fault. With ``rate_limit``, at most that many requests per
    ``rate_limit_window`` seconds are served, every answer reports the quota in
    ``x-ratelimit-*`` headers, and the rest get 429 before any fault applies. A conversation
    ending with a prefix of ``reply`` is answered with the rest of it (see
    docs/simulator.md, "Continuation"). Thread-safe: configure it from a test while it serves
    on another thread.
    """

    def __init__(
        self,
        name: str = "sim",
        *,
        fault: str | None = None,
        faults: Mapping[str, str] | None = None,
        api_key: str | None = None,
        reply: str | None = None,
        stream_chunks: int = 5,
        chunk_delay: float = 0.0,
        latency: float = 0.0,
        rate_limit: int | None = None,
        rate_limit_window: float = 60.0,
    ) -> None:
        if stream_chunks < 1:
            raise ValueError("stream_chunks must be at least 1")
        self._rate = RateWindow(rate_limit, rate_limit_window) if rate_limit is not None else None
        self.name = name
        self.api_key = api_key
        self.reply = reply if reply is not None else f"Hello from {name}."
        self.stream_chunks = stream_chunks
        self.chunk_delay = chunk_delay
        self.latency = latency
        self.requests: list[RecordedRequest] = []
        self.disconnects: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._disconnected = threading.Event()
        self._numbers = itertools.count(1)
        self._queue: list[_Queued] = []
        self._fault = parse_fault(fault) if fault else None
        self._model_faults = {model: parse_fault(spec) for model, spec in (faults or {}).items()}
        self._routes: dict[tuple[str, str], Callable[[Any, int, Headers], Reply]] = {
            ("POST", "/v1/chat/completions"): self._chat,
            ("POST", "/v1/completions"): self._completions,
            ("POST", "/v1/embeddings"): self._embeddings,
            ("GET", "/v1/models"): self._models,
        }

    def fail_next(self, spec: str, times: int = 1, *, model: str | None = None) -> None:
        """Apply ``spec`` to the next ``times`` requests (for ``model`` only, if given)."""
        if times < 1:
            raise ValueError("times must be at least 1")
        queued = _Queued(parse_fault(spec), times, model)
        with self._lock:
            self._queue.append(queued)

    def set_fault(self, spec: str | None, *, model: str | None = None) -> None:
        """Apply ``spec`` to every request (for ``model`` only, if given); None removes it."""
        fault = parse_fault(spec) if spec else None
        with self._lock:
            if model is None:
                self._fault = fault
            elif fault is None:
                self._model_faults.pop(model, None)
            else:
                self._model_faults[model] = fault

    def clear(self) -> None:
        """Drop every fault (including the constructor's), the request log and disconnects,
        and start a fresh rate-limit window (the limit itself stays)."""
        with self._lock:
            self._queue.clear()
            self._model_faults.clear()
            self._fault = None
            self.requests.clear()
            self.disconnects.clear()
            self._disconnected.clear()
            if self._rate is not None:
                self._rate.reset()

    def wait_for_disconnect(self, timeout: float) -> bool:
        """Block until a client has disconnected mid-response; False after ``timeout`` s."""
        return self._disconnected.wait(timeout)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI 3 entry point."""
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        body = await _read_body(receive)
        if body is None:
            return
        received_at = time.monotonic()
        headers = _headers(scope)
        number = next(self._numbers)
        common: Headers = [
            (b"x-sim-provider", self.name.encode()),
            (b"x-request-id", f"req_sim_{number}".encode()),
        ]
        data = _parse_json(body)
        path = _route_path(scope)
        fault: Fault | None = None
        outcome: Reply | _Refusal
        try:
            outcome = self._prepare(scope["method"], path, headers, data, number, common)
            from_header = _header_fault(headers.get("x-sim-fault", ""))
            if path in _METERED:
                outcome = self._count(outcome, received_at)
            fault = self._select_fault(outcome.model, from_header)
        except _Refusal as refusal:
            outcome = refusal
        record = RecordedRequest(
            method=scope["method"],
            path=scope["path"],
            headers=headers,
            body=body,
            json=data,
            received_at=received_at,
            fault=fault.spec if fault else None,
        )
        with self._lock:
            self.requests.append(record)
        async with Exchange(receive, send) as ex:
            try:
                await ex.pause(self.latency)
                if isinstance(outcome, _Refusal):
                    await send_json(ex, outcome.status, outcome.body, common + outcome.headers)
                else:
                    await play(ex, outcome, fault)
            except ClientGone:
                with self._lock:
                    self.disconnects.append(record)
                self._disconnected.set()

    def _prepare(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        data: Any,
        number: int,
        common: Headers,
    ) -> Reply:
        if self.api_key is not None:
            # Header values were decoded as latin-1; encoding back gives the bytes as sent.
            given = headers.get("authorization", "").encode("latin-1")
            if not hmac.compare_digest(given, f"Bearer {self.api_key}".encode()):
                raise _Refusal(
                    401,
                    payloads.openai_error(
                        "Incorrect API key provided",
                        "invalid_request_error",
                        code="invalid_api_key",
                    ),
                )
        handler = self._routes.get((method, path))
        if handler is None:
            raise _Refusal(
                404,
                payloads.openai_error(f"Invalid URL ({method} {path})", "invalid_request_error"),
            )
        return handler(data, number, common)

    def _count(self, reply: Reply, now: float) -> Reply:
        """Count ``reply``'s request against the rate limit: its headers added, or a 429."""
        with self._lock:
            if self._rate is None:
                return reply
            state = self._rate.take(now, input_tokens=reply.prompt_tokens)
        quota = openai_headers(state)
        if state.allowed:
            return replace(reply, headers=reply.headers + quota)
        message = (
            f"Rate limit reached for {reply.model} on requests per {state.window:g}s "
            f"(simulated): Limit {state.limit}, Used {state.limit}, Requested 1. "
            f"Please try again in {go_duration(state.reset_in)}."
        )
        raise _Refusal(
            429,
            payloads.openai_error(message, "requests", code="rate_limit_exceeded"),
            [*quota, (b"retry-after", str(state.retry_after).encode())],
        )

    def _select_fault(self, model: str | None, from_header: Fault | None) -> Fault | None:
        with self._lock:
            for queued in self._queue:
                if queued.model is None or queued.model == model:
                    queued.remaining -= 1
                    if not queued.remaining:
                        self._queue.remove(queued)
                    return queued.fault
            if model is not None and model in self._model_faults:
                return self._model_faults[model]
            return from_header or self._fault

    def _reply(
        self,
        common: Headers,
        model: str | None,
        prompt_tokens: int,
        body: JsonObject | None = None,
        stream: payloads.StreamPlan | None = None,
    ) -> Reply:
        return Reply(
            headers=common,
            body=payloads.encode_json(body) if body is not None else b"",
            stream=stream,
            model=model,
            prompt_tokens=prompt_tokens,
            provider=self.name,
            chunk_delay=self.chunk_delay,
        )

    def _chat(self, data: Any, number: int, common: Headers) -> Reply:
        model = _require_model(data)
        meta = ResponseMeta(f"chatcmpl-sim-{number}", int(time.time()), model, self.name)
        prompt_tokens = payloads.count_words(data.get("messages"))
        rest = continuation(self.reply, _turns(data.get("messages")), assistant="assistant")
        # a continuation is the rest of a text answer, even when tools are offered
        tool_name = _tool_to_call(data) if rest is None else None
        text = self.reply if rest is None else rest
        if data.get("stream") is True:
            plan = payloads.chat_stream(
                meta,
                text=text,
                tool_name=tool_name,
                prompt_tokens=prompt_tokens,
                pieces=self.stream_chunks,
                include_usage=_include_usage(data),
            )
            return self._reply(common, model, prompt_tokens, stream=plan)
        body = payloads.chat_completion(
            meta, text=text, tool_name=tool_name, prompt_tokens=prompt_tokens
        )
        return self._reply(common, model, prompt_tokens, body)

    def _completions(self, data: Any, number: int, common: Headers) -> Reply:
        model = _require_model(data)
        meta = ResponseMeta(f"cmpl-sim-{number}", int(time.time()), model, self.name)
        prompt_tokens = payloads.count_words(data.get("prompt"))
        if data.get("stream") is True:
            plan = payloads.text_completion_stream(
                meta,
                text=self.reply,
                prompt_tokens=prompt_tokens,
                pieces=self.stream_chunks,
                include_usage=_include_usage(data),
            )
            return self._reply(common, model, prompt_tokens, stream=plan)
        body = payloads.text_completion(meta, text=self.reply, prompt_tokens=prompt_tokens)
        return self._reply(common, model, prompt_tokens, body)

    def _embeddings(self, data: Any, number: int, common: Headers) -> Reply:
        model = _require_model(data)
        inputs = _embedding_inputs(data.get("input"))
        prompt_tokens = payloads.count_words(inputs)
        body = payloads.embeddings(model, inputs, prompt_tokens)
        return self._reply(common, model, prompt_tokens, body)

    def _models(self, data: Any, number: int, common: Headers) -> Reply:
        return self._reply(common, None, 0, payloads.model_list(self.name))


def _header_fault(header: str) -> Fault | None:
    """The fault an ``x-sim-fault`` header asks for; a 400 if it does not parse."""
    try:
        return parse_fault(header) if header.strip() else None
    except ValueError as error:
        raise _Refusal(
            400, payloads.openai_error(str(error), "invalid_request_error", param="x-sim-fault")
        ) from None


def _turns(messages: Any) -> list[tuple[str, str]]:
    """``(role, text)`` of each chat message; content parts other than text are skipped."""
    if not isinstance(messages, list):
        return []
    turns: list[tuple[str, str]] = []
    for message in messages:
        if not isinstance(message, dict):
            turns.append(("", ""))
            continue
        content = message.get("content")
        if isinstance(content, list):
            content = "".join(
                part["text"]
                for part in content
                if isinstance(part, dict)
                and part.get("type") == "text"
                and isinstance(part.get("text"), str)
            )
        turns.append((str(message.get("role", "")), content if isinstance(content, str) else ""))
    return turns


def _bad_request(message: str, param: str | None = None) -> _Refusal:
    return _Refusal(400, payloads.openai_error(message, "invalid_request_error", param=param))


def _require_model(data: Any) -> str:
    if not isinstance(data, dict):
        raise _bad_request("We could not parse the JSON body of your request.")
    model = data.get("model")
    if not isinstance(model, str) or not model:
        raise _bad_request("you must provide a model parameter", "model")
    return model


def _include_usage(data: JsonObject) -> bool:
    options = data.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


def _tool_to_call(data: JsonObject) -> str | None:
    """The function the simulated model calls: the named tool_choice, else the first tool."""
    tools = data.get("tools")
    choice = data.get("tool_choice")
    if not isinstance(tools, list) or not tools or choice == "none":
        return None
    if isinstance(choice, dict) and isinstance(choice.get("function"), dict):
        named = choice["function"].get("name")
        if isinstance(named, str):
            return named
    first = tools[0] if isinstance(tools[0], dict) else {}
    function = first.get("function")
    name = function.get("name") if isinstance(function, dict) else first.get("name")
    return name if isinstance(name, str) else "tool"


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(item, int) for item in value):
            return [json.dumps(value)]  # one input given as token ids
        if all(isinstance(item, str | list) for item in value):
            return [item if isinstance(item, str) else json.dumps(item) for item in value]
    raise _bad_request("'input' must be a string, a list of strings or token arrays", "input")


def _parse_json(body: bytes) -> Any | None:
    try:
        return json.loads(body)
    except ValueError:
        return None


def _headers(scope: Scope) -> dict[str, str]:
    headers: dict[str, str] = {}
    for raw_name, raw_value in scope.get("headers", []):
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return headers


def _route_path(scope: Scope) -> str:
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root) :]
    return path.rstrip("/") or "/"


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body, or None if the client left while sending it."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
