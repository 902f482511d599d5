"""Django settings for tests/django only, and the simulated upstreams its tests route to.

Settings are configured in this folder's ``pytest_configure`` (pytest-django picks them up),
so nothing outside tests/django is given a settings module or an environment variable. Each
test gets ``BADGR`` pointing at the simulated upstreams through pytest-django's ``settings``
fixture, so every test starts with a fresh engine (and fresh health state).

Without Django or pytest-django installed, this folder is not collected.
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from djbadgr_support import BUFFERING_WARNING, Upstreams, django_test_settings

from badgr_middleware.simulator import SimulatedProvider, SimulatedServer

HERE = Path(__file__).resolve().parent

if importlib.util.find_spec("django") is None or importlib.util.find_spec("pytest_django") is None:
    # pip install 'badgr-middleware[test]' brings both
    collect_ignore_glob = ["test_*.py"]


def pytest_configure(config: pytest.Config) -> None:
    if "collect_ignore_glob" in globals():
        return
    import django
    from django.conf import settings

    warnings.filterwarnings("error", message=BUFFERING_WARNING, category=Warning)
    if not settings.configured:
        settings.configure(**django_test_settings())
    django.setup()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # pytest resets warning filters for each test: add the buffering one to every test here
    mark = pytest.mark.filterwarnings(f"error:{BUFFERING_WARNING}:Warning")
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(mark)


@pytest.fixture(scope="session")
def upstreams() -> Iterator[Upstreams]:
    providers = {
        "primary": SimulatedProvider("primary"),
        "backup": SimulatedProvider("backup"),
        "slow": SimulatedProvider("slow", stream_chunks=8, chunk_delay=0.1),
    }
    with contextlib.ExitStack() as stack:
        urls = {
            name: stack.enter_context(SimulatedServer(provider)).base_url
            for name, provider in providers.items()
        }
        yield Upstreams(urls=urls, **providers)


@pytest.fixture
def sims(upstreams: Upstreams) -> Upstreams:
    """The upstreams, with no faults and empty request logs."""
    for provider in upstreams.all():
        provider.clear()
    return upstreams


@pytest.fixture
def badgr_config(settings: Any, sims: Upstreams) -> dict[str, Any]:
    """``settings.BADGR`` for this test (so a fresh engine); change it with ``settings``."""
    settings.BADGR = sims.config()
    return settings.BADGR  # type: ignore[no-any-return]
