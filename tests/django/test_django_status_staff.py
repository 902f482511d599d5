"""``BADGR["status_auth"] = "staff"``: GET /status for logged-in staff users (and status
keys) only, under WSGI and ASGI; the status page's HTML shell needs no login."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import AsyncClient, Client
from djbadgr_support import CLIENT_KEY, Upstreams, run_async

STATUS_KEY = "django-status-operator-key"


@pytest.fixture
def staff_status(settings: Any, sims: Upstreams) -> Upstreams:
    settings.BADGR = {**sims.config(), "status_auth": "staff", "status_keys": [STATUS_KEY],
                      "auth": "django"}
    return sims


def users(django_user_model: Any) -> tuple[Any, Any]:
    staff = django_user_model.objects.create_user("sam", password="x", is_staff=True)
    plain = django_user_model.objects.create_user("pat", password="x")
    return staff, plain


@pytest.mark.usefixtures("staff_status")
def test_only_staff_and_status_keys_read_the_status(client: Client,
                                                    django_user_model: Any) -> None:
    staff, plain = users(django_user_model)
    assert client.get("/v1/status").status_code == 401
    assert client.get("/v1/status",
                      headers={"authorization": f"Bearer {CLIENT_KEY}"}).status_code == 401
    assert client.get("/v1/status",
                      headers={"authorization": f"Bearer {STATUS_KEY}"}).status_code == 200
    client.force_login(plain)
    assert client.get("/v1/status").status_code == 401
    client.force_login(staff)
    response = client.get("/v1/status")
    assert response.status_code == 200
    assert response.json()["object"] == "badgr.status"
    # the page itself is a static shell, and its script reads the JSON with the session
    page = client.get("/v1/status", headers={"accept": "text/html"})
    assert page.status_code == 200 and page["content-type"].startswith("text/html")


@pytest.mark.usefixtures("staff_status")
def test_staff_under_asgi(async_client: AsyncClient, django_user_model: Any) -> None:
    staff, plain = users(django_user_model)

    async def read(user: Any) -> int:
        await async_client.aforce_login(user)
        response = await async_client.get("/v1/status")
        return int(response.status_code)

    assert run_async(lambda: read(plain)) == 401
    assert run_async(lambda: read(staff)) == 200
