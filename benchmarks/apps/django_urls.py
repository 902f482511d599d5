from __future__ import annotations

from django.urls import include, path

urlpatterns = [path("v1/", include("django_badgr.urls"))]
