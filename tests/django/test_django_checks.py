"""System checks (stable ids for every config problem) and ``manage.py badgr``."""

from __future__ import annotations

import io
import re
from typing import Any

import pytest
from django.core.checks import Error, Warning
from django.core.management import call_command
from django.core.management.base import CommandError, SystemCheckError
from django.test import Client
from djbadgr_support import CLIENT_KEY, MESSAGES, UPSTREAM_KEY, Upstreams

from badgr_middleware.config import PROBLEM_CODES
from badgr_middleware.simulator import closed_port
from django_badgr.checks import check_id, check_settings


def ids(messages: list[Any]) -> list[str]:
    return [m.id for m in messages]


# --------------------------------------------------------------------------- ids


def test_every_problem_code_has_a_stable_id_by_its_position() -> None:
    errors = [check_id(code) for code in PROBLEM_CODES]
    assert errors == [f"django_badgr.E{n:03d}" for n in range(1, len(PROBLEM_CODES) + 1)]
    assert check_id("no_providers") == "django_badgr.E001"
    assert check_id("unknown_key") == "django_badgr.E002"
    assert check_id("no_inbound_auth", "warning") == "django_badgr.W016"
    assert check_id("bad_toml") == "django_badgr.E021"
    assert all(check_id(code, "warning").endswith(e[-3:]) for code, e in
               zip(PROBLEM_CODES, errors, strict=True))
    # the ids of problems only Django has start at 100: room for 99 more core codes
    assert len(PROBLEM_CODES) < 100


def bad(sims: Upstreams, **changes: Any) -> dict[str, Any]:
    config = sims.config()
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"providers": {}}, ["django_badgr.E001"]),
        ({"clients_keys": ["x"]}, ["django_badgr.E002"]),
        ({"providers": {"openai": {}}, "models": None}, ["django_badgr.E004"]),
        ({"models": {"m": ["no-slash"]}}, ["django_badgr.E008"]),
        ({"models": {"m": ["ghost/model"]}}, ["django_badgr.E009"]),
        ({"max_body_bytes": "big"}, ["django_badgr.E011"]),
        ({"timeouts": {"read": -1}}, ["django_badgr.E012"]),
        ({"client_keys": ["${DJANGO_BADGR_TESTS_UNSET_VARIABLE}"]}, ["django_badgr.E013"]),
        ({"authenticate": "no_such_module_anywhere:check"}, ["django_badgr.E015"]),
        ({"client_keys": None}, ["django_badgr.W016"]),
        ({"prefix": "v1/"}, ["django_badgr.E018", "django_badgr.W100"]),
        ({"prefix": "/v1"}, ["django_badgr.W100"]),
    ],
)
def test_config_problems_become_checks(settings: Any, sims: Upstreams, change: dict[str, Any],
                                       expected: list[str]) -> None:
    settings.BADGR = bad(sims, **change)
    messages = check_settings()
    assert ids(messages) == expected
    for message in messages:
        assert message.obj == "settings.BADGR"
        assert message.hint  # each problem says how to fix it
        assert isinstance(message, Warning if ".W" in message.id else Error)


def test_every_problem_is_reported_at_once(settings: Any, sims: Upstreams) -> None:
    settings.BADGR = bad(sims, providers={"openai": {}}, models={"m": ["ghost/x"]},
                         retry={"attempts": 2})
    assert sorted(ids(check_settings())) == [
        "django_badgr.E002", "django_badgr.E004", "django_badgr.E009",
    ]


def test_keys_are_never_in_check_messages(settings: Any, sims: Upstreams) -> None:
    settings.BADGR = bad(sims, client_keys=[UPSTREAM_KEY, ""], providers={"x": UPSTREAM_KEY})
    text = "\n".join(str(m) for m in check_settings())
    assert UPSTREAM_KEY not in text


def test_manage_py_check_fails_on_a_bad_badgr(settings: Any, sims: Upstreams) -> None:
    settings.BADGR = sims.config()
    call_command("check", stdout=io.StringIO())
    settings.BADGR = bad(sims, providers={"openai": {}}, models=None)
    with pytest.raises(SystemCheckError, match=r"django_badgr\.E004"):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


# --------------------------------------------------------------------------- Django-only keys


def test_badgr_not_set(settings: Any) -> None:
    del settings.BADGR
    assert ids(check_settings()) == ["django_badgr.E100"]
    with pytest.raises(SystemCheckError, match="E100"):
        call_command("check", stdout=io.StringIO(), stderr=io.StringIO())


def test_badgr_not_a_dict(settings: Any) -> None:
    settings.BADGR = "badgr.toml"
    assert ids(check_settings()) == ["django_badgr.E100"]


