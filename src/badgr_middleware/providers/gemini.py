"""Google Gemini ``generateContent``, translated both ways (wire-formats.md §5).

Chat: system and developer messages become ``systemInstruction``; user and assistant turns
become ``contents`` with roles ``user`` and ``model`` (consecutive turns merged); tool calls and
tool results become ``functionCall`` / ``functionResponse`` parts (a result's function name is
recovered from the earlier call with its ``tool_call_id``); images become ``inlineData`` (data
URLs) or ``fileData`` (http URLs with a recognisable image type); sampling fields go into
``generationConfig``. Streams use ``:streamGenerateContent?alt=sse``. Embeddings use
``:embedContent`` (one input) or ``:batchEmbedContents`` (a list).

Function-call ids are never sent upstream: history may come from another provider, and Gemini
pairs calls and responses by name and order. Ids Gemini returns are kept; missing ones are
synthesised deterministically. A call's ``thoughtSignature`` travels to the client as the
tool call's ``extra_content.google.thought_signature`` (the shape Gemini's own OpenAI endpoint
uses) and is sent back with the call in later turns.
"""

from __future__ import annotations

import json
import mimetypes
import re
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlsplit

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
    float32_base64,
    image_url,
    include_usage,
    max_tokens_of,
    openai_usage,
    parse_arguments,
    parse_data_url,
    reject,
    stop_list,
    synthetic_id,
    text_of,
)
from .openai import _error_object

if TYPE_CHECKING:
    from ..config import ProviderConfig
    from ..routing.plan import RoutedRequest, Target

__all__ = ["GeminiStream", "GeminiWire"]

PLACEHOLDER = "."
FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "LANGUAGE": "content_filter",
    "OTHER": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
    "IMAGE_PROHIBITED_CONTENT": "content_filter",
    "IMAGE_RECITATION": "content_filter",
    "IMAGE_OTHER": "content_filter",
    "NO_IMAGE": "content_filter",
}  # everything else (MALFORMED_FUNCTION_CALL, UNEXPECTED_TOOL_CALL, ...) -> "stop"
_DELAY = re.compile(r"^\s*(\d+(?:\.\d+)?)s\s*$")
_CONTEXT_MARKERS = ("exceeds the maximum number of tokens", "input token count")


