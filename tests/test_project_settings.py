"""The example project's settings are safe to deploy as they are: DEBUG off and a secret key
required, unless a development mode (tests, the demo) says otherwise."""

from __future__ import annotations

import runpy
import subprocess
import sys

import pytest
from django.core.exceptions import ImproperlyConfigured

from tests.conftest import ROOT
from tests.demo_support import NOT_IN_A_USERS_SHELL, demo_env

SETTINGS = ROOT / "project" / "settings.py"


@pytest.fixture
def bare_env(monkeypatch):
    """No S3TASKS_*/DJANGO_* variables, as on a server nobody configured yet."""
    import os

    for name in list(os.environ):
        if name.startswith(NOT_IN_A_USERS_SHELL):
            monkeypatch.delenv(name)
    return monkeypatch


def load_settings() -> dict:
    return runpy.run_path(str(SETTINGS))


def test_secret_key_is_required_without_a_development_mode(bare_env):
    with pytest.raises(ImproperlyConfigured) as error:
        load_settings()
    assert "DJANGO_SECRET_KEY is not set" in str(error.value)
    assert "S3TASKS_DEV=1" in str(error.value)


def test_a_deployment_runs_with_debug_off_its_key_and_no_demo_pages(bare_env):
    bare_env.setenv("DJANGO_SECRET_KEY", "k" * 50)
    loaded = load_settings()
    assert loaded["DEBUG"] is False
    assert loaded["SECRET_KEY"] == "k" * 50
    assert loaded["ROOT_URLCONF"] == "project.urls"


def test_debug_in_a_deployment_only_when_asked_for(bare_env):
    bare_env.setenv("DJANGO_SECRET_KEY", "k" * 50)
    bare_env.setenv("DJANGO_DEBUG", "1")
    assert load_settings()["DEBUG"] is True


def test_deployment_hosts_come_from_the_environment(bare_env):
    bare_env.setenv("DJANGO_SECRET_KEY", "k" * 50)
    bare_env.setenv("DJANGO_ALLOWED_HOSTS", "app.example.com, admin.example.com,")
    hosts = load_settings()["ALLOWED_HOSTS"]
    assert hosts[-2:] == ["app.example.com", "admin.example.com"] and "" not in hosts


def test_dev_mode_has_a_throwaway_key_and_debug_but_no_demo_pages(bare_env):
    bare_env.setenv("S3TASKS_DEV", "1")
    loaded = load_settings()
    assert loaded["DEBUG"] is True and loaded["SECRET_KEY"]
    assert loaded["ROOT_URLCONF"] == "project.urls"


def test_dev_mode_keeps_an_explicit_debug_off(bare_env):
    bare_env.setenv("S3TASKS_DEV", "1")
    bare_env.setenv("DJANGO_DEBUG", "0")
    assert load_settings()["DEBUG"] is False


def test_demo_mode_mounts_the_demo_pages(bare_env):
    bare_env.setenv("S3TASKS_DEMO", "1")
    loaded = load_settings()
    assert loaded["DEBUG"] is True and loaded["SECRET_KEY"]
    assert loaded["ROOT_URLCONF"] == "project.demo.site_urls"


def manage(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=demo_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_manage_py_refuses_to_start_without_a_key_and_says_what_to_set():
    result = manage("check")
    assert result.returncode != 0
    assert "DJANGO_SECRET_KEY is not set" in result.stderr


def test_manage_py_runs_the_demo_command_in_demo_mode_from_a_bare_shell():
    result = manage("s3tasks_demo", "--help")
    assert result.returncode == 0, result.stderr
    assert "--once" in result.stdout
