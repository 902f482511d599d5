"""A fake Gemini API (``generativelanguage.googleapis.com``) that validates like the real one.

``SimulatedGemini`` serves ``POST /v1beta/models/{model}:generateContent``,
``:streamGenerateContent?alt=sse``, ``:embedContent`` and ``:batchEmbedContents``. It needs
an ``x-goog-api-key`` header or a ``?key=`` parameter, ``contents`` with roles ``user`` and
``model`` only and non-empty parts, no unknown fields, and every ``functionResponse`` turn right
after a ``functionCall`` turn with the same function names. Faults (docs/simulator.md) answer
in Google's error envelope; a 429 carries its wait in ``RetryInfo.retryDelay`` in the body, as
does the 429 for a request beyond ``rate_limit`` (Gemini reports no quota headers).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qs

from . import payloads
from .anthropic import DEFAULT_TOOL_INPUT, NativeSimulator, Refusal, SimulatedResponse
from .continuation import continuation
from .faults import Fault
from .payloads import Headers
from .ratelimit import RateState

__all__ = ["SimulatedGemini"]

_PATH = re.compile(r"^/v1beta/models/([^/:]+):(generateContent|streamGenerateContent|"
                   r"embedContent|batchEmbedContents)$")
_TOP_LEVEL = frozenset({"contents", "systemInstruction", "tools", "toolConfig",
                        "generationConfig", "safetySettings", "cachedContent"})
_GENERATION = frozenset({
    "temperature", "topP", "topK", "candidateCount", "maxOutputTokens", "stopSequences",
    "presencePenalty", "frequencyPenalty", "seed", "responseMimeType", "responseSchema",
    "responseJsonSchema", "responseLogprobs", "logprobs", "responseModalities",
    "thinkingConfig",
})
_PART_DATA = ("text", "inlineData", "fileData", "functionCall", "functionResponse")
_STATUS = {400: "INVALID_ARGUMENT", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
           404: "NOT_FOUND", 429: "RESOURCE_EXHAUSTED", 500: "INTERNAL", 503: "UNAVAILABLE",
           504: "DEADLINE_EXCEEDED"}


def google_error(code: int, message: str, *details: dict[str, Any]) -> dict[str, Any]:
    status = _STATUS.get(code, "INTERNAL" if code >= 500 else "FAILED_PRECONDITION")
    return {"error": {"code": code, "message": message, "status": status,
                      "details": list(details)}}


def _invalid(message: str) -> Refusal:
    return Refusal(400, google_error(400, message))


def _event(data: Any) -> bytes:
    # GCP separates events with CRLF pairs
    return b"data: " + payloads.encode_json(data) + b"\r\n\r\n"


class SimulatedGemini(NativeSimulator):
    """A fake Gemini API: point a ``gemini`` provider's ``base_url`` at
    ``server.url + "/v1beta"``.

    Answers ``reply`` as text; ``"Tool results: <r1> | <r2>"`` when the last user turn
    carries function responses; the rest of ``reply`` when the contents end with a ``model``
    turn starting it (optionally followed by one ``user`` turn); a ``functionCall`` of the
    allowed (else the first) function with args ``tool_input`` when the request declares
    functions and the mode is not ``NONE`` (after a short text part in ``AUTO`` mode).
    ``candidateCount`` candidates. With ``rate_limit``, at most that many requests per
    ``rate_limit_window`` seconds.
    """

    def __init__(self, name: str = "gemini", *, api_key: str | None = None,
                 reply: str | None = None, tool_input: Mapping[str, Any] | None = None,
                 stream_pieces: int = 4, chunk_delay: float = 0.0,
                 fault: str | None = None, rate_limit: int | None = None,
                 rate_limit_window: float = 60.0) -> None:
        super().__init__(name, api_key=api_key, reply=reply, stream_pieces=stream_pieces,
                         chunk_delay=chunk_delay, fault=fault, rate_limit=rate_limit,
                         rate_limit_window=rate_limit_window)
        self.tool_input = dict(tool_input if tool_input is not None else DEFAULT_TOOL_INPUT)

    def bad_request(self, message: str) -> Any:
        return google_error(400, message)

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str],
               data: Any, number: int) -> SimulatedResponse:
        match = _PATH.match(path)
        if method != "POST" or match is None:
            raise Refusal(404, google_error(404, f"Not found: {method} {path}"))
        params = parse_qs(query)
        key = headers.get("x-goog-api-key") or (params.get("key") or [""])[0]
        if not key:
            raise Refusal(403, google_error(
                403, "Method doesn't allow unregistered callers (callers without established "
                     "identity). Please use API Key or other form of API consumer identity."))
        if self.api_key is not None and key != self.api_key:
            raise Refusal(400, google_error(
                400, "API key not valid. Please pass a valid API key.",
                {"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                 "reason": "API_KEY_INVALID", "domain": "googleapis.com"}))
        if not isinstance(data, dict):
            raise _invalid("Invalid JSON payload received.")
        model, method_name = match[1], match[2]
        if method_name == "embedContent":
            return self._embed([self._embed_request(data, model)], single=True)
        if method_name == "batchEmbedContents":
            requests = data.get("requests")
            if set(data) != {"requests"} or not isinstance(requests, list) or not requests:
                raise _invalid("batchEmbedContents needs a non-empty 'requests' list.")
            return self._embed([self._embed_request(r, model) for r in requests], single=False)
        stream = method_name == "streamGenerateContent"
        if stream and params.get("alt") != ["sse"]:
            raise _invalid("This fake streams only with ?alt=sse.")
        validate_generate_request(data)
        return self._answer(data, model, number, stream)

    # -- answers ----------------------------------------------------------------------------

    def _answer(self, data: dict[str, Any], model: str, number: int,
                stream: bool) -> SimulatedResponse:
        contents = data["contents"]
        last = contents[-1]
        responses = [p["functionResponse"] for p in last["parts"] if "functionResponse" in p]
        declarations = [d for tool in data.get("tools") or []
                        for d in tool.get("functionDeclarations") or []]
        calling = ((data.get("toolConfig") or {}).get("functionCallingConfig") or {})
        mode = calling.get("mode", "AUTO")
        rest = continuation(self.reply, [(c["role"], "".join(
            p["text"] for p in c["parts"] if isinstance(p.get("text"), str)))
            for c in contents], assistant="model")
        parts: list[dict[str, Any]] = []
        if last["role"] == "user" and responses:
            texts = [str((r.get("response") or {}).get("content", "")) for r in responses]
            parts.append({"text": "Tool results: " + " | ".join(texts)})
        elif rest is not None:
            parts.append({"text": rest})
        elif declarations and mode != "NONE":
            allowed = calling.get("allowedFunctionNames") or [declarations[0]["name"]]
            if mode == "AUTO":
                parts.append({"text": "Let me check."})
            parts.append({"functionCall": {"name": allowed[0], "args": dict(self.tool_input)}})
        else:
            parts.append({"text": self.reply})
        count = (data.get("generationConfig") or {}).get("candidateCount", 1)
        prompt = payloads.count_words([p.get("text", "") for c in contents for p in c["parts"]])
        output = payloads.count_words([p.get("text", "") for p in parts]) * count
        usage = {"promptTokenCount": prompt, "candidatesTokenCount": output,
                 "totalTokenCount": prompt + output}
        common: Headers = [(b"x-sim-provider", self.name.encode())]
        meta = {"modelVersion": f"{model}-sim", "responseId": f"sim-{number}"}
        if not stream:
            candidates = [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP",
                           "index": i} for i in range(count)]
            return SimulatedResponse(200, common, {"candidates": candidates,
                                                   "usageMetadata": usage, **meta})
        events: list[bytes] = []
        text_parts = [p for p in parts if "text" in p]
        pieces = [piece for p in text_parts
                  for piece in payloads.split_text(p["text"], self.stream_pieces)]
        for piece in pieces:
            candidates = [{"content": {"role": "model", "parts": [{"text": piece}]}, "index": i}
                          for i in range(count)]
            events.append(_event({"candidates": candidates,
                                  "usageMetadata": {"promptTokenCount": prompt}, **meta}))
        calls = [p for p in parts if "functionCall" in p]
        last_candidates = [{"content": {"role": "model", "parts": calls or [{"text": ""}]},
                            "finishReason": "STOP", "index": i} for i in range(count)]
        tail = [_event({"candidates": last_candidates, "usageMetadata": usage, **meta})]
        return SimulatedResponse(200, common, None, [], events, tail, stream=True)

    def _embed_request(self, request: Any, model: str) -> str:
        if not isinstance(request, dict) or set(request) - {
            "model", "content", "taskType", "title", "outputDimensionality"
        }:
            raise _invalid("Invalid embed request: unknown fields.")
        if request.get("model", f"models/{model}") != f"models/{model}":
            raise _invalid(f"Model {request.get('model')!r} does not match the URL.")
        content = request.get("content")
        parts = content.get("parts") if isinstance(content, dict) else None
        if not isinstance(parts, list) or not parts or not all(
            isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts
        ):
            raise _invalid("content.parts must be a non-empty list of text parts.")
        return "".join(p["text"] for p in parts)

    def _embed(self, texts: list[str], *, single: bool) -> SimulatedResponse:
        vectors = [{"values": payloads.embedding_vector(text)} for text in texts]
        body = {"embedding": vectors[0]} if single else {"embeddings": vectors}
        return SimulatedResponse(200, [(b"x-sim-provider", self.name.encode())], body)

    # -- faults -----------------------------------------------------------------------------

    def fault_response(self, fault: Fault, number: int, stream: bool) -> SimulatedResponse:
        status = fault.status
        details: list[dict[str, Any]] = []
        message = {429: "Resource has been exhausted (e.g. check quota).",
                   503: "The model is overloaded. Please try again later."}.get(
            status, f"Simulated {status}.")
        if status == 429 and fault.variant == "quota":
            details.append({"@type": "type.googleapis.com/google.rpc.QuotaFailure",
                            "violations": [{"quotaMetric": "generate_content_free_tier_requests",
                                            "quotaId": "GenerateRequestsPerDayPerProjectPerModel"
                                                       "-FreeTier"}]})
        if fault.retry_after_form is not None:
            # Gemini's wait lives in the body, not in a Retry-After header
            value = fault.retry_after_value / (1000 if fault.retry_after_form == "ms" else 1)
            details.append({"@type": "type.googleapis.com/google.rpc.RetryInfo",
                            "retryDelay": f"{value:g}s"})
            message += f" Please retry in {value:g}s."
        if status == 400 and fault.variant == "context":
            message = ("The input token count (1200000) exceeds the maximum number of tokens "
                       "allowed (1048576).")
        return SimulatedResponse(status, [], google_error(status, message, *details))

    def error_event(self) -> bytes:
        return _event(google_error(503, "The model is overloaded. Please try again later."))

    def rate_limited(self, state: RateState, number: int) -> SimulatedResponse:
        wait = f"{state.retry_after}s"
        message = (f"You exceeded your current quota of {state.limit} requests per "
                   f"{state.window:g} seconds (simulated). Please retry in {wait}.")
        return SimulatedResponse(429, [], google_error(
            429, message,
            {"@type": "type.googleapis.com/google.rpc.QuotaFailure",
             "violations": [{"quotaMetric": "generativelanguage.googleapis.com/"
                                            "generate_content_requests",
                             "quotaId": "GenerateRequestsPerWindowPerProjectPerModel",
                             "quotaValue": str(state.limit)}]},
            {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": wait}))


# -- validation -------------------------------------------------------------------------------


def validate_generate_request(data: dict[str, Any]) -> None:
    """Raise the 400 the real API would give this ``generateContent`` body, if any."""
    for key in data:
        if key not in _TOP_LEVEL:
            raise _invalid(f"Invalid JSON payload received. Unknown name \"{key}\": "
                           "Cannot find field.")
    generation = data.get("generationConfig")
    if generation is not None:
        if not isinstance(generation, dict):
            raise _invalid("generationConfig must be an object.")
        for key in generation:
            if key not in _GENERATION:
                raise _invalid(f"Invalid JSON payload received. Unknown name \"{key}\" at "
                               "'generation_config': Cannot find field.")
    system = data.get("systemInstruction")
    if system is not None and not (isinstance(system, dict) and _text_parts(system)):
        raise _invalid("systemInstruction must have text parts.")
    names = _validate_tools(data.get("tools"))
    calling = (data.get("toolConfig") or {}).get("functionCallingConfig")
    if calling is not None:
        if calling.get("mode") not in ("AUTO", "ANY", "NONE", "VALIDATED"):
            raise _invalid("toolConfig.functionCallingConfig.mode is invalid.")
        for name in calling.get("allowedFunctionNames") or []:
            if name not in names:
                raise _invalid(f"allowedFunctionNames: {name!r} is not a declared function.")
    _validate_contents(data.get("contents"))


def _text_parts(content: dict[str, Any]) -> bool:
    parts = content.get("parts")
    return isinstance(parts, list) and bool(parts) and all(
        isinstance(p, dict) and isinstance(p.get("text"), str) for p in parts)


def _validate_tools(tools: Any) -> set[str]:
    names: set[str] = set()
    for tool in tools or []:
        for declaration in tool.get("functionDeclarations") or []:
            if not isinstance(declaration.get("name"), str) or not declaration["name"]:
                raise _invalid("functionDeclarations[].name is required.")
            if "parameters" in declaration and "parametersJsonSchema" in declaration:
                raise _invalid("Only one of parameters and parametersJsonSchema may be set.")
            names.add(declaration["name"])
    return names


def _validate_contents(contents: Any) -> None:
    if not isinstance(contents, list) or not contents:
        raise _invalid("* GenerateContentRequest.contents: contents is not specified")
    previous_calls: list[str] = []
    for i, content in enumerate(contents):
        if not isinstance(content, dict) or content.get("role") not in ("user", "model"):
            raise _invalid(f"Please use a valid role: user, model. (contents[{i}])")
        parts = content.get("parts")
        if not isinstance(parts, list) or not parts:
            raise _invalid(f"* GenerateContentRequest.contents[{i}].parts: contents.parts must "
                           "not be empty.")
        for j, part in enumerate(parts):
            present = [k for k in _PART_DATA if isinstance(part, dict) and k in part]
            if len(present) != 1:
                raise _invalid(f"contents[{i}].parts[{j}]: a part must hold exactly one of "
                               + ", ".join(_PART_DATA))
            if set(part) - {*_PART_DATA, "thought", "thoughtSignature"}:
                raise _invalid(f"contents[{i}].parts[{j}]: Unknown name.")
            if "inlineData" in part and not (
                isinstance(part["inlineData"].get("mimeType"), str)
                and isinstance(part["inlineData"].get("data"), str)
            ):
                raise _invalid(f"contents[{i}].parts[{j}].inlineData needs mimeType and data.")
        calls = [p["functionCall"]["name"] for p in parts if "functionCall" in p]
        responses = [p["functionResponse"].get("name") for p in parts
                     if "functionResponse" in p]
        if calls and content["role"] != "model":
            raise _invalid(f"contents[{i}]: functionCall parts belong to the model role.")
        if responses:
            if content["role"] != "user":
                raise _invalid(f"contents[{i}]: functionResponse parts belong to the user role.")
            if sorted(responses) != sorted(previous_calls):
                raise _invalid(
                    "Please ensure that the number of function response parts is equal to the "
                    "number of function call parts of the function call turn.")
        previous_calls = calls if content["role"] == "model" else []
