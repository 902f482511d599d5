"""Per-request options: the alias's cost and resume settings, and the x-badgr-* headers that
override them (deadline, resume, price ratio, cost, attempts detail)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from badgr_middleware.config import Config, ResumePolicy
from badgr_middleware.errors import ApiError
from badgr_middleware.http.endpoint import Endpoint
from badgr_middleware.messages import HttpRequest
from badgr_middleware.providers import wire_for
from badgr_middleware.routing.plan import Plan, RoutedRequest, Target, resolve_plan

PROVIDERS = {
    "local": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"},
    "other": {"kind": "openai", "base_url": "http://127.0.0.1:9/v1", "api_key": "k"},
}
MODELS = {
    "plain": ["local/llama", "other/big"],
    "careful": {
        "targets": [{"target": "local/llama", "price": {"input": 1, "output": 2}},
                    {"target": "other/big", "price": {"input": 1, "output": 4}}],
        "max_price_ratio": 1.5,
        "max_cost": 0.25,
        "resume": {"max_sent_tokens": 2000},
        "hedge_after": 2,
    },
    "resumes": {"targets": ["local/llama"], "resume": True},
}
MESSAGES = [{"role": "user", "content": "hi"}]


def make_endpoint(**extra: Any) -> Endpoint:
    data: dict[str, Any] = {"providers": PROVIDERS, "models": MODELS, "allow_anonymous": True,
                            **extra}
    return Endpoint(Config.from_dict(data, env={}))


ENDPOINT = make_endpoint()


def parse(model: str = "careful", headers: dict[str, str] | None = None,
          endpoint: Endpoint = ENDPOINT) -> RoutedRequest:
    body = json.dumps({"model": model, "messages": MESSAGES}).encode()
    request = HttpRequest("POST", "/chat/completions", headers or {}, body)
    return endpoint.parse(request, "chat/completions", "req_1")


def parse_error(headers: dict[str, str], model: str = "careful") -> ApiError:
    with pytest.raises(ApiError) as info:
        parse(model, headers)
    return info.value


# --------------------------------------------------------------------------- the plan


def test_the_plan_carries_the_alias_settings() -> None:
    plan = resolve_plan({"model": "careful"}, ENDPOINT.config)
    assert (plan.max_price_ratio, plan.max_cost, plan.resume) == (1.5, 0.25, ResumePolicy(2000))
    assert plan.hedge_after == 2.0


@pytest.mark.parametrize("model", ["plain", "local/llama", ["local/x", "careful"]])
def test_without_an_alias_setting_the_plan_has_none(model: Any) -> None:
    body = {"model": model} if isinstance(model, str) else {"models": model}
    plan = resolve_plan(body, ENDPOINT.config)
    assert (plan.max_price_ratio, plan.max_cost, plan.resume) == (None, None, None)


def test_fallback_models_do_not_lend_their_settings() -> None:
    # like routing and hedge_after: the first model's alias decides
    plan = resolve_plan({"model": "plain", "models": ["careful"]}, ENDPOINT.config)
    assert plan.max_cost is None


def test_plans_built_by_hand_keep_working() -> None:
    plan = Plan((Target("a", "x"),))
    assert (plan.max_price_ratio, plan.max_cost, plan.resume) == (None, None, None)
    routed = RoutedRequest("chat/completions", {}, plan, "r")
    assert (routed.resume, routed.max_price_ratio, routed.max_cost, routed.deadline,
            routed.attempts_detail) == (None, None, None, None, False)


# --------------------------------------------------------------------------- defaults


def test_the_routed_request_takes_the_plans_settings() -> None:
    routed = parse()
    assert routed.resume == ResumePolicy(2000)
    assert (routed.max_price_ratio, routed.max_cost) == (1.5, 0.25)
    assert routed.hedge_after == 2.0
    assert routed.deadline is None
    assert routed.attempts_detail is False


def test_attempts_detail_defaults_to_the_config() -> None:
    assert parse(endpoint=make_endpoint(attempts_detail=True)).attempts_detail is True
    assert parse("plain").attempts_detail is False


# --------------------------------------------------------------------------- headers


@pytest.mark.parametrize(("value", "seconds"), [
    ("20000", 20.0), ("1", 0.001), (" 1500 ", 1.5), ("0300", 0.3),
])
def test_deadline_header(value: str, seconds: float) -> None:
    assert parse(headers={"x-badgr-deadline-ms": value}).deadline == seconds


@pytest.mark.parametrize(("value", "expected"), [
    ("true", ResumePolicy(2000)),  # on, with the alias's own limit
    ("TRUE", ResumePolicy(2000)),
    ("false", None),
    ("500", ResumePolicy(500)),
])
def test_resume_header_on_a_resuming_alias(value: str, expected: ResumePolicy | None) -> None:
    assert parse(headers={"x-badgr-resume": value}).resume == expected


@pytest.mark.parametrize(("value", "expected"), [
    ("true", ResumePolicy()), ("false", None), ("1", ResumePolicy(1)),
])
def test_resume_header_without_alias_setting(value: str, expected: ResumePolicy | None) -> None:
    assert parse("plain", {"x-badgr-resume": value}).resume == expected


def test_resume_true_keeps_the_alias_default() -> None:
    assert parse("resumes").resume == ResumePolicy(4000)
    assert parse("resumes", {"x-badgr-resume": "false"}).resume is None


@pytest.mark.parametrize(("value", "ratio"), [("2", 2.0), ("0.5", 0.5), (" 1e1 ", 10.0)])
def test_max_price_ratio_header(value: str, ratio: float) -> None:
    """A client may tighten the alias's limit (1.5), never loosen it; without an alias
    limit the header is the limit."""
    assert parse(headers={"x-badgr-max-price-ratio": value}).max_price_ratio == min(1.5, ratio)
    assert parse("plain", {"x-badgr-max-price-ratio": value}).max_price_ratio == ratio


@pytest.mark.parametrize(("value", "cost"), [("0.05", 0.05), ("3", 3.0), ("0.0001", 0.0001)])
def test_max_cost_header(value: str, cost: float) -> None:
    assert parse(headers={"x-badgr-max-cost": value}).max_cost == min(0.25, cost)
    assert parse("plain", {"x-badgr-max-cost": value}).max_cost == cost


@pytest.mark.parametrize(("value", "flag"), [
    ("true", True), ("1", True), ("True", True), ("false", False), ("0", False),
    (" FALSE ", False),
])
def test_attempts_detail_header(value: str, flag: bool) -> None:
    assert parse(headers={"x-badgr-attempts-detail": value}).attempts_detail is flag
    on = make_endpoint(attempts_detail=True)
    assert parse(headers={"x-badgr-attempts-detail": value}, endpoint=on).attempts_detail is flag


def test_headers_together() -> None:
    routed = parse("plain", {
        "x-badgr-deadline-ms": "5000", "x-badgr-resume": "300", "x-badgr-max-price-ratio": "1",
        "x-badgr-max-cost": "0.01", "x-badgr-attempts-detail": "1", "x-badgr-hedge-after": "off",
    })
    assert (routed.deadline, routed.resume, routed.max_price_ratio, routed.max_cost,
            routed.attempts_detail, routed.hedge_after) == (
        5.0, ResumePolicy(300), 1.0, 0.01, True, None)


@pytest.mark.parametrize(("header", "value"), [
    ("x-badgr-deadline-ms", "0"),
    ("x-badgr-deadline-ms", "-5"),
    ("x-badgr-deadline-ms", "1.5"),
    ("x-badgr-deadline-ms", "20s"),
    ("x-badgr-deadline-ms", ""),
    ("x-badgr-deadline-ms", "1e3"),
    ("x-badgr-deadline-ms", "9" * 5000),
    ("x-badgr-deadline-ms", "١٢٣"),  # digits of another script
    ("x-badgr-resume", "yes"),
    ("x-badgr-resume", "0"),
    ("x-badgr-resume", "-1"),
    ("x-badgr-resume", "1.5"),
    ("x-badgr-resume", ""),
    ("x-badgr-max-price-ratio", "0"),
    ("x-badgr-max-price-ratio", "-1"),
    ("x-badgr-max-price-ratio", "inf"),
    ("x-badgr-max-price-ratio", "nan"),
    ("x-badgr-max-price-ratio", "cheap"),
    ("x-badgr-max-price-ratio", ""),
    ("x-badgr-max-cost", "0"),
    ("x-badgr-max-cost", "$0.05"),
    ("x-badgr-max-cost", "-0.01"),
    ("x-badgr-max-cost", "Infinity"),
    ("x-badgr-attempts-detail", "yes"),
    ("x-badgr-attempts-detail", "2"),
    ("x-badgr-attempts-detail", ""),
])
def test_bad_header_values_are_400(header: str, value: str) -> None:
    error = parse_error({header: value})
    assert (error.status, error.type, error.param, error.code) == (
        400, "invalid_request_error", header, "invalid_value")
    assert error.message.startswith(f"{header} must be ")
    assert json.loads(error.body())["error"]["param"] == header


def test_the_body_is_checked_before_the_headers() -> None:
    body = json.dumps({"model": "nope", "messages": MESSAGES}).encode()
    request = HttpRequest("POST", "/chat/completions", {"x-badgr-max-cost": "0"}, body)
    with pytest.raises(ApiError) as info:
        ENDPOINT.parse(request, "chat/completions", "req_1")
    assert info.value.status == 404


def test_option_headers_never_reach_the_upstream() -> None:
    headers = {"x-badgr-deadline-ms": "5000", "x-badgr-resume": "true",
               "x-badgr-max-price-ratio": "2", "x-badgr-max-cost": "1",
               "x-badgr-attempts-detail": "1", "x-badgr-hedge-after": "1"}
    routed = parse("plain", headers)
    for target in routed.plan.targets:
        upstream = wire_for(ENDPOINT.config.providers[target.provider]).build_request(
            routed, target)
        names = {name.lower() for name in upstream.headers}
        assert not any(name.startswith("x-badgr") for name in names), names
        assert b"x-badgr" not in upstream.content
