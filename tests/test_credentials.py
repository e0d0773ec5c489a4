"""Without AWS credentials every command says so and what to set, instead of passing on
botocore's "Unable to locate credentials" as if AWS had answered it."""

from __future__ import annotations

import os
import time

import pytest
from django.core.management import execute_from_command_line

from s3tasks.aws import MISSING_CREDENTIALS, client, reset_clients
from s3tasks.exceptions import S3TasksConfigurationError
from s3tasks.followups.commands import publish_sqs
from s3tasks.followups.outbox import relay_outbox
from s3tasks.models import OutboxMessage

NOWHERE = "http://127.0.0.1:9"  # nothing listens there: no test may reach an AWS endpoint


@pytest.fixture
def no_credentials(monkeypatch, settings):
    """An environment where boto3 finds no credentials anywhere."""
    for name in [n for n in os.environ if n.startswith("AWS_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")  # no 1 s probe of an instance role
    settings.S3TASKS = {**settings.S3TASKS, "ENDPOINT_URL": NOWHERE}
    reset_clients()
    yield
    reset_clients()


def run_command(*argv: str) -> int:
    """Run a management command as `manage.py` would; returns its exit status."""
    with pytest.raises(SystemExit) as exited:
        execute_from_command_line(["manage.py", *argv])
    return exited.value.code


def test_a_client_without_credentials_raises_the_readable_error(no_credentials):
    with pytest.raises(S3TasksConfigurationError) as raised:
        client("sqs")
    assert str(raised.value).startswith("no AWS credentials found")
    assert "AWS_ACCESS_KEY_ID=testing" in str(raised.value)
    assert "AWS_SECRET_ACCESS_KEY=testing" in str(raised.value)
    assert 'S3TASKS["ENDPOINT_URL"]' in str(raised.value)


def test_keys_passed_explicitly_need_no_credentials_from_the_environment(no_credentials):
    sqs = client("sqs", aws_access_key_id="testing", aws_secret_access_key="testing")
    assert sqs.meta.endpoint_url == NOWHERE


def test_unsigned_clients_need_no_credentials(no_credentials):
    from botocore import UNSIGNED
    from botocore.config import Config

    s3 = client("s3", config=Config(signature_version=UNSIGNED))
    assert s3.meta.endpoint_url == NOWHERE


def test_credentials_from_the_environment_are_enough(no_credentials, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    assert client("sqs").meta.endpoint_url == NOWHERE


@pytest.mark.django_db
def test_sync_notifications_without_credentials_says_what_to_set_and_exits_1(
    no_credentials, capsys
):
    assert run_command("sync_notifications", "--dry-run") == 1
    err = capsys.readouterr().err
    assert f"CommandError: {MISSING_CREDENTIALS}" in err
    assert "NoCredentialsError" not in err and "AWS said" not in err


@pytest.mark.django_db
def test_sqs_worker_without_credentials_stops_at_once_with_the_message(no_credentials, capsys):
    started = time.monotonic()
    assert run_command("sqs_worker", "--queue", "s3tasks-events") == 1
    assert time.monotonic() - started < 10  # it stops instead of retrying receives
    captured = capsys.readouterr()
    assert f"CommandError: {MISSING_CREDENTIALS}" in captured.err
    assert "Cannot find SQS queue" not in captured.err
    assert "received" not in captured.out  # no loop was started


@pytest.mark.django_db(transaction=True)
def test_the_outbox_relay_records_the_message_and_backs_off(no_credentials):
    message = publish_sqs("imports-done", "x")
    assert relay_outbox() == 0
    stored = OutboxMessage.objects.get(pk=message.pk)
    assert stored.sent_at is None and stored.attempts == 1
    assert "no AWS credentials found" in stored.last_error
