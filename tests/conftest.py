"""Shared fixtures: moto's HTTP server, service requirements, subprocess environments.

Services (Redis, PostgreSQL, Chromium) are optional on a developer's machine: tests that
need one skip with the reason. With S3TASKS_REQUIRE_SERVICES=1 (CI) every skip fails.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection

from s3tasks.emulator import LocalEmulator
from s3tasks.emulator import port_open as emulator_port_open

ROOT = Path(__file__).resolve().parent.parent
REQUIRE_SERVICES = os.environ.get("S3TASKS_REQUIRE_SERVICES") == "1"
REDIS_URL = os.environ.get("S3TASKS_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def port_open(host: str, port: int) -> bool:
    return emulator_port_open(port, host)


def need(condition: bool, reason: str) -> None:
    """Skip when a service is missing (fail instead under S3TASKS_REQUIRE_SERVICES=1)."""
    if condition:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (S3TASKS_REQUIRE_SERVICES=1 forbids skipping)")
    pytest.skip(reason)


def is_postgres() -> bool:
    return connection.vendor == "postgresql"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if "postgres" in item.keywords and not is_postgres():
            item.add_marker(
                pytest.mark.skip(
                    reason="needs PostgreSQL: run with S3TASKS_DB=postgres "
                    "(python tests/run_all.py does)"
                )
            )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()
    if REQUIRE_SERVICES and report.skipped and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under S3TASKS_REQUIRE_SERVICES=1: {report.longrepr}"


# --- moto's real HTTP server -------------------------------------------------------------


@pytest.fixture(scope="session")
def moto_server() -> Iterator[LocalEmulator]:
    """moto's server in a subprocess on 127.0.0.1, one per test session."""
    with LocalEmulator() as server:
        yield server


@pytest.fixture
def moto_endpoint(moto_server: LocalEmulator, settings, monkeypatch) -> Iterator[str]:
    """A clean moto server, with S3TASKS/django-storages/boto3 pointed at it."""
    from s3tasks.aws import reset_clients

    moto_server.reset()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    settings.S3TASKS = {**settings.S3TASKS, "ENDPOINT_URL": moto_server.url}
    settings.AWS_S3_ENDPOINT_URL = moto_server.url
    reset_clients()
    yield moto_server.url
    reset_clients()


@pytest.fixture
def aws_credentials(monkeypatch) -> None:
    """Fake credentials for in-process `mock_aws` tests."""
    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)


# --- services ------------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    need(port_open("127.0.0.1", 6379), "needs Redis on 127.0.0.1:6379")
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    client.flushdb()
    return REDIS_URL


def subprocess_env(**extra: str) -> dict[str, str]:
    """Environment for a `manage.py` subprocess that must use this test run's database."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")}
    db = connection.settings_dict
    if connection.vendor == "postgresql":
        env.update(S3TASKS_DB="postgres", PGDATABASE=db["NAME"])
    else:
        env.update(S3TASKS_DB="sqlite", S3TASKS_SQLITE_PATH=str(db["NAME"]))
    env.setdefault("AWS_ACCESS_KEY_ID", "testing")
    env.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.update(extra)
    return env