@pytest.mark.parametrize(
    ("auth", "expected"),
    [
        ("keys", []),
        ("django", []),
        ("badgr_test_auth.by_team_header", []),
        ("badgr_test_auth:by_team_header", []),
        (lambda request: None, []),
        ("badgr_test_auth.NOT_CALLABLE", ["django_badgr.E101"]),
        ("badgr_test_auth.missing", ["django_badgr.E101"]),
        ("no_such_module_anywhere.check", ["django_badgr.E101"]),
        ("Django", ["django_badgr.E101"]),
        (42, ["django_badgr.E101"]),
    ],
)
def test_auth_setting(settings: Any, sims: Upstreams, auth: Any, expected: list[str]) -> None:
    settings.BADGR = {**sims.config(), "auth": auth}
    assert ids(check_settings()) == expected


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ({"auth": "django", "permission": "auth.view_user"}, []),
        ({"auth": "django", "permission": "view_user"}, ["django_badgr.E102"]),
        ({"auth": "django", "permission": ["auth.view_user"]}, ["django_badgr.E102"]),
        ({"permission": "auth.view_user"}, ["django_badgr.E102"]),
    ],
)
def test_permission_setting(settings: Any, sims: Upstreams, extra: dict[str, Any],
                            expected: list[str]) -> None:
    settings.BADGR = {**sims.config(), **extra}
    assert ids(check_settings()) == expected


def test_django_auth_needs_the_authentication_middleware(settings: Any, sims: Upstreams) -> None:
    settings.BADGR = {**sims.config(), "auth": "django"}
    settings.MIDDLEWARE = [m for m in settings.MIDDLEWARE if ".auth." not in m]
    assert ids(check_settings()) == ["django_badgr.E103"]


def test_django_auth_counts_as_inbound_auth(settings: Any, sims: Upstreams) -> None:
    settings.BADGR = {**bad(sims, client_keys=None), "auth": "django"}
    assert ids(check_settings()) == []  # no W016: logged-in users are the inbound auth


# --------------------------------------------------------------------------- manage.py badgr


def run_badgr(*args: str) -> str:
    out = io.StringIO()
    call_command("badgr", *args, stdout=out)
    return out.getvalue()


def test_badgr_check_prints_the_routes_with_keys_masked(settings: Any, sims: Upstreams) -> None:
    settings.BADGR = sims.config()
    text = run_badgr("check")
    assert "Endpoint prefix: /v1\n" in text
    assert re.search(r"primary +openai +http://127\.0\.0\.1:\d+/v1 +key \*\*\*\*\w{4}\n", text)
    assert "chat -> primary/sim-small > backup/sim-small" in text
    assert "Inbound auth: 1 client key(s)" in text
    assert text.endswith("Config OK.\n")
    assert UPSTREAM_KEY not in text
    assert CLIENT_KEY not in text


def test_badgr_check_names_django_auth(settings: Any, sims: Upstreams) -> None:
    settings.BADGR = {**sims.config(), "auth": "django", "permission": "auth.view_user"}
    assert "Inbound auth: logged-in Django users with auth.view_user, then 1 client key(s)" in (
        run_badgr("check")
    )


def test_badgr_check_fails_with_every_problem(settings: Any, sims: Upstreams) -> None:
    settings.BADGR = {**bad(sims, providers={"openai": {}}, models=None), "auth": 42}
    out = io.StringIO()
    with pytest.raises(CommandError, match="BADGR has errors"):
        call_command("badgr", "check", stdout=out)
    text = out.getvalue()
    assert "error: (django_badgr.E101) auth must be a string or a callable" in text
    assert "error: (django_badgr.E004) providers.openai.api_key: api_key is missing" in text
    assert "(fix: " in text


def test_badgr_status_shows_what_this_process_knows(settings: Any, sims: Upstreams) -> None:
    settings.BADGR = sims.config()
    sims.primary.fail_next("429:retry-after=30")
    response = Client().post("/v1/chat/completions",
                             {"model": "chat", "messages": MESSAGES},
                             content_type="application/json",
                             headers={"authorization": f"Bearer {CLIENT_KEY}"})
    assert response["x-badgr-provider"] == "backup"
    lines = run_badgr("status").splitlines()
    assert lines[0].split()[:6] == ["provider", "/", "model", "status", "state", "reason"]
    rows = [line.split()[:4] for line in lines[1:]]
    assert rows[:2] == [
        # the provider is available, but its only target is out: down, at a glance
        ["primary", "down", "available", "-"],
        ["sim-small", "down", "cooling_down", "rate_limited"],  # primary's target, for 30 s
    ]
    assert ["backup", "up", "available", "-"] in rows
    assert UPSTREAM_KEY not in "\n".join(lines)


def test_badgr_status_of_an_unreachable_server(settings: Any, sims: Upstreams) -> None:
    settings.BADGR = sims.config()
    with pytest.raises(CommandError, match="Could not read"):
        run_badgr("status", "--url", f"http://127.0.0.1:{closed_port()}/v1")


def test_badgr_needs_a_subcommand() -> None:
    with pytest.raises(CommandError):
        run_badgr()
