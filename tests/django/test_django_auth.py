"""Inbound auth modes: client keys, the logged-in Django user (with a permission, with CSRF),
and a dotted-path callable taking the Django request; sync (WSGI) and async (ASGI) paths."""

from __future__ import annotations

import json
from typing import Any

import pytest
from badgr_test_auth import by_team_header
from django.contrib.auth.models import Permission
from django.test import AsyncClient, Client
from djbadgr_support import CLIENT_KEY, MESSAGES, Upstreams, run_async

BODY = json.dumps({"model": "chat", "messages": MESSAGES})
CSRF_SECRET = "a" * 32  # any 32 allowed characters are a valid (unmasked) CSRF token


def chat(client: Client, **headers: str) -> Any:
    return client.post("/v1/chat/completions", BODY, content_type="application/json",
                       headers=headers)


def achat(client: AsyncClient, **headers: str) -> Any:
    async def call() -> Any:
        return await client.post("/v1/chat/completions", BODY, content_type="application/json",
                                 headers=headers)

    return run_async(call)


def error_of(response: Any, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.content
    error: dict[str, Any] = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


@pytest.fixture
def django_auth(settings: Any, sims: Upstreams) -> Upstreams:
    settings.BADGR = {**sims.config(), "auth": "django"}
    return sims


@pytest.fixture
def alice(django_user_model: Any) -> Any:
    return django_user_model.objects.create_user("alice", password="not-used")


# --------------------------------------------------------------------------- client keys


@pytest.mark.usefixtures("badgr_config")
def test_client_keys(client: Client) -> None:
    assert chat(client, authorization=f"Bearer {CLIENT_KEY}").status_code == 200
    missing = chat(client)
    assert error_of(missing, 401)["code"] == "invalid_api_key"
    assert missing["WWW-Authenticate"] == 'Bearer realm="badgr"'
    assert error_of(chat(client, authorization="Bearer wrong"), 401)["message"] == (
        "Incorrect API key provided."
    )


@pytest.mark.usefixtures("badgr_config")
def test_client_keys_async() -> None:
    assert achat(AsyncClient(), authorization=f"Bearer {CLIENT_KEY}").status_code == 200
    assert error_of(achat(AsyncClient()), 401)["code"] == "invalid_api_key"


@pytest.mark.django_db
@pytest.mark.usefixtures("badgr_config")
def test_a_session_is_not_enough_by_default(client: Client, alice: Any) -> None:
    client.force_login(alice)
    assert error_of(chat(client), 401)["code"] == "invalid_api_key"


# --------------------------------------------------------------------------- Django users


@pytest.mark.django_db
@pytest.mark.usefixtures("django_auth")
def test_logged_in_user(client: Client, alice: Any) -> None:
    assert error_of(chat(client), 401)["code"] == "invalid_api_key"
    client.force_login(alice)
    assert chat(client).status_code == 200


@pytest.mark.django_db
@pytest.mark.usefixtures("django_auth")
def test_logged_in_user_async(alice: Any) -> None:
    client = AsyncClient()
    assert error_of(achat(client), 401)["code"] == "invalid_api_key"
    client.force_login(alice)
    assert achat(client).status_code == 200


@pytest.mark.django_db
@pytest.mark.usefixtures("django_auth")
def test_client_keys_still_work_with_django_auth(client: Client, alice: Any) -> None:
    assert chat(client, authorization=f"Bearer {CLIENT_KEY}").status_code == 200
    # a bearer key is checked as a key, even when a session is logged in as well
    client.force_login(alice)
    assert error_of(chat(client, authorization="Bearer wrong"), 401)["code"] == (
        "invalid_api_key"
    )


@pytest.mark.django_db
def test_permission_required(settings: Any, sims: Upstreams, client: Client, alice: Any) -> None:
    settings.BADGR = {**sims.config(), "auth": "django", "permission": "auth.view_user"}
    client.force_login(alice)
    error = error_of(chat(client), 403)
    assert error["code"] == "permission_denied"
    assert not sims.primary.requests
    alice.user_permissions.add(Permission.objects.get(codename="view_user"))
    assert chat(client).status_code == 200


@pytest.mark.django_db
def test_permission_required_async(settings: Any, sims: Upstreams, alice: Any) -> None:
    settings.BADGR = {**sims.config(), "auth": "django", "permission": "auth.view_user"}
    client = AsyncClient()
    client.force_login(alice)
    assert error_of(achat(client), 403)["code"] == "permission_denied"
    alice.user_permissions.add(Permission.objects.get(codename="view_user"))
    assert achat(client).status_code == 200


@pytest.mark.django_db
@pytest.mark.usefixtures("django_auth")
def test_a_session_login_is_csrf_checked(alice: Any) -> None:
    """The view is CSRF-exempt for key clients; a cookie login must prove it is no CSRF."""
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    assert error_of(chat(client), 403)["code"] == "csrf_failed"
    client.cookies["csrftoken"] = CSRF_SECRET
    assert chat(client, **{"x-csrftoken": CSRF_SECRET}).status_code == 200
    # GET is safe: no token needed
    assert Client(enforce_csrf_checks=True).get("/v1/models").status_code == 401
    client.cookies.pop("csrftoken")
    assert client.get("/v1/models").status_code == 200


# --------------------------------------------------------------------------- callables


@pytest.mark.parametrize(
    "auth",
    [
        "badgr_test_auth.by_team_header",
        "badgr_test_auth:by_team_header",
        by_team_header,
        "badgr_test_auth.async_by_team_header",
    ],
    ids=["dotted", "colon", "callable", "async-def"],
)
@pytest.mark.parametrize("asynchronous", [False, True], ids=["wsgi", "asgi"])
def test_auth_callable(settings: Any, sims: Upstreams, auth: Any, asynchronous: bool) -> None:
    settings.BADGR = {**sims.config(), "auth": auth}

    def call(**headers: str) -> Any:
        return achat(AsyncClient(), **headers) if asynchronous else chat(Client(), **headers)

    assert call(**{"x-team": "llm"}).status_code == 200
    denied = error_of(call(**{"x-team": "banned"}), 403)
    assert denied["code"] == "permission_denied"
    assert denied["message"] == "This team may not use the LLM endpoint."
    # nothing from the callable: the core's rules decide
    assert error_of(call(), 401)["code"] == "invalid_api_key"
    assert call(authorization=f"Bearer {CLIENT_KEY}").status_code == 200


def test_a_crashing_auth_callable_is_a_logged_500(
    settings: Any, sims: Upstreams, client: Client, caplog: pytest.LogCaptureFixture
) -> None:
    settings.BADGR = {**sims.config(), "auth": "badgr_test_auth.crashing"}
    error = error_of(chat(client), 500)
    assert error["code"] == "internal_error"
    assert "a bug in the project's auth callable" not in error["message"]
    assert "a bug in the project's auth callable" in caplog.text
    assert not sims.primary.requests
