"""Inbound authentication the Django way: ``BADGR["auth"]``.

``"keys"`` (the default)
    Only the core's rules: ``Authorization: Bearer <one of client_keys>``, the core's
    ``authenticate`` callable, ``allow_anonymous``.
``"django"``
    A logged-in Django user may call the endpoint from the browser (session cookie). With
    ``BADGR["permission"] = "app_label.codename"`` the user also needs that permission, or
    gets a 403. The view itself is CSRF-exempt (API clients send keys, not cookies), so a
    request authenticated by its session cookie is CSRF-checked here, as Django REST
    framework does: a browser client sends the ``X-CSRFToken`` header. A request that carries
    a bearer key skips the session and is checked against ``client_keys``.
``"package.module.function"`` (or ``"package.module:function"``, or the callable itself)
    Called with the Django :class:`~django.http.HttpRequest`; returns a principal (anything
    truthy: a user, a token row) to let the request in, or a falsy value to fall back to the
    core's rules. Raise :class:`~django.core.exceptions.PermissionDenied` for a 403. May be
    ``async def``.

Whatever lets a request in, the answer to one that nothing lets in is the core's 401.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from asgiref.sync import async_to_sync, iscoroutinefunction, sync_to_async
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest
from django.middleware.csrf import CsrfViewMiddleware
from django.utils.module_loading import import_string

from badgr_middleware.errors import ApiError

from .conf import AUTH_DJANGO, AUTH_KEYS, badgr_settings

__all__ = [
    "authenticate", "authenticate_async", "needs_django", "resolve_callable", "staff_user",
]


def needs_django(mode: Any) -> bool:
    """Whether ``mode`` asks Django (users, a callable) before the core's own rules."""
    return mode != AUTH_KEYS


def resolve_callable(mode: Any) -> Callable[..., Any]:
    """The callable ``BADGR["auth"]`` names; ImportError/TypeError when it names none."""
    if callable(mode):
        return mode
    if not isinstance(mode, str) or mode in (AUTH_KEYS, AUTH_DJANGO):
        raise TypeError("BADGR['auth'] is not a dotted path")
    found = import_string(mode.replace(":", "."))
    if not callable(found):
        raise TypeError("BADGR['auth'] does not name a callable")
    return found  # type: ignore[no-any-return]


def authenticate(request: HttpRequest) -> Any:
    """The Django principal of ``request`` (sync code), or None to let the core decide.

    Raises :class:`ApiError` (403) for a user without the permission or a failed CSRF check.
    """
    mode = badgr_settings.auth
    if mode == AUTH_KEYS:
        return None
    if mode == AUTH_DJANGO:
        return _logged_in_user(request)
    check = resolve_callable(mode)
    if iscoroutinefunction(check):
        return _call(async_to_sync(check), request)
    return _call(check, request)


async def authenticate_async(request: HttpRequest) -> Any:
    """:func:`authenticate` for async code: sessions and sync callables run in Django's
    sync thread (they may touch the database); an ``async def`` callable is awaited."""
    mode = badgr_settings.auth
    if mode == AUTH_KEYS:
        return None
    if mode == AUTH_DJANGO:
        return await sync_to_async(_logged_in_user)(request)
    check = resolve_callable(mode)
    if iscoroutinefunction(check):
        try:
            principal = await check(request)
        except PermissionDenied as denied:
            raise _forbidden(denied) from None
        return principal or None
    return await sync_to_async(_call)(check, request)


def _call(check: Callable[..., Any], request: HttpRequest) -> Any:
    try:
        principal = check(request)
    except PermissionDenied as denied:
        raise _forbidden(denied) from None
    if inspect.isawaitable(principal):  # a sync callable that returned a coroutine
        raise TypeError("BADGR['auth'] returned an awaitable; declare it 'async def'")
    return principal or None


def staff_user(request: HttpRequest) -> Any:
    """The logged-in staff user (``is_staff``), for ``BADGR["status_auth"] = "staff"``; else
    None. The status snapshot is only read (GET), so no CSRF check is needed."""
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated and user.is_active and user.is_staff:
        return user
    return None


def _logged_in_user(request: HttpRequest) -> Any:
    if _has_bearer(request):
        return None
    user = getattr(request, "user", None)
    if user is None or not user.is_authenticated:
        return None
    reason = _csrf_failure(request)
    if reason is not None:
        raise ApiError(403, f"CSRF check failed: {reason}", code="csrf_failed")
    permission = badgr_settings.permission
    if permission and not user.has_perm(permission):
        raise ApiError(403, "Your account is not allowed to use this endpoint.",
                       code="permission_denied")
    return user


def _has_bearer(request: HttpRequest) -> bool:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and bool(token.strip())


class _CsrfCheck(CsrfViewMiddleware):
    def _reject(self, request: HttpRequest, reason: str) -> Any:
        return reason


def _no_response(request: HttpRequest) -> Any:  # pragma: no cover - never called
    raise AssertionError


def _csrf_failure(request: HttpRequest) -> str | None:
    """Why the session-authenticated ``request`` fails Django's CSRF check, or None."""
    check = _CsrfCheck(_no_response)
    check.process_request(request)  # reads the CSRF cookie into request.META
    reason = check.process_view(request, None, (), {})  # type: ignore[arg-type]
    return reason if isinstance(reason, str) else None


def _forbidden(denied: PermissionDenied) -> ApiError:
    message = str(denied) or "You are not allowed to use this endpoint."
    return ApiError(403, message, code="permission_denied")
