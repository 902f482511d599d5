"""Fixtures for the Flask extension's tests: simulated upstreams and a Flask app factory.

The whole folder is skipped when Flask is not installed.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pytest

from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

if TYPE_CHECKING:
    from flask import Flask

if importlib.util.find_spec("flask") is None:  # pragma: no cover - Flask is in the test extra
    collect_ignore_glob = ["test_*.py"]

CLIENT_KEY = "client-key-for-flask-tests"
UPSTREAM_KEY = "sk-upstream-flask-0123456789abcdef"


@dataclass
class FlaskUpstreams:
    """The fake providers the in-process Flask tests route to, each on its own server."""

    primary: SimulatedProvider
    secondary: SimulatedProvider
    long: SimulatedProvider  # 30 content chunks, 0.05 s apart: still streaming after 1 s
    urls: dict[str, str]
    client_key: str = CLIENT_KEY
    upstream_key: str = UPSTREAM_KEY

    @property
    def auth(self) -> dict[str, str]:
        """Headers that authenticate with the client key."""
        return {"authorization": f"Bearer {self.client_key}"}

    def all(self) -> list[SimulatedProvider]:
        return [self.primary, self.secondary, self.long]

    def config(self, **overrides: Any) -> dict[str, Any]:
        """A badgr config (the ``BADGR`` dict) routing to these upstreams."""
        config: dict[str, Any] = {
            "providers": {
                name: {"kind": "openai", "base_url": url, "api_key": UPSTREAM_KEY}
                for name, url in self.urls.items()
            },
            "models": {
                "chat": ["primary/sim-small", "secondary/sim-small"],
                "long": ["long/sim-small"],
            },
            "client_keys": [CLIENT_KEY],
            "max_body_bytes": 4096,
            "retry": {"backoff_base": 0.01, "backoff_max": 0.05},
            "timeouts": {"connect": 2, "read": 10, "deadline": 20},
        }
        config.update(overrides)
        return config


@pytest.fixture(scope="session")
def flask_upstreams() -> Iterator[FlaskUpstreams]:
    providers = {
        "primary": SimulatedProvider("primary"),
        "secondary": SimulatedProvider("secondary"),
        "long": SimulatedProvider("long", stream_chunks=30, chunk_delay=0.05),
    }
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(SimulatedServer(provider)).base_url
            for name, provider in providers.items()
        }
        yield FlaskUpstreams(urls=urls, **providers)


@pytest.fixture
def ups(flask_upstreams: FlaskUpstreams) -> FlaskUpstreams:
    """The upstreams with no faults and empty request logs."""
    for provider in flask_upstreams.all():
        provider.clear()
    return flask_upstreams


AppFactory = Callable[..., "Flask"]


@pytest.fixture
def make_app(ups: FlaskUpstreams) -> Iterator[AppFactory]:
    """``make_app(badgr=None, config=None, **flask_config)``: a Flask app with badgr set up.

    Every app's engine is closed at teardown, so no upstream connection outlives its test.
    """
    from flask import Flask

    from flask_badgr import Badgr

    apps: list[Flask] = []

    def make(
        badgr: Badgr | None = None, config: dict[str, Any] | None = None, **flask_config: Any
    ) -> Flask:
        app = Flask(f"flask_test_app_{len(apps)}")
        app.config["BADGR"] = ups.config() if config is None else config
        app.config.update(flask_config)
        (badgr or Badgr()).init_app(app)
        apps.append(app)
        return app

    yield make
    for app in apps:
        Badgr.engine_for(app).close()
