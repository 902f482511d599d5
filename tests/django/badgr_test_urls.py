"""The URLconf of tests/django: the endpoint under /v1/, and again under a second prefix."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("v1/", include("django_badgr.urls")),
    path("team/llm/", include("django_badgr.urls", namespace="team")),
]
