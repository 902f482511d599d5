"""settings.BADGR: read on every access, Django-only keys stripped, one engine rebuilt when it
changes (so override_settings works), the app's own wiring."""

from __future__ import annotations

import importlib
import subprocess
import sys
from typing import Any

import pytest
from django.apps import apps
from django.core.exceptions import ImproperlyConfigured
from django.test import Client, override_settings
from djbadgr_support import CLIENT_KEY, Upstreams

from django_badgr import conf
from django_badgr.apps import BadgrConfig
from django_badgr.conf import badgr_settings, get_engine

AUTH = {"authorization": f"Bearer {CLIENT_KEY}"}


def model_ids(client: Client) -> list[str]:
    response = client.get("/v1/models", headers=AUTH)
    assert response.status_code == 200, response.content
    return [m["id"] for m in response.json()["data"]]


def test_the_app_config() -> None:
    app_config = apps.get_app_config("django_badgr")
    assert isinstance(app_config, BadgrConfig)
    assert app_config.name == "django_badgr"


@pytest.mark.usefixtures("badgr_config")
def test_settings_are_read_on_every_access(sims: Upstreams) -> None:
    assert badgr_settings.auth == "keys"
    assert badgr_settings.permission is None
    with override_settings(BADGR={**sims.config(), "auth": "django", "permission": "a.b"}):
        assert badgr_settings.auth == "django"
        assert badgr_settings.permission == "a.b"
    assert badgr_settings.auth == "keys"


def test_django_only_keys_never_reach_the_core(settings: Any, sims: Upstreams) -> None:
    settings.BADGR = {**sims.config(), "auth": "django", "permission": "auth.view_user"}
    core = badgr_settings.core_dict()
    assert "auth" not in core
    assert "permission" not in core
    assert get_engine().config.client_keys[0] == CLIENT_KEY  # loads: no unknown_key


@pytest.mark.usefixtures("badgr_config")
def test_one_engine_built_once_with_the_app_config_as_sender() -> None:
    engine = get_engine()
    assert get_engine() is engine
    assert engine.sender is apps.get_app_config("django_badgr")


@pytest.mark.usefixtures("badgr_config")
def test_override_settings_rebuilds_the_engine(sims: Upstreams, client: Client) -> None:
    before = get_engine()
    assert model_ids(client) == ["chat", "solo", "slow"]
    with override_settings(BADGR=sims.config(models={"other": ["backup/sim-small"]})):
        assert get_engine() is not before
        assert model_ids(client) == ["other"]
    assert model_ids(client) == ["chat", "solo", "slow"]
    assert get_engine() is not before  # rebuilt again from the restored setting


@pytest.mark.usefixtures("badgr_config")
def test_other_settings_keep_the_engine() -> None:
    engine = get_engine()
    with override_settings(USE_I18N=False):
        assert get_engine() is engine


@pytest.mark.usefixtures("badgr_config")
def test_the_engine_is_built_on_first_use() -> None:
    conf.reset_engine()
    assert conf._engine is None
    get_engine()
    assert conf._engine is not None


def test_a_bad_setting_raises_improperly_configured(settings: Any) -> None:
    settings.BADGR = {"providers": {}}
    with pytest.raises(ImproperlyConfigured, match="manage.py check"):
        get_engine()
    del settings.BADGR
    with pytest.raises(ImproperlyConfigured, match="BADGR is not set"):
        get_engine()


@pytest.mark.usefixtures("badgr_config")
def test_the_app_must_be_installed() -> None:
    with (
        override_settings(INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth"]),
        pytest.raises(ImproperlyConfigured, match="INSTALLED_APPS"),
    ):
        get_engine()


def test_without_django_the_import_error_names_the_extra() -> None:
    code = "import sys; sys.modules['django'] = None; import django_badgr"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0
    assert "pip install 'badgr-middleware[django]'" in result.stderr


@pytest.mark.parametrize(
    "name",
    ["django_badgr", "django_badgr.apps", "django_badgr.auth", "django_badgr.checks",
     "django_badgr.conf", "django_badgr.signals", "django_badgr.urls", "django_badgr.views"],
)
def test_all_lists_the_public_names(name: str) -> None:
    module = importlib.import_module(name)
    defined_here = {
        attr for attr, value in vars(module).items()
        if not attr.startswith("_") and callable(value)
        and getattr(value, "__module__", None) == name
    }
    assert defined_here <= set(module.__all__)
    for attr in module.__all__:
        assert hasattr(module, attr), f"{name}.__all__ names missing {attr}"