class GeminiWire:
    """Builds ``generateContent`` / ``embedContent`` requests and translates the answers."""

    kind = "gemini"
    prefill = False
    routes = frozenset({"chat/completions", "embeddings"})

    def __init__(self, config: ProviderConfig, *, clock: Callable[[], float] = time.time) -> None:
        self.config = config
        self.name = config.name
        self._clock = clock
        self._key = config.api_key.reveal() if config.api_key else ""
        base = {"content-type": "application/json", "accept-encoding": "identity"}
        if self._key:
            base["x-goog-api-key"] = self._key  # a header, so keys stay out of URL logs
        base.update({k.lower(): v for k, v in config.headers.items()})
        self._json_headers = {**base, "accept": "application/json"}
        self._sse_headers = {**base, "accept": "text/event-stream"}

    # -- requests ---------------------------------------------------------------------------

    def build_request(self, request: RoutedRequest, target: Target) -> UpstreamRequest:
        model = target.model.removeprefix("models/")
        base = f"{self.config.base_url}/models/{quote(model, safe='.-_')}"
        if request.route == "embeddings":
            method, body = translate_embeddings_request(request.body, model)
            return UpstreamRequest("POST", f"{base}:{method}", self._json_headers, dumps(body))
        if request.route not in self.routes:
            raise UnsupportedRequest(
                f"The Gemini target {target.key} cannot serve /{request.route}; only "
                "/chat/completions and /embeddings.", code="unsupported_route")
        body = translate_request(request.body)
        if request.stream:
            return UpstreamRequest("POST", f"{base}:streamGenerateContent?alt=sse",
                                   self._sse_headers, dumps(body))
        return UpstreamRequest("POST", f"{base}:generateContent", self._json_headers, dumps(body))

    def scrub(self, text: str) -> str:
        if self._key and self._key in text:
            text = text.replace(self._key, "***")
        return text

    # -- answers ----------------------------------------------------------------------------

    def classify_error(
        self, status: int, headers: Mapping[str, str], body: bytes, now: float
    ) -> Failure:
        error = gemini_error(_load(body))
        failure = classify_gemini_error(status, error, self.scrub)
        retry_after = parse_retry_after(headers, now)
        if retry_after is not None:
            failure = Failure(failure.kind, failure.status, failure.message, failure.code,
                              retry_after)
        return failure

    def check_body(self, route: str, body: bytes) -> tuple[Failure | None, dict[str, Any] | None]:
        data = _load(body)
        if isinstance(data, list) and data and isinstance(data[0], dict) and "error" in data[0]:
            data = data[0]
        if not isinstance(data, dict):
            return Failure(FailureKind.BAD_RESPONSE, 200, "The upstream answer was not JSON.",
                           "bad_response"), None
        if "error" in data:
            failure = classify_gemini_error(200, gemini_error(data), self.scrub)
            return Failure(FailureKind.BAD_RESPONSE, 200, failure.message,
                           failure.code or "upstream_error"), None
        if route == "embeddings":
            if not isinstance(data.get("embedding"), dict) and not isinstance(
                data.get("embeddings"), list
            ):
                return Failure(FailureKind.BAD_RESPONSE, 200,
                               "The upstream answer had no 'embedding'.", "bad_response"), None
            return None, openai_usage(0, 0)
        if not isinstance(data.get("candidates"), list) and not isinstance(
            data.get("promptFeedback"), dict
        ):
            return Failure(FailureKind.BAD_RESPONSE, 200,
                           "The upstream answer had no 'candidates'.", "bad_response"), None
        usage = data.get("usageMetadata")
        return None, translate_usage(usage) if isinstance(usage, dict) else None

    def response_body(self, request: RoutedRequest, target: Target, body: bytes) -> bytes:
        data = json.loads(body)
        if request.route == "embeddings":
            return dumps(translate_embeddings(data, request.body, target.model))
        return dumps(translate_response(data, target.model, int(self._clock())))

    def stream(self, request: RoutedRequest, target: Target) -> GeminiStream:
        n = request.body.get("n")
        return GeminiStream(self.scrub, created=int(self._clock()), model=target.model,
                            include_usage=include_usage(request.body),
                            choices=n if isinstance(n, int) and n > 1 else 1)


# -- OpenAI -> Gemini ---------------------------------------------------------------------------


