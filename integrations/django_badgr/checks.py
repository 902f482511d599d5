"""System checks: every problem in ``settings.BADGR``, each with a stable id.

A core problem's id follows its code's position in
:data:`badgr_middleware.config.PROBLEM_CODES`, which is append-only, so ids never move:
``django_badgr.E001`` is ``no_providers`` (the first code), ``E002`` ``unknown_key``, ...;
a problem reported as a warning gets ``W`` and the same number (``W016`` is
``no_inbound_auth``). Problems only Django has are numbered from 100:

========  ============================================================================
E100      ``BADGR`` is not set, or is not a dict
E101      ``BADGR["auth"]`` is not ``"keys"``, ``"django"`` or a callable's dotted path
E102      ``BADGR["permission"]`` is not ``"app_label.codename"``, or is set without
          ``auth = "django"``
E103      ``auth = "django"`` without ``django.contrib.auth`` and its
          ``AuthenticationMiddleware``
W100      ``BADGR["prefix"]`` is set, but under Django the ``include()`` path decides
========  ============================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.checks import CheckMessage, Error, Warning
from django.utils.module_loading import import_string

from badgr_middleware.config import PROBLEM_CODES, ConfigError, ConfigProblem, load_config

from .auth import resolve_callable
from .conf import AUTH_DJANGO, AUTH_KEYS, badgr_settings

__all__ = [
    "E_AUTH",
    "E_AUTH_APP",
    "E_PERMISSION",
    "E_SETTING",
    "W_PREFIX",
    "check_id",
    "check_settings",
]

_OBJ = "settings.BADGR"
E_SETTING = "django_badgr.E100"
E_AUTH = "django_badgr.E101"
E_PERMISSION = "django_badgr.E102"
E_AUTH_APP = "django_badgr.E103"
W_PREFIX = "django_badgr.W100"

_AUTH_MIDDLEWARE = "django.contrib.auth.middleware.AuthenticationMiddleware"


def check_id(code: str, severity: str = "error") -> str:
    """The check id of a core problem ``code``: ``django_badgr.E0NN`` or ``W0NN``."""
    position = PROBLEM_CODES.index(code) + 1
    return f"django_badgr.{'W' if severity == 'warning' else 'E'}{position:03d}"


def check_settings(app_configs: Sequence[Any] | None = None, **kwargs: Any) -> list[CheckMessage]:
    """Validate ``BADGR`` as the engine will load it, plus the Django-only keys."""
    raw = badgr_settings.raw
    if raw is None:
        return [Error("BADGR is not set.", obj=_OBJ, id=E_SETTING,
                      hint="add BADGR = {'providers': {...}, 'models': {...}, "
                           "'client_keys': [...]} to your settings (see docs/django.md)")]
    if not isinstance(raw, Mapping):
        return [Error(f"BADGR must be a dict, not {type(raw).__name__}.", obj=_OBJ,
                      id=E_SETTING, hint="write BADGR = {'providers': {...}, ...}")]
    messages = _django_keys(raw)
    try:
        problems: Sequence[ConfigProblem] = load_config(badgr_settings.core_dict()).warnings
    except ConfigError as error:
        problems = (*error.problems, *error.warnings)
    django_auth = raw.get("auth") not in (None, AUTH_KEYS)
    for problem in problems:
        if problem.code == "no_inbound_auth" and django_auth:
            continue  # the Django user or the auth callable is the inbound auth
        messages.append(_message(problem))
    if raw.get("prefix") is not None:
        messages.append(Warning(
            "prefix is not used under Django.", obj=_OBJ, id=W_PREFIX,
            hint="remove it: the path of path('v1/', include('django_badgr.urls')) in your "
                 "URLconf is where the endpoint is served",
        ))
    return messages


def _message(problem: ConfigProblem) -> CheckMessage:
    try:
        check = check_id(problem.code, problem.severity)
    except ValueError:  # a code this version of django_badgr does not know yet
        check = f"django_badgr.{'W' if problem.severity == 'warning' else 'E'}000"
    kind = Warning if problem.severity == "warning" else Error
    return kind(f"{problem.path}: {problem.message}", hint=problem.fix, obj=_OBJ, id=check)


def _django_keys(raw: Mapping[str, Any]) -> list[CheckMessage]:
    messages: list[CheckMessage] = []
    auth = raw.get("auth")
    auth_hint = ("write 'keys' (client_keys only), 'django' (logged-in users too) or the "
                 "dotted path of a callable taking the request, e.g. 'myapp.auth.check'")
    if auth is not None and auth not in (AUTH_KEYS, AUTH_DJANGO):
        problem = None
        if not isinstance(auth, str) and not callable(auth):
            problem = f"auth must be a string or a callable, not {type(auth).__name__}."
        elif isinstance(auth, str):
            try:
                resolve_callable(auth)
            except ImportError:
                problem = "auth names nothing that can be imported."
            except TypeError:
                problem = "auth does not name a callable."
            except Exception as exc:  # the user's module raised while being imported
                problem = f"importing the module named by auth raised {type(exc).__name__}."
        if problem is not None:
            messages.append(Error(problem, hint=auth_hint, obj=_OBJ, id=E_AUTH))
    permission = raw.get("permission")
    if permission is not None:
        if not isinstance(permission, str) or not _is_permission(permission):
            messages.append(Error(
                "permission must be a string 'app_label.codename'.", obj=_OBJ, id=E_PERMISSION,
                hint="e.g. permission = 'llm.use_endpoint' (a permission your app defines)",
            ))
        elif auth != AUTH_DJANGO:
            messages.append(Error(
                "permission only applies when auth is 'django'.", obj=_OBJ, id=E_PERMISSION,
                hint="add auth = 'django', or remove permission",
            ))
    if auth == AUTH_DJANGO and not _has_django_auth():
        messages.append(Error(
            "auth = 'django' needs django.contrib.auth and its AuthenticationMiddleware.",
            obj=_OBJ, id=E_AUTH_APP,
            hint=f"add 'django.contrib.auth' to INSTALLED_APPS and '{_AUTH_MIDDLEWARE}' to "
                 "MIDDLEWARE (after SessionMiddleware)",
        ))
    return messages


def _is_permission(value: str) -> bool:
    app_label, dot, codename = value.partition(".")
    return bool(app_label and dot and codename)


def _has_django_auth() -> bool:
    if not apps.is_installed("django.contrib.auth"):
        return False
    wanted = import_string(_AUTH_MIDDLEWARE)
    for path in getattr(settings, "MIDDLEWARE", None) or ():
        try:
            middleware = import_string(path)
        except ImportError:
            continue  # Django reports a middleware that does not import itself
        if isinstance(middleware, type) and issubclass(middleware, wanted):
            return True
    return False
