"""The framework-neutral endpoint: routing of paths, inbound auth, parsing and validation.

Everything here is pure: a :class:`HttpRequest` comes in, and out comes either a finished
:class:`HttpResponse` (errors, ``GET /models``) or a :class:`RoutedRequest` for a driver.
"""

from __future__ import annotations

import hmac
import json
import math
import re
import secrets
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..config import ResumePolicy
from ..errors import ApiError
from ..messages import HttpRequest, HttpResponse
from ..routing.plan import Plan, RoutedRequest, resolve_plan

if TYPE_CHECKING:
    from ..config import Config

__all__ = ["Endpoint", "POST_ROUTES"]

POST_ROUTES = frozenset({"chat/completions", "completions", "embeddings"})
GET_ROUTES = frozenset({"models", "status"})
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_WHOLE_NUMBER = re.compile(r"[0-9]{1,15}")
_JSON = [("content-type", "application/json")]
_OPTION_HEADERS = frozenset({
    "x-badgr-hedge-after", "x-badgr-deadline-ms", "x-badgr-resume", "x-badgr-max-price-ratio",
    "x-badgr-max-cost", "x-badgr-attempts-detail",
})


class Endpoint:
    """Turns inbound requests into routed requests or immediate responses."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self._keys = [key.reveal().encode() for key in config.client_keys]
        self._status_keys = [key.reveal().encode() for key in config.status_keys]
        self._authenticate: Callable[[HttpRequest], Any] | None = config.authenticate
        self._plans: dict[str, Plan] = {}  # resolve_plan's cache for this config

    @staticmethod
    def request_id(request: HttpRequest) -> str:
        given = request.headers.get("x-request-id", "")
        if _REQUEST_ID.fullmatch(given):
            return given
        return f"req_{secrets.token_hex(12)}"

    @staticmethod
    def route_of(request: HttpRequest) -> str:
        """The route: ``chat/completions``, ``models``, ``models/<id>``..., or a 404/405."""
        path = request.path.strip("/")
        method = request.method.upper()
        if path in POST_ROUTES:
            if method != "POST":
                raise ApiError(405, f"Method {method} is not allowed on /{path}; use POST.",
                               code="method_not_allowed", headers=[("allow", "POST")])
            return path
        if path in GET_ROUTES or path.startswith("models/"):
            if method not in ("GET", "HEAD"):
                raise ApiError(405, f"Method {method} is not allowed on /{path}; use GET.",
                               code="method_not_allowed", headers=[("allow", "GET")])
            return path
        raise ApiError(404, f"Invalid URL ({method} {request.prefix}{request.path})",
                       code="unknown_url")

    def authenticate(self, request: HttpRequest) -> Any:
        """The caller's principal (or an awaitable of it); raise 401 when there is none.

        Order: a principal an adapter already set; a configured client key in
        ``Authorization: Bearer``; the configured ``authenticate`` callable;
        ``allow_anonymous``.
        """
        if request.principal is not None:
            return request.principal
        token = _bearer(request.headers.get("authorization", ""))
        if token and self._keys:
            given = token.encode()
            # compare against every key so the time taken does not tell which one matched
            matched = False
            for key in self._keys:
                matched |= hmac.compare_digest(given, key)
            if matched:
                return "client_key"
        if self._authenticate is not None:
            return self._authenticate(request)
        if self.config.allow_anonymous:
            return "anonymous"
        raise _unauthorized(bool(token))

    def authenticate_status(self, request: HttpRequest) -> Any:
        """The principal allowed to read ``GET /status`` (or an awaitable of it), else 401.

        A configured ``status_keys`` entry always lets the caller in. Then, by
        ``status_auth``: ``"clients"``, the API's own rules; ``"staff"``, a principal the
        adapter set (the Django adapter sets one for staff users only); ``"operators"``,
        nothing else.
        """
        token = _bearer(request.headers.get("authorization", ""))
        if token and self._status_keys:
            given = token.encode()
            matched = False
            for key in self._status_keys:
                matched |= hmac.compare_digest(given, key)
            if matched:
                return "operator"
        mode = self.config.status_auth
        if mode == "clients":
            return self.authenticate(request)
        if mode == "staff" and request.principal is not None:
            return request.principal
        raise _unauthorized(bool(token))

    def check_principal(self, principal: Any, request: HttpRequest) -> None:
        if not principal:
            raise _unauthorized(bool(_bearer(request.headers.get("authorization", ""))))

    def parse(self, request: HttpRequest, route: str, request_id: str) -> RoutedRequest:
        """Validate a POST body and resolve its targets."""
        if not _is_json(request.headers.get("content-type", "application/json")):
            raise ApiError(415, "Send the request body as JSON (Content-Type: application/json).",
                           code="unsupported_media_type")
        if len(request.body) > self.config.max_body_bytes:
            raise body_too_large(self.config.max_body_bytes)
        try:
            body = json.loads(request.body.decode("utf-8"))
        except UnicodeDecodeError:
            raise ApiError(400, "The request body is not valid UTF-8.",
                           code="invalid_encoding") from None
        except RecursionError:
            raise ApiError(400, "The request body is nested too deeply.",
                           code="invalid_json") from None
        except ValueError as exc:
            raise ApiError(400, f"We could not parse the JSON body of your request. ({exc})",
                           code="invalid_json") from None
        if not isinstance(body, dict):
            raise ApiError(400, "The request body must be a JSON object.", code="invalid_json")
        _validate(route, body)
        plan = resolve_plan(body, self.config, self._plans)
        model = body.get("model") or body["models"][0]
        routed = RoutedRequest(
            route, body, plan, request_id, bool(body.get("stream")), model,
            hedge_after=plan.hedge_after, resume=plan.resume,
            max_price_ratio=plan.max_price_ratio, max_cost=plan.max_cost,
            attempts_detail=self.config.attempts_detail, raw=request.body,
        )
        _apply_headers(routed, request.headers, plan)
        return routed

    def models(self, route: str) -> HttpResponse:
        """``GET /models``: the aliases and every model a provider declares."""
        entries: dict[str, str] = dict.fromkeys(self.config.models, "badgr")
        for provider in self.config.providers.values():
            for model in provider.models:
                entries.setdefault(f"{provider.name}/{model}", provider.name)
        data = [
            {"id": i, "object": "model", "created": 0, "owned_by": o} for i, o in entries.items()
        ]
        if route == "models":
            return HttpResponse(200, list(_JSON), _dumps({"object": "list", "data": data}))
        wanted = route.removeprefix("models/")
        for entry in data:
            if entry["id"] == wanted:
                return HttpResponse(200, list(_JSON), _dumps(entry))
        raise ApiError(404, f"The model '{wanted}' does not exist", param="model",
                       code="model_not_found")


def body_too_large(limit: int) -> ApiError:
    return ApiError(413, f"The request body is larger than {limit} bytes.",
                    code="request_too_large")


def error_response(error: ApiError, request_id: str) -> HttpResponse:
    headers = [*_JSON, ("x-request-id", request_id), *error.headers]
    return HttpResponse(error.status, headers, error.body())


def _apply_headers(routed: RoutedRequest, headers: Mapping[str, str], plan: Plan) -> None:
    """Lay the request's ``x-badgr-*`` option headers over the plan's and config's settings.

    They are read here only: upstream requests are built from the configuration and the body,
    so no client header ever reaches a provider.
    """
    if _OPTION_HEADERS.isdisjoint(headers):
        return
    value = headers.get("x-badgr-hedge-after")
    if value is not None:
        routed.hedge_after = _hedge_setting(value)
    value = headers.get("x-badgr-deadline-ms")
    if value is not None:
        routed.deadline = _deadline_setting(value)
    value = headers.get("x-badgr-resume")
    if value is not None:
        routed.resume = _resume_setting(value, plan.resume)
    # a client may tighten the alias's price limits, never loosen them
    value = headers.get("x-badgr-max-price-ratio")
    if value is not None:
        routed.max_price_ratio = _tighter(plan.max_price_ratio, _positive_number(
            "x-badgr-max-price-ratio", value, "a number greater than 0, e.g. 1.5"))
    value = headers.get("x-badgr-max-cost")
    if value is not None:
        routed.max_cost = _tighter(plan.max_cost, _positive_number(
            "x-badgr-max-cost", value, "a number of US dollars greater than 0, e.g. 0.05"))
    value = headers.get("x-badgr-attempts-detail")
    if value is not None:
        routed.attempts_detail = _flag_setting("x-badgr-attempts-detail", value)


def _tighter(configured: float | None, asked: float) -> float:
    return asked if configured is None else min(configured, asked)


def _invalid_header(name: str, expected: str) -> ApiError:
    return ApiError(400, f"{name} must be {expected}.", param=name, code="invalid_value")


def _deadline_setting(value: str) -> float:
    """``x-badgr-deadline-ms``: a whole number of milliseconds, at least 1; in seconds."""
    text = value.strip()
    if not _WHOLE_NUMBER.fullmatch(text) or int(text) < 1:
        raise _invalid_header("x-badgr-deadline-ms",
                              "a positive whole number of milliseconds, e.g. 20000")
    return int(text) / 1000.0


def _resume_setting(value: str, configured: ResumePolicy | None) -> ResumePolicy | None:
    """``x-badgr-resume``: ``true`` (the alias's policy, or the default one), ``false``, or
    the largest number of already-sent tokens after which a broken stream is not resumed."""
    text = value.strip().lower()
    if text == "true":
        return configured or ResumePolicy()
    if text == "false":
        return None
    if _WHOLE_NUMBER.fullmatch(text) and int(text) >= 1:
        return ResumePolicy(int(text))
    raise _invalid_header("x-badgr-resume",
                          "true, false or a positive whole number of tokens, e.g. 2000")


def _positive_number(name: str, value: str, expected: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        number = math.nan
    if not (math.isfinite(number) and number > 0):
        raise _invalid_header(name, expected)
    return number


def _flag_setting(name: str, value: str) -> bool:
    text = value.strip().lower()
    if text in ("true", "1"):
        return True
    if text in ("false", "0"):
        return False
    raise _invalid_header(name, "true, 1, false or 0")


def _hedge_setting(value: str) -> float | str | None:
    """``x-badgr-hedge-after``: seconds, ``p95``, or ``off``."""
    value = value.strip().lower()
    if value == "off":
        return None
    if value == "p95":
        return "p95"
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds < 3600:
        raise ApiError(400, "x-badgr-hedge-after must be a number of seconds, 'p95' or 'off'.",
                       param="x-badgr-hedge-after", code="invalid_value")
    return seconds


def _is_json(content_type: str) -> bool:
    """``application/json`` or ``application/<x>+json``, parameters allowed.

    Strict on purpose: a browser sends ``text/plain`` cross-site without a CORS preflight, so
    accepting it would open cookie-authenticated apps to cross-site requests.
    """
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


def _dumps(data: Any) -> bytes:
    return json.dumps(data, separators=(",", ":")).encode()


def _bearer(value: str) -> str:
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _unauthorized(had_token: bool) -> ApiError:
    if had_token:
        message = "Incorrect API key provided."
    else:
        message = "You didn't provide an API key. Send it as 'Authorization: Bearer <key>'."
    return ApiError(401, message, code="invalid_api_key",
                    headers=[("www-authenticate", 'Bearer realm="badgr"')])


# -- validation ------------------------------------------------------------------------------

_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


def _validate(route: str, body: Mapping[str, Any]) -> None:
    """Reject what no upstream could serve; everything else passes through untouched."""
    _check_type(body, "stream", bool)
    if body.get("stream_options") is not None:
        _check_type(body, "stream_options", dict)
        if not body.get("stream"):
            raise ApiError(400, "'stream_options' is only allowed when 'stream' is true.",
                           param="stream_options", code="invalid_value")
    _check_int(body, "n", 1, 128)
    _check_int(body, "max_tokens", 1, None)
    _check_int(body, "max_completion_tokens", 1, None)
    _check_number(body, "temperature", 0, 2)
    _check_number(body, "top_p", 0, 1)
    if route == "chat/completions":
        _validate_messages(body.get("messages"))
    elif route == "completions":
        prompt = body.get("prompt")
        if prompt is None:
            raise _missing("prompt")
        if not isinstance(prompt, str | list):
            raise _wrong_type("prompt", "a string or an array")
    elif route == "embeddings":
        value = body.get("input")
        if value is None:
            raise _missing("input")
        if not isinstance(value, str | list) or value in ("", []):
            raise ApiError(400, "'input' must be a non-empty string or array.", param="input",
                           code="invalid_value")
        if body.get("stream"):
            raise ApiError(400, "Embeddings cannot be streamed.", param="stream",
                           code="invalid_value")


def _validate_messages(messages: object) -> None:
    if messages is None:
        raise _missing("messages")
    if not isinstance(messages, list):
        raise _wrong_type("messages", "an array")
    if not messages:
        raise ApiError(400, "'messages' must contain at least one message.", param="messages",
                       code="invalid_value")
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise _wrong_type(f"messages[{i}]", "an object")
        role = message.get("role")
        if not isinstance(role, str):
            raise _missing(f"messages[{i}].role")
        if role not in _ROLES:
            raise ApiError(400, f"Invalid value for 'messages[{i}].role': {role[:40]!r}.",
                           param=f"messages[{i}].role", code="invalid_value")


def _check_type(body: Mapping[str, Any], name: str, kind: type) -> None:
    value = body.get(name)
    if value is not None and not isinstance(value, kind):
        raise _wrong_type(name, {bool: "a boolean", dict: "an object"}.get(kind, kind.__name__))


def _check_int(body: Mapping[str, Any], name: str, low: int, high: int | None) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise _wrong_type(name, "an integer")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ApiError(400, f"'{name}' must be {bound}; got {value}.", param=name,
                       code="invalid_value")


def _check_number(body: Mapping[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name)
    if value is None:
        return
    if not isinstance(value, int | float) or isinstance(value, bool):
        raise _wrong_type(name, "a number")
    if not low <= value <= high:
        raise ApiError(400, f"'{name}' must be between {low} and {high}; got {value}.",
                       param=name, code="invalid_value")


def _missing(name: str) -> ApiError:
    return ApiError(400, f"Missing required parameter: '{name}'.", param=name,
                    code="missing_required_parameter")


def _wrong_type(name: str, expected: str) -> ApiError:
    return ApiError(400, f"Invalid type for '{name}': expected {expected}.", param=name,
                    code="invalid_type")