def translate_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``generateContent`` body for an OpenAI chat request (raises UnsupportedRequest)."""
    reject(body, "Gemini")
    system, contents = _contents(body.get("messages") or [])
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": [{"text": "\n\n".join(system)}]}
    declarations = _declarations(body.get("tools"))
    if declarations:
        out["tools"] = [{"functionDeclarations": declarations}]
        config = _function_calling(body.get("tool_choice"))
        if config is not None:
            out["toolConfig"] = {"functionCallingConfig": config}
    generation = _generation_config(body)
    if generation:
        out["generationConfig"] = generation
    return out


def _contents(raw: list[Any]) -> tuple[list[str], list[dict[str, Any]]]:
    system: list[str] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}
    for i, message in enumerate(raw):
        role = message.get("role")
        content = message.get("content")
        if role in ("system", "developer"):
            text = text_of(content)
            if text.strip():
                system.append(text)
            continue
        if role == "assistant":
            turn, parts = "model", _model_parts(message, call_names)
        elif role in ("tool", "function"):
            name = message.get("name") if role == "function" else call_names.get(
                str(message.get("tool_call_id")))
            if not isinstance(name, str) or not name:
                raise UnsupportedRequest(
                    "A tool message must answer a tool call of an earlier assistant message "
                    "(Gemini needs the function's name).",
                    param=f"messages[{i}].tool_call_id", code="invalid_tool_result")
            turn = "user"
            parts = [{"functionResponse": {"name": name,
                                           "response": {"content": text_of(content)}}}]
        else:
            turn, parts = "user", _user_parts(content, i)
        if not parts:
            continue
        if contents and contents[-1]["role"] == turn:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": turn, "parts": parts})
    if not contents:
        contents.append({"role": "user", "parts": [{"text": PLACEHOLDER}]})
    return system, contents


def _user_parts(content: Any, i: int) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content if isinstance(content, list) else []):
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        param = f"messages[{i}].content[{j}]"
        if kind == "text":
            if part.get("text"):
                parts.append({"text": str(part["text"])})
        elif kind == "image_url":
            parts.append(_image(part, param))
        elif kind == "input_audio" and isinstance(part.get("input_audio"), dict):
            audio = part["input_audio"]
            parts.append({"inlineData": {"mimeType": f"audio/{audio.get('format') or 'wav'}",
                                         "data": str(audio.get("data") or "")}})
        else:
            raise UnsupportedRequest(
                f"Content parts of type {str(kind)[:40]!r} are not supported by Gemini.",
                param=param, code="unsupported_content")
    return parts


def _image(part: Mapping[str, Any], param: str) -> dict[str, Any]:
    url = image_url(part, param)
    data = parse_data_url(url)
    if data is not None:
        return {"inlineData": {"mimeType": data[0], "data": data[1]}}
    if url.startswith(("https://", "http://", "gs://")):
        mime, _ = mimetypes.guess_type(urlsplit(url).path)
        if mime is None or not mime.startswith("image/"):
            raise UnsupportedRequest(
                "Gemini needs the image type: use a URL ending in .png, .jpg, .webp, ... or a "
                "base64 data URL.", param=param, code="unsupported_content")
        return {"fileData": {"mimeType": mime, "fileUri": url}}
    raise UnsupportedRequest("An image URL must be an http(s) URL or a base64 data URL.",
                             param=param, code="unsupported_content")


def _model_parts(message: Mapping[str, Any], call_names: dict[str, str]) -> list[dict[str, Any]]:
    parts: list[dict[str, Any]] = []
    text = text_of(message.get("content"))
    if text:
        parts.append({"text": text})
    calls = message.get("tool_calls")
    for call in calls if isinstance(calls, list) else []:
        if not isinstance(call, dict) or not isinstance(call.get("function"), dict):
            continue
        name = str(call["function"].get("name") or "")
        call_names[str(call.get("id"))] = name
        part: dict[str, Any] = {"functionCall": {
            "name": name, "args": parse_arguments(call["function"].get("arguments"))}}
        extra = call.get("extra_content")
        google = extra.get("google") if isinstance(extra, dict) else None
        if isinstance(google, dict) and isinstance(google.get("thought_signature"), str):
            part["thoughtSignature"] = google["thought_signature"]
        parts.append(part)
    return parts


def _declarations(raw: Any) -> list[dict[str, Any]]:
    declarations: list[dict[str, Any]] = []
    for i, tool in enumerate(raw if isinstance(raw, list) else []):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type", "function") != "function" or not (
            isinstance(function, dict) and isinstance(function.get("name"), str)
        ):
            raise UnsupportedRequest("Only function tools are supported by Gemini.",
                                     param=f"tools[{i}]")
        declaration: dict[str, Any] = {"name": function["name"]}
        if function.get("description"):
            declaration["description"] = function["description"]
        if isinstance(function.get("parameters"), dict):
            # the JSON Schema as the client wrote it; "parameters" takes only an OpenAPI subset
            declaration["parametersJsonSchema"] = function["parameters"]
        declarations.append(declaration)
    return declarations


def _function_calling(choice: Any) -> dict[str, Any] | None:
    if choice == "auto":
        return {"mode": "AUTO"}
    if choice == "required":
        return {"mode": "ANY"}
    if choice == "none":
        return {"mode": "NONE"}
    if isinstance(choice, dict) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not isinstance(name, str):
            raise UnsupportedRequest("tool_choice.function needs a 'name'.", param="tool_choice")
        return {"mode": "ANY", "allowedFunctionNames": [name]}
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        allowed = choice.get("allowed_tools") if isinstance(choice.get("allowed_tools"),
                                                            dict) else {}
        names = [(t.get("function") or {}).get("name") for t in allowed.get("tools") or []
                 if isinstance(t, dict)]
        mode = "ANY" if allowed.get("mode") == "required" else "AUTO"
        return {"mode": mode, "allowedFunctionNames": [n for n in names if isinstance(n, str)]}
    if choice is not None:
        raise UnsupportedRequest("Unsupported 'tool_choice'.", param="tool_choice")
    return None


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    for source, name in (("temperature", "temperature"), ("top_p", "topP"), ("top_k", "topK"),
                         ("seed", "seed"), ("presence_penalty", "presencePenalty"),
                         ("frequency_penalty", "frequencyPenalty")):
        value = body.get(source)
        if isinstance(value, int | float) and not isinstance(value, bool):
            config[name] = value
    max_tokens = max_tokens_of(body)
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stops = stop_list(body)
    if stops:
        config["stopSequences"] = stops
    n = body.get("n")
    if isinstance(n, int) and n > 1:
        config["candidateCount"] = n
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in (
        "json_object", "json_schema"
    ):
        config["responseMimeType"] = "application/json"
        spec = response_format.get("json_schema")
        if isinstance(spec, dict) and isinstance(spec.get("schema"), dict):
            config["responseJsonSchema"] = spec["schema"]
    return config


def translate_embeddings_request(body: Mapping[str, Any], model: str) -> tuple[str, Any]:
    """``("embedContent", body)`` for one input, ``("batchEmbedContents", body)`` for a list."""
    raw = body.get("input")
    texts = [raw] if isinstance(raw, str) else raw
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise UnsupportedRequest("Gemini embeds text only: 'input' must be a string or a list "
                                 "of strings, not token ids.", param="input")

    def one(text: str) -> dict[str, Any]:
        request: dict[str, Any] = {"model": f"models/{model}",
                                   "content": {"parts": [{"text": text}]}}
        dimensions = body.get("dimensions")
        if isinstance(dimensions, int) and not isinstance(dimensions, bool):
            request["outputDimensionality"] = dimensions
        return request

    if isinstance(raw, str):
        return "embedContent", one(raw)
    return "batchEmbedContents", {"requests": [one(text) for text in texts]}


# -- Gemini -> OpenAI ---------------------------------------------------------------------------


def translate_response(data: Mapping[str, Any], model: str, created: int) -> dict[str, Any]:
    """An OpenAI ``chat.completion`` for a ``GenerateContentResponse``."""
    response_id = str(data.get("responseId") or "")
    choices = []
    candidates = [c for c in data.get("candidates") or [] if isinstance(c, dict)]
    for position, candidate in enumerate(candidates):
        index = candidate.get("index", position)
        texts, calls = _parts(candidate, response_id, index)
        message: dict[str, Any] = {"role": "assistant",
                                   "content": "".join(texts) if texts else None,
                                   "refusal": None}
        if calls:
            message["tool_calls"] = calls
        choices.append({"index": index, "message": message, "logprobs": None,
                        "finish_reason": finish_reason(candidate.get("finishReason"),
                                                       bool(calls))})
    if not choices:  # the prompt itself was blocked
        choices.append({"index": 0,
                        "message": {"role": "assistant", "content": None, "refusal": None},
                        "logprobs": None, "finish_reason": "content_filter"})
    body: dict[str, Any] = {
        "id": f"chatcmpl-{response_id or synthetic_id(created, model)[5:]}",
        "object": "chat.completion",
        "created": created,
        "model": data.get("modelVersion") or model,
        "choices": choices,
    }
    usage = data.get("usageMetadata")
    if isinstance(usage, dict):
        body["usage"] = translate_usage(usage)
    return body


def _parts(candidate: Mapping[str, Any], response_id: str, index: int,
           first_call: int = 0) -> tuple[list[str], list[dict[str, Any]]]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, dict) else None
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in parts if isinstance(parts, list) else []:
        if not isinstance(part, dict) or part.get("thought"):
            continue
        if isinstance(part.get("text"), str):
            texts.append(part["text"])
        elif isinstance(part.get("functionCall"), dict):
            call = part["functionCall"]
            name = str(call.get("name") or "")
            ordinal = first_call + len(calls)
            openai_call: dict[str, Any] = {
                "id": str(call.get("id") or synthetic_id(response_id, index, ordinal, name)),
                "type": "function",
                "function": {"name": name, "arguments": arguments_json(call.get("args"))},
            }
            if isinstance(part.get("thoughtSignature"), str):
                openai_call["extra_content"] = {
                    "google": {"thought_signature": part["thoughtSignature"]}}
            calls.append(openai_call)
    return texts, calls


def finish_reason(reason: Any, called: bool) -> str:
    if called:
        return "tool_calls"  # Gemini says STOP even when it called functions
    return FINISH_REASONS.get(str(reason), "stop")


def translate_usage(usage: Mapping[str, Any]) -> dict[str, Any]:
    def count(name: str) -> int | None:
        value = usage.get(name)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    prompt = count("promptTokenCount") or 0
    thoughts = count("thoughtsTokenCount")
    completion = (count("candidatesTokenCount") or 0) + (thoughts or 0)
    return openai_usage(prompt, completion, cached=count("cachedContentTokenCount"),
                        reasoning=thoughts, total=count("totalTokenCount"))


def translate_embeddings(data: Mapping[str, Any], request: Mapping[str, Any],
                         model: str) -> dict[str, Any]:
    if isinstance(data.get("embedding"), dict):
        vectors = [data["embedding"].get("values") or []]
    else:
        vectors = [e.get("values") or [] for e in data.get("embeddings") or []
                   if isinstance(e, dict)]
    as_base64 = request.get("encoding_format") == "base64"
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i,
                  "embedding": float32_base64(v) if as_base64 else v}
                 for i, v in enumerate(vectors)],
        "model": model,
        # Gemini does not count embedding tokens
        "usage": {"prompt_tokens": 0, "total_tokens": 0},
    }


# -- errors -------------------------------------------------------------------------------------


def _load(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def gemini_error(data: Any) -> dict[str, Any]:
    """The ``error`` object of Gemini's envelope (sometimes inside a JSON array)."""
    if isinstance(data, list) and data:
        data = data[0]
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        return data["error"]
    return _error_object(b"", data) if data is not None else {}


