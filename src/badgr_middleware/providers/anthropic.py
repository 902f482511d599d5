"""The Anthropic Messages API, translated both ways (wire-formats.md §3-4).

Requests: system and developer messages become the top-level ``system``; consecutive messages
of one role are merged (``tool`` results join the user turn, first); the conversation starts
with a user turn; ``max_tokens`` is always sent; images, tools, ``tool_choice``,
``parallel_tool_calls``, ``stop``, ``temperature`` (clamped to 1), ``top_p``, ``user`` and
``response_format`` are mapped; other fields are dropped, or refused when dropping them would
change the answer (``n > 1``, audio, ``functions``). Only ``chat/completions`` is served.

Streams: a state machine from Anthropic's named events to ``chat.completion.chunk`` events
(see :class:`AnthropicStream`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from ..routing.outcomes import Failure, FailureKind
from ..routing.policy import classify_status, parse_retry_after
from ..sse import SSEEvent
from .base import UpstreamRequest
from .common import (
    DONE_EVENT,
    ChunkWriter,
    TranslatingStream,
    UnsupportedRequest,
    arguments_json,
    dumps,
    failed_mid_stream,
    image_url,
    include_usage,
    max_tokens_of,
    openai_usage,
    parse_arguments,
    parse_data_url,
    reject,
    stop_list,
    text_of,
)
from .openai import _error_object

if TYPE_CHECKING:
    from ..config import ProviderConfig
    from ..routing.plan import RoutedRequest, Target

__all__ = [
    "ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "JSON_TOOL",
    "AnthropicStream",
    "AnthropicWire",
]

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096  # every current Claude model can produce at least this many
JSON_TOOL = "json_response"  # the tool a json_schema response_format is forced through
JSON_PROMPT = "Respond with a single valid JSON object and nothing else."
PLACEHOLDER = "."  # a user turn Anthropic needs where the client sent none
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})

FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
    "compaction": "length",
    "model_context_window_exceeded": "length",
}
# error.type -> the HTTP status it stands for (used for the error event inside a stream)
ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}
_RATELIMIT_FAMILIES = ("requests", "tokens", "input-tokens", "output-tokens")


class AnthropicWire:
    """Builds Messages API requests and translates their answers into OpenAI shape."""

    kind = "anthropic"
    prefill = True  # a final assistant message is continued natively (stream resume)
    routes = frozenset({"chat/completions"})

    def __init__(self, config: ProviderConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.name = config.name
        self._clock = clock
        self._key = config.api_key.reveal() if config.api_key else ""
        base = {
            "content-type": "application/json",
            "accept-encoding": "identity",
            "anthropic-version": ANTHROPIC_VERSION,
        }
        if self._key:
            base["x-api-key"] = self._key
        base.update({k.lower(): v for k, v in config.headers.items()})
        self._json_headers = {**base, "accept": "application/json"}
        self._sse_headers = {**base, "accept": "text/event-stream"}

    # -- requests ---------------------------------------------------------------------------

    def build_request(self, request: RoutedRequest, target: Target) -> UpstreamRequest:
        if request.route not in self.routes:
            raise UnsupportedRequest(
                f"The Anthropic target {target.key} cannot serve /{request.route}; only "
                "/chat/completions.", code="unsupported_route")
        body = translate_request(request.body, target.model, stream=request.stream)
        headers = self._sse_headers if request.stream else self._json_headers
        return UpstreamRequest("POST", f"{self.config.base_url}/messages", headers, dumps(body))

    def scrub(self, text: str) -> str:
        if self._key and self._key in text:
            text = text.replace(self._key, "***")
        return text

    # -- answers ----------------------------------------------------------------------------

    def classify_error(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> Failure:
        error = _anthropic_error(body)
        message = self.scrub(str(error.get("message") or f"Upstream answered HTTP {status}."))
        code = _error_code(error)
        retry_after = parse_retry_after(headers, now)
        if retry_after is None and status == 429:
            retry_after = ratelimit_reset(headers, now)
        return Failure(classify_status(status, code, message), status, message, code, retry_after)

    def check_body(self, route: str, body: bytes) -> tuple[Failure | None, dict[str, Any] | None]:
        data = _load(body)
        if not isinstance(data, dict):
            return Failure(FailureKind.BAD_RESPONSE, 200, "The upstream answer was not JSON.",
                           "bad_response"), None
        if data.get("type") == "error" or "error" in data:
            error = _anthropic_error(body, data)
            message = self.scrub(str(error.get("message") or "The upstream returned an error."))
            return Failure(FailureKind.BAD_RESPONSE, 200, message,
                           _error_code(error) or "upstream_error"), None
        if not isinstance(data.get("content"), list):
            return Failure(FailureKind.BAD_RESPONSE, 200, "The upstream answer had no 'content'.",
                           "bad_response"), None
        usage = data.get("usage")
        return None, translate_usage(usage) if isinstance(usage, dict) else None

    def response_body(self, request: RoutedRequest, target: Target, body: bytes) -> bytes:
        data = json.loads(body)
        return dumps(translate_response(data, request.body, target.model, int(self._clock())))

    def stream(self, request: RoutedRequest, target: Target) -> AnthropicStream:
        return AnthropicStream(
            self.scrub, created=int(self._clock()), model=target.model,
            include_usage=include_usage(request.body), json_mode=json_tool_mode(request.body),
        )


# -- OpenAI -> Anthropic ------------------------------------------------------------------------


def translate_request(body: Mapping[str, Any], model: str, *, stream: bool) -> dict[str, Any]:
    """The Messages API body for an OpenAI chat request (raises UnsupportedRequest)."""
    reject(body, "Anthropic")
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        raise UnsupportedRequest("Anthropic returns one choice per request: 'n' must be 1.",
                                 param="n")
    system, messages = _messages(body.get("messages") or [])
    out: dict[str, Any] = {"model": model}
    tools = _tools(body)
    json_mode = json_tool_mode(body)
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and not json_mode:
        prompt = _json_prompt(response_format)
        if prompt:
            system.append(prompt)
    if system:
        out["system"] = "\n\n".join(system)
    out["messages"] = messages
    out["max_tokens"] = max_tokens_of(body) or DEFAULT_MAX_TOKENS
    stops = stop_list(body)
    if stops:
        out["stop_sequences"] = stops
    temperature = body.get("temperature")
    if isinstance(temperature, int | float) and not isinstance(temperature, bool):
        out["temperature"] = min(float(temperature), 1.0)
    for name in ("top_p", "top_k"):
        value = body.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool):
            out[name] = value
    if json_mode:
        assert isinstance(response_format, dict)
        spec = response_format["json_schema"]
        description = spec.get("description") or "Give the answer as this tool's input."
        tools = [{"name": JSON_TOOL, "description": description, "input_schema": spec["schema"]}]
        out["tools"] = tools
        out["tool_choice"] = {"type": "tool", "name": JSON_TOOL}
    elif tools:
        tools, choice = _tool_choice(body, tools)
        out["tools"] = tools
        if choice is not None:
            out["tool_choice"] = choice
    user = body.get("user")
    if isinstance(user, str) and user:
        out["metadata"] = {"user_id": user}
    if stream:
        out["stream"] = True
    return out


def json_tool_mode(body: Mapping[str, Any]) -> bool:
    """Whether a json_schema response_format is served through the forced JSON tool.

    Only when the schema describes an object (a tool's input must) and the client sent no
    tools of its own (forcing one tool would take theirs away); otherwise the schema goes
    into the system prompt.
    """
    response_format = body.get("response_format")
    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        return False
    spec = response_format.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    return isinstance(schema, dict) and schema.get("type") == "object" and not body.get("tools")


def _json_prompt(response_format: Mapping[str, Any]) -> str | None:
    kind = response_format.get("type")
    if kind == "json_object":
        return JSON_PROMPT
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        schema = spec.get("schema") if isinstance(spec, dict) else None
        if isinstance(schema, dict):
            return f"{JSON_PROMPT} It must match this JSON schema: {json.dumps(schema)}"
        return JSON_PROMPT
    return None


def _messages(raw: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(raw):
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = text_of(content)
            if text.strip():
                system.append(text)
            continue
        if role == "assistant":
            turn_role, blocks = "assistant", _assistant_blocks(message, i)
        elif role == "tool":
            turn_role, blocks = "user", [_tool_result(message)]
        elif role == "function":
            text = text_of(content)
            turn_role = "user"
            blocks = [{"type": "text", "text": f"{message.get('name') or 'function'}: {text}"}]
        else:
            turn_role, blocks = "user", _user_blocks(content, i)
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    for turn in turns:
        if turn["role"] == "user":
            # tool results must open the user turn that answers the tool calls
            turn["content"].sort(key=lambda block: block["type"] != "tool_result")
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": [{"type": "text", "text": PLACEHOLDER}]})
    last = turns[-1]
    if last["role"] == "assistant":
        # a final assistant turn is a prefill, and Anthropic refuses trailing whitespace there
        blocks = last["content"]
        if blocks and blocks[-1]["type"] == "text":
            blocks[-1]["text"] = blocks[-1]["text"].rstrip()
            if not blocks[-1]["text"]:
                blocks.pop()
        if not blocks:
            turns.pop()
    return system, turns


def _user_blocks(content: Any, i: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content if isinstance(content, list) else []):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if isinstance(text, str) and text:
                blocks.append({"type": "text", "text": text})
        elif kind == "image_url":
            blocks.append(_image(part, f"messages[{i}].content[{j}]"))
        else:
            raise UnsupportedRequest(
                f"Content parts of type {str(kind)[:40]!r} are not supported by Anthropic.",
                param=f"messages[{i}].content[{j}]", code="unsupported_content")
    return blocks


def _image(part: Mapping[str, Any], param: str) -> dict[str, Any]:
    url = image_url(part, param)
    data = parse_data_url(url)
    if data is not None:
        mime, payload = data
        if mime == "image/jpg":
            mime = "image/jpeg"
        if mime not in IMAGE_TYPES:
            raise UnsupportedRequest(
                f"Anthropic accepts JPEG, PNG, GIF and WebP images, not {mime[:40]!r}.",
                param=param, code="unsupported_content")
        return {"type": "image",
                "source": {"type": "base64", "media_type": mime, "data": payload}}
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    raise UnsupportedRequest("An image URL must be an http(s) URL or a base64 data URL.",
                             param=param, code="unsupported_content")


def _assistant_blocks(message: Mapping[str, Any], i: int) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    text = text_of(message.get("content"))
    if text:
        blocks.append({"type": "text", "text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict):
            continue
        function = call.get("function") if isinstance(call.get("function"), dict) else {}
        blocks.append({
            "type": "tool_use",
            "id": str(call.get("id") or ""),
            "name": str(function.get("name") or ""),
            "input": parse_arguments(function.get("arguments")),
        })
    return blocks


def _tool_result(message: Mapping[str, Any]) -> dict[str, Any]:
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": str(message.get("tool_call_id")
                                                                         or "")}
    text = text_of(message.get("content"))
    if text:
        block["content"] = text
    return block


def _tools(body: Mapping[str, Any]) -> list[dict[str, Any]]:
    raw = body.get("tools")
    tools: list[dict[str, Any]] = []
    for i, tool in enumerate(raw if isinstance(raw, list) else []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not (
            isinstance(function, dict) and isinstance(function.get("name"), str)
        ):
            raise UnsupportedRequest("Only function tools are supported by Anthropic.",
                                     param=f"tools[{i}]")
        spec: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            spec["description"] = function["description"]
        parameters = function.get("parameters")
        spec["input_schema"] = (
            parameters if isinstance(parameters, dict) else {"type": "object", "properties": {}}
        )
        tools.append(spec)
    return tools


def _tool_choice(
    body: Mapping[str, Any], tools: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    raw = body.get("tool_choice")
    choice: dict[str, Any] | None = None
    if raw == "auto":
        choice = {"type": "auto"}
    elif raw == "required":
        choice = {"type": "any"}
    elif raw == "none":
        choice = {"type": "none"}
    elif isinstance(raw, dict) and raw.get("type") == "function":
        function = raw.get("function")
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str):
            raise UnsupportedRequest("tool_choice.function needs a 'name'.",
                                     param="tool_choice")
        choice = {"type": "tool", "name": name}
    elif isinstance(raw, dict) and raw.get("type") == "allowed_tools":
        allowed = raw.get("allowed_tools") if isinstance(raw.get("allowed_tools"), dict) else {}
        names = {
            (t.get("function") or {}).get("name") if isinstance(t, dict) else None
            for t in allowed.get("tools") or []
        }
        tools = [t for t in tools if t["name"] in names]
        choice = {"type": "any" if allowed.get("mode") == "required" else "auto"}
    elif raw is not None:
        raise UnsupportedRequest("Unsupported 'tool_choice'.", param="tool_choice")
    if body.get("parallel_tool_calls") is False and (choice is None or choice["type"] != "none"):
        choice = {**(choice or {"type": "auto"}), "disable_parallel_tool_use": True}
    return tools, choice


# -- Anthropic -> OpenAI ------------------------------------------------------------------------


def translate_response(
    data: Mapping[str, Any], request: Mapping[str, Any], model: str, created: int
) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for a Messages API answer."""
    json_mode = json_tool_mode(request)
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in data.get("content") or []:
        if not isinstance(block, dict):
            continue
        if block.get("type") == "text":
            texts.append(str(block.get("text") or ""))
        elif block.get("type") == "tool_use":
            if json_mode and block.get("name") == JSON_TOOL:
                texts.append(arguments_json(block.get("input")))
                continue
            calls.append({
                "id": block.get("id"),
                "type": "function",
                "function": {"name": block.get("name"),
                             "arguments": arguments_json(block.get("input"))},
            })
    message: dict[str, Any] = {
        "role": "assistant",
        "content": "".join(texts) if texts else None,
        "refusal": None,
    }
    if calls:
        message["tool_calls"] = calls
    body: dict[str, Any] = {
        "id": f"chatcmpl-{data.get('id') or 'anthropic'}",
        "object": "chat.completion",
        "created": created,
        "model": data.get("model") or model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": None,
            "finish_reason": finish_reason(data.get("stop_reason"), bool(calls)),
        }],
    }
    usage = data.get("usage")
    if isinstance(usage, dict):
        body["usage"] = translate_usage(usage)
    return body


