from __future__ import annotations

import pytest
from django.core.exceptions import ImproperlyConfigured

from s3tasks.conf import build_settings, get_settings


def test_defaults_apply_when_s3tasks_setting_is_absent():
    conf = build_settings(None)
    assert conf.REGION == "us-east-1"
    assert conf.ENDPOINT_URL is None
    assert conf.DEFAULT_QUEUE == "s3tasks-events"
    assert conf.DISPATCH == "celery"
    assert conf.WORKER.BATCH_SIZE == 10
    assert conf.client_kwargs() == {"region_name": "us-east-1"}


def test_endpoint_is_passed_to_boto3_only_when_set():
    conf = build_settings({"ENDPOINT_URL": "http://127.0.0.1:5000", "REGION": "eu-west-1"})
    assert conf.client_kwargs() == {
        "region_name": "eu-west-1",
        "endpoint_url": "http://127.0.0.1:5000",
    }


@pytest.mark.parametrize(
    "raw, expected",
    [
        ({"DISPATCH": "threads"}, "'celery', 'inline'"),
        ({"DEFAULT_QUEUE": "events.fifo"}, "FIFO"),
        ({"ENDPOINT_URL": "127.0.0.1:5000"}, "must be a URL"),
        ({"REGION": 5}, "REGION"),
        ({"DISPATCHER": "inline"}, "Unknown S3TASKS setting(s) ['DISPATCHER']"),
        ({"WORKER": {"BATCH_SIZE": 11}}, "1..10"),
        ({"WORKER": {"WAIT_TIME": 30}}, "0..20"),
        ({"WORKER": {"THREADS": 3}}, 'Unknown S3TASKS["WORKER"]'),
        ({"BATCH_TREAT_MISSING_KEYS_AS": "Ignore"}, "PermanentFailure"),
    ],
)
def test_wrong_setting_raises_improperly_configured_saying_what_to_fix(raw, expected):
    with pytest.raises(ImproperlyConfigured) as error:
        build_settings(raw)
    assert expected in str(error.value)


def test_settings_object_follows_overridden_django_settings(settings):
    settings.S3TASKS = {"DISPATCH": "inline", "DEFAULT_QUEUE": "other"}
    assert get_settings().DISPATCH == "inline"
    assert get_settings().DEFAULT_QUEUE == "other"