def classify_gemini_error(status: int, error: Mapping[str, Any],
                          scrub: Callable[[str], str]) -> Failure:
    """A failure for a Gemini error: the body's hints refine the HTTP status (§2.5, §5.5)."""
    message = scrub(str(error.get("message") or f"Upstream answered HTTP {status}."))
    code = error.get("status") if isinstance(error.get("status"), str) else None
    policy_status = status
    if status == 200 and isinstance(error.get("code"), int):
        policy_status = error["code"]
    retry_after: float | None = None
    details = error.get("details")
    for detail in details if isinstance(details, list) else []:
        if not isinstance(detail, dict):
            continue
        kind = str(detail.get("@type") or "")
        if kind.endswith("RetryInfo"):
            match = _DELAY.match(str(detail.get("retryDelay") or ""))
            if match and float(match[1]) > 0:
                retry_after = float(match[1])
        elif kind.endswith("ErrorInfo") and detail.get("reason") == "API_KEY_INVALID":
            policy_status, code = 401, "API_KEY_INVALID"  # Gemini says 400 for a bad key
        elif kind.endswith("QuotaFailure"):
            violations = detail.get("violations")
            ids = " ".join(str(v.get("quotaId") or "") for v in violations or []
                           if isinstance(v, dict))
            if "PerDay" in ids:
                code = "insufficient_quota"  # a daily quota: waiting a few seconds is futile
    if code == "insufficient_quota":
        retry_after = None
    if any(marker in message.lower() for marker in _CONTEXT_MARKERS):
        code = "context_length_exceeded"
    kind = classify_status(policy_status, code, message) if policy_status != 200 else (
        FailureKind.BAD_RESPONSE)
    return Failure(kind, status, message, code, retry_after)


