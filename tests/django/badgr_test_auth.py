"""``BADGR["auth"]`` callables for test_django_auth.py (imported by dotted path)."""

from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest


def by_team_header(request: HttpRequest) -> str | None:
    """``X-Team: banned`` is refused, any other team is let in, no header falls through."""
    team = request.headers.get("X-Team")
    if team == "banned":
        raise PermissionDenied("This team may not use the LLM endpoint.")
    return f"team:{team}" if team else None


async def async_by_team_header(request: HttpRequest) -> str | None:
    return by_team_header(request)


def crashing(request: HttpRequest) -> str:
    raise RuntimeError("a bug in the project's auth callable")


NOT_CALLABLE = "just a string"
