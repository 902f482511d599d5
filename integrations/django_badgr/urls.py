"""``path("v1/", include("django_badgr.urls"))``: every path under the prefix you choose.

One catch-all pattern, so ``chat/completions``, ``models``, ``models/<id with slashes>`` and
paths that do not exist all reach the core endpoint, which owns routing and its OpenAI-shaped
404 and 405. Reverse it as ``reverse("badgr:endpoint", kwargs={"path": "chat/completions"})``.
"""

from __future__ import annotations

from django.urls import re_path

from .views import endpoint

__all__ = ["app_name", "urlpatterns"]

app_name = "badgr"

urlpatterns = [
    re_path(r"^(?P<path>.*)\Z", endpoint, name="endpoint"),
]