# -- streams ------------------------------------------------------------------------------------


class GeminiStream(TranslatingStream):
    """Translates ``streamGenerateContent?alt=sse`` events into OpenAI chunks.

    Each Gemini event carries new parts per candidate: text parts become content deltas, a
    ``functionCall`` (always whole on the Gemini API) becomes one complete tool-call delta.
    A candidate's ``finishReason`` gives its finish chunk; once every expected candidate has
    finished, the usage chunk (with ``include_usage``) and ``[DONE]`` follow. Gemini sends no
    terminal sentinel, so a stream that ends before that is an error (:meth:`close`). An
    ``{"error": ...}`` event before content fails over; after content it is relayed in band.
    """

    def __init__(self, scrub: Callable[[str], str], *, created: int, model: str,
                 include_usage: bool = False, choices: int = 1) -> None:
        super().__init__(scrub)
        self._writer = ChunkWriter("", created, model, include_usage)
        self._include_usage = include_usage
        self._choices = choices
        self._opened: set[int] = set()
        self._calls: dict[int, int] = {}
        self._done: set[int] = set()

    def close(self) -> bytes:
        out = b""
        if not self.finished and self.error is None and self._scanner.remainder().strip():
            out = self.feed(b"\n\n")  # a last event without its blank line
        return out + super().close()

    def _event(self, event: SSEEvent) -> bytes:
        data = _load(event.data)
        if isinstance(data, list) and data:
            data = data[0]
        if not isinstance(data, dict):
            return self._fail(Failure(FailureKind.BAD_RESPONSE, 200,
                                      "The upstream sent a stream event that is not JSON.",
                                      "bad_response"), malformed=True)
        if "error" in data:
            error = gemini_error(data)
            status = error.get("code") if isinstance(error.get("code"), int) else 500
            return self._fail(classify_gemini_error(status, error, self._scrub))
        if not self._writer.id:
            response_id = str(data.get("responseId") or "")
            self._writer.id = f"chatcmpl-{response_id or synthetic_id(id(self))[5:]}"
        if data.get("modelVersion"):
            self._writer.model = str(data["modelVersion"])
        if isinstance(data.get("usageMetadata"), dict):
            self._usage = data["usageMetadata"]
        out: list[bytes] = []
        candidates = [c for c in data.get("candidates") or [] if isinstance(c, dict)]
        for position, candidate in enumerate(candidates):
            out.append(self._candidate(candidate, candidate.get("index", position), data))
        feedback = data.get("promptFeedback")
        if not candidates and isinstance(feedback, dict) and feedback.get("blockReason"):
            out.append(self._open(0) + self._writer.chunk({}, "content_filter", 0))
            self._done.add(0)
            self.started = True
        if len(self._done) >= self._choices:
            out.append(self._finish())
        return b"".join(out)

    def _candidate(self, candidate: Mapping[str, Any], index: int,
                   data: Mapping[str, Any]) -> bytes:
        out = [self._open(index)]
        texts, calls = _parts(candidate, str(data.get("responseId") or ""), index,
                              self._calls.get(index, 0))
        for text in texts:
            if text:
                self.started = True
                out.append(self._writer.chunk({"content": text}, None, index))
        for call in calls:
            tool = self._calls.get(index, 0)
            self._calls[index] = tool + 1
            self.started = True
            out.append(self._writer.chunk({"tool_calls": [{"index": tool, **call}]}, None, index))
        if candidate.get("finishReason") and index not in self._done:
            self._done.add(index)
            self.started = True
            reason = finish_reason(candidate["finishReason"], self._calls.get(index, 0) > 0)
            out.append(self._writer.chunk({}, reason, index))
        return b"".join(out)

    def _open(self, index: int) -> bytes:
        if index in self._opened:
            return b""
        self._opened.add(index)
        return self._writer.chunk({"role": "assistant", "content": ""}, None, index)

    def _finish(self) -> bytes:
        self.finished = True
        self.usage = translate_usage(self._usage)
        out = [self._writer.usage_chunk(self.usage)] if self._include_usage else []
        out.append(DONE_EVENT)
        return b"".join(out)

    def _fail(self, failure: Failure, *, malformed: bool = False) -> bytes:
        if not self.started:
            self.error = failure
            return b""
        return failed_mid_stream(self, failure, malformed=malformed)
