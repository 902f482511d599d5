"""``manage.py badgr check`` and ``manage.py badgr status``.

``check`` validates ``settings.BADGR`` (every problem with its check id and fix) and prints
where the endpoint is served, the providers (keys masked), the model aliases and inbound auth.
``status`` prints the health of every provider and target: this process's view by default
(shared by every worker when ``state.backend`` is ``"redis"``), or a running server's with
``--url``.
"""

from __future__ import annotations

import dataclasses
import io
import urllib.error
from typing import Any

from django.core.checks import ERROR
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.urls import NoReverseMatch, reverse

from badgr_middleware.cli import fetch_status, print_routes, print_status

from ...checks import check_settings
from ...conf import AUTH_DJANGO, AUTH_KEYS, badgr_settings, get_engine


class Command(BaseCommand):
    help = "Check badgr's configuration (BADGR) or print the health of its providers."

    def add_arguments(self, parser: CommandParser) -> None:
        commands = parser.add_subparsers(dest="action", required=True, metavar="{check,status}")
        commands.add_parser("check", help="validate BADGR and print the routes (keys masked)")
        status = commands.add_parser("status", help="print the health of every target")
        status.add_argument("--url", help="ask a running server instead, e.g. "
                                          "http://127.0.0.1:8000/v1")
        status.add_argument("--key", help="client key for --url (default: the first of "
                                          "BADGR['client_keys'])")

    def handle(self, *args: Any, **options: Any) -> None:
        if options["action"] == "check":
            self.check_config()
        else:
            self.status(options.get("url"), options.get("key"))

    def check_config(self) -> None:
        failed = False
        for message in check_settings():
            failed |= message.level >= ERROR
            severity = "error" if message.level >= ERROR else "warning"
            line = f"{severity}: ({message.id}) {message.msg}"
            if message.hint:
                line += f" (fix: {message.hint})"
            self.stdout.write(line)
        if failed:
            raise CommandError("BADGR has errors; nothing is served until they are fixed.")
        config = dataclasses.replace(badgr_settings.load(), prefix=_mounted_at())
        out = io.StringIO()
        print_routes(config, out, authenticate=_django_auth())
        self.stdout.write(out.getvalue(), ending="")

    def status(self, url: str | None, key: str | None) -> None:
        if url:
            if key is None:
                keys = _config_or_error().client_keys
                key = keys[0].reveal() if keys else None
            try:
                snapshot = fetch_status(url, key)
            except (urllib.error.URLError, OSError, ValueError) as error:
                raise CommandError(f"Could not read {url}/status: {error}") from None
        else:
            _config_or_error()
            snapshot = get_engine().status()
        out = io.StringIO()
        print_status(snapshot, out)
        self.stdout.write(out.getvalue(), ending="")


def _config_or_error() -> Any:
    try:
        return badgr_settings.load()
    except ImproperlyConfigured as error:
        raise CommandError(f"{error}") from None


def _mounted_at() -> str:
    try:
        return reverse("badgr:endpoint", kwargs={"path": ""}).rstrip("/")
    except NoReverseMatch:
        return "(not in the URLconf: add path('v1/', include('django_badgr.urls')))"


def _django_auth() -> str | None:
    mode = badgr_settings.auth
    if mode == AUTH_KEYS:
        return None
    if mode == AUTH_DJANGO:
        permission = badgr_settings.permission
        return "logged-in Django users" + (f" with {permission}" if permission else "")
    name = mode if isinstance(mode, str) else getattr(mode, "__qualname__", repr(mode))
    return f"BADGR['auth'] callable {name}"
