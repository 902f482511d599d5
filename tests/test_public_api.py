"""The public names of each package are exactly what ``__all__`` lists (httpx's habit)."""

from __future__ import annotations

import importlib

import pytest

PACKAGES = ["badgr_middleware", "badgr_middleware.signals", "badgr_middleware.simulator"]


@pytest.mark.parametrize("name", PACKAGES)
def test_all_lists_exactly_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    public = {
        attr for attr, value in vars(module).items()
        if not attr.startswith("_")
        and not isinstance(value, type(importlib))  # submodules are not API by themselves
        and getattr(value, "__module__", name).startswith("badgr_middleware")
    }
    assert set(module.__all__) >= public - {"annotations", "logger"}
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"


def test_adapter_packages_import() -> None:
    importlib.import_module("django_badgr")
    importlib.import_module("flask_badgr")


def test_version_matches_distribution() -> None:
    from importlib.metadata import version

    import badgr_middleware

    assert badgr_middleware.__version__ == version("badgr-middleware")
