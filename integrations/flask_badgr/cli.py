"""``flask badgr check`` and ``flask badgr status``, over the ``badgr`` command's helpers."""

from __future__ import annotations

import io
import urllib.error

import click
from flask import current_app
from flask.cli import AppGroup

from badgr_middleware.cli import fetch_status, print_problems, print_routes, print_status

__all__ = ["badgr_commands"]

badgr_commands = AppGroup("badgr", help="badgr's OpenAI-compatible endpoint in this app.")


@badgr_commands.command("check")
def check() -> None:
    """Print the app's badgr routes, providers (keys masked) and inbound auth.

    The config was validated when the app was created: a mistake stops the app from loading
    with a ConfigError that names every problem.
    """
    from .extension import Badgr

    state = Badgr.state_for(current_app._get_current_object())  # type: ignore[attr-defined]
    config = state.engine.config
    registered = state.extension.authenticate_callable is not None
    warnings = [w for w in config.warnings if not (registered and w.code == "no_inbound_auth")]
    out = io.StringIO()
    print_problems(warnings, out)
    print_routes(config, out, authenticate="Flask @badgr.authenticate" if registered else None)
    click.echo(out.getvalue(), nl=False)


@badgr_commands.command("status")
@click.option("--url", default=None,
              help="Ask a running server, e.g. http://127.0.0.1:5000/v1 (default: this "
                   "process's engine, which sees the shared state with Redis).")
@click.option("--key", default=None, help="A client key for --url (default: $BADGR_CLIENT_KEY).")
def status(url: str | None, key: str | None) -> None:
    """Print provider and target health: cooldowns, circuit breakers, latency."""
    from .extension import Badgr

    out = io.StringIO()
    if url is not None:
        try:
            snapshot = fetch_status(url, key)
        except (urllib.error.URLError, OSError, ValueError) as error:
            raise click.ClickException(f"could not read {url}/status: {error}") from None
    else:
        engine = Badgr.engine_for(current_app._get_current_object())  # type: ignore[attr-defined]
        snapshot = engine.status()
        if engine.config.state.backend == "memory":
            print("(this process's own health state, fresh at start; use --url to ask a "
                  "running server, or Redis state to share it)", file=out)
    print_status(snapshot, out)
    click.echo(out.getvalue(), nl=False)