def finish_reason(stop_reason: Any, called: bool) -> str:
    reason = FINISH_REASONS.get(str(stop_reason), "stop")
    if reason == "tool_calls" and not called:
        return "stop"  # the forced JSON tool: its input became the content
    if called and reason == "stop":
        return "tool_calls"
    return reason


def translate_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    def count(name: str) -> int:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else 0

    cached = usage.get("cache_read_input_tokens")
    prompt = count("input_tokens") + count("cache_creation_input_tokens") + count(
        "cache_read_input_tokens")
    return openai_usage(prompt, count("output_tokens"),
                        cached=cached if isinstance(cached, int) else None)


# -- errors -------------------------------------------------------------------------------------


def _load(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def _anthropic_error(body: bytes, parsed: Any = None) -> dict[str, Any]:
    """The ``error`` object of an Anthropic envelope, or of any other envelope."""
    data = _load(body) if parsed is None else parsed
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return data["error"]
    return _error_object(body, data) if data is not None else {}


def _error_code(error: Mapping[str, Any]) -> str | None:
    details = error.get("details")
    if isinstance(details, dict) and isinstance(details.get("error_code"), str):
        return str(details["error_code"])  # e.g. enforced_spend_limit_reached: a quota stop
    for name in ("type", "code"):
        value = error.get(name)
        if isinstance(value, str) and value:
            return value
    return None


def ratelimit_reset(headers: Mapping[str, str], now: float) -> float | None:
    """Seconds until the exhausted ``anthropic-ratelimit-*`` bucket resets (RFC 3339 times)."""
    waits: list[float] = []
    for family in _RATELIMIT_FAMILIES:
        remaining = headers.get(f"anthropic-ratelimit-{family}-remaining")
        reset = headers.get(f"anthropic-ratelimit-{family}-reset")
        if reset is None or remaining is None or remaining.strip() != "0":
            continue
        try:
            at = datetime.fromisoformat(reset.strip().replace("Z", "+00:00")).timestamp()
        except ValueError:
            continue
        if at > now:
            waits.append(at - now)
    return max(waits) if waits else None


# -- streams ------------------------------------------------------------------------------------


class AnthropicStream(TranslatingStream):
    """Translates Anthropic stream events into OpenAI chunks, as they arrive.

    State: the message id and model (from ``message_start``), which content block is which
    tool call (Anthropic's block index is not OpenAI's tool index: a text block usually comes
    first), which tool calls got argument fragments, the stop reason and the usage (cumulative
    in ``message_delta``: overwritten, never added).

    ``started`` turns true at the first text or tool call, never at ``message_start``, so an
    ``overloaded_error`` before any content fails over unseen. An ``error`` event after
    content becomes an OpenAI error event (``error_in_band``); a stream that ends without
    ``message_stop`` is an error (:meth:`close`). The finish chunk, the usage chunk (with
    ``stream_options.include_usage``) and ``[DONE]`` are sent at ``message_stop``.
    """

    def __init__(self, scrub: Callable[[str], str], *, created: int, model: str,
                 include_usage: bool = False, json_mode: bool = False) -> None:
        super().__init__(scrub)
        self._writer = ChunkWriter("chatcmpl-anthropic", created, model, include_usage)
        self._include_usage = include_usage
        self._json_mode = json_mode
        self._blocks: dict[int, tuple[str, int]] = {}  # block index -> (kind, tool index)
        self._with_args: set[int] = set()
        self._tools = 0
        self._stop_reason: str | None = None

    # -- one event --------------------------------------------------------------------------

    def _event(self, event: SSEEvent) -> bytes:
        data = _load(event.data)
        if not isinstance(data, dict):
            return self._fail("The upstream sent a stream event that is not JSON.",
                              "bad_response", 200, malformed=True)
        kind = data.get("type")
        if kind == "message_start":
            return self._message_start(data.get("message"))
        if kind == "content_block_start":
            return self._block_start(data.get("index"), data.get("content_block"))
        if kind == "content_block_delta":
            return self._block_delta(data.get("index"), data.get("delta"))
        if kind == "content_block_stop":
            return self._block_stop(data.get("index"))
        if kind == "message_delta":
            delta = data.get("delta")
            if isinstance(delta, dict) and delta.get("stop_reason"):
                self._stop_reason = str(delta["stop_reason"])
            self._read_usage(data.get("usage"))
            return b""
        if kind == "message_stop":
            return self._finish()
        if kind == "error":
            error = data.get("error") if isinstance(data.get("error"), dict) else {}
            etype = str(error.get("type") or "api_error")
            message = str(error.get("message") or "The upstream stream reported an error.")
            return self._fail(message, etype, ERROR_STATUS.get(etype, 500))
        return b""  # ping, and event types added after this was written

    def _message_start(self, message: Any) -> bytes:
        if isinstance(message, dict):
            if message.get("id"):
                self._writer.id = f"chatcmpl-{message['id']}"
            if message.get("model"):
                self._writer.model = str(message["model"])
            self._read_usage(message.get("usage"))
        return self._writer.chunk({"role": "assistant", "content": ""})

    def _block_start(self, index: Any, block: Any) -> bytes:
        if not isinstance(block, dict) or not isinstance(index, int):
            return b""
        kind = block.get("type")
        if kind == "text":
            self._blocks[index] = ("text", -1)
            return self._text(str(block.get("text") or ""))
        if kind != "tool_use":
            self._blocks[index] = ("other", -1)  # thinking, server tools: not in OpenAI's shape
            return b""
        if self._json_mode and block.get("name") == JSON_TOOL:
            self._blocks[index] = ("json", -1)
            return b""
        tool = self._tools
        self._tools += 1
        self._blocks[index] = ("tool", tool)
        self.started = True
        return self._writer.chunk({"tool_calls": [{
            "index": tool, "id": block.get("id"), "type": "function",
            "function": {"name": block.get("name"), "arguments": ""},
        }]})

    def _block_delta(self, index: Any, delta: Any) -> bytes:
        if not isinstance(delta, dict) or not isinstance(index, int):
            return b""
        kind, tool = self._blocks.get(index, ("text", -1))
        if delta.get("type") == "text_delta" and kind == "text":
            return self._text(str(delta.get("text") or ""))
        if delta.get("type") != "input_json_delta":
            return b""  # thinking_delta, signature_delta, citations_delta
        fragment = str(delta.get("partial_json") or "")
        if not fragment:
            return b""
        if kind == "json":
            return self._text(fragment)
        if kind != "tool":
            return b""
        self._with_args.add(index)
        return self._writer.chunk(
            {"tool_calls": [{"index": tool, "function": {"arguments": fragment}}]})

    def _block_stop(self, index: Any) -> bytes:
        kind, tool = self._blocks.get(index, ("other", -1)) if isinstance(index, int) else (
            "other", -1)
        if kind == "tool" and index not in self._with_args:
            # a call without argument fragments: "{}" keeps its arguments parseable
            return self._writer.chunk(
                {"tool_calls": [{"index": tool, "function": {"arguments": "{}"}}]})
        return b""

    def _text(self, text: str) -> bytes:
        if not text:
            return b""
        self.started = True
        return self._writer.chunk({"content": text})

    def _finish(self) -> bytes:
        self.started = True  # even an empty answer is an answer
        self.finished = True
        reason = finish_reason(self._stop_reason, self._tools > 0)
        out = [self._writer.chunk({}, reason)]
        self.usage = translate_usage(self._usage)
        if self._include_usage:
            out.append(self._writer.usage_chunk(self.usage))
        out.append(DONE_EVENT)
        return b"".join(out)

    def _read_usage(self, usage: Any) -> None:
        if isinstance(usage, dict):
            self._usage.update(
                {k: v for k, v in usage.items() if isinstance(v, int) and not isinstance(v, bool)})

    def _fail(self, message: str, code: str, status: int, *, malformed: bool = False) -> bytes:
        message = self._scrub(message)
        if not self.started:
            # nothing reached the client: the policy decides, as for the same HTTP error
            self.error = Failure(classify_status(status, code, message), status, message, code)
            return b""
        return failed_mid_stream(self, Failure(FailureKind.STREAM_ERROR, 200, message, code),
                                 malformed=malformed)
