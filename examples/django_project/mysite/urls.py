from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    # the prefix is yours to choose; clients use base_url="http://<host>/v1"
    path("v1/", include("django_badgr.urls")),
]
