"""S3 Batch Operations through the Lambda entrypoint: handler choice, result codes, retries."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from lambda_app.handlers import CALLS
from payload_files import load_payload

from s3tasks import signals
from s3tasks.batch_jobs import is_missing_object, result_code_for
from s3tasks.exceptions import PermanentFailure, TemporaryFailure
from s3tasks.lambda_handler import handler
from s3tasks.models import HandlerRun, RunState

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clear_calls() -> Iterator[None]:
    CALLS.clear()
    yield
    CALLS.clear()


def job_2_0(*keys: str, **user_arguments: Any) -> dict[str, Any]:
    """A schema 2.0 invocation with one task per key, run by `lambda_tests.batch`."""
    payload = load_payload("batch_2_0")
    template = payload["tasks"][0]
    payload["job"]["userArguments"] = {"handler": "lambda_tests.batch", **user_arguments}
    payload["tasks"] = [{**template, "taskId": f"task-{i}", "s3Key": k} for i, k in enumerate(keys)]
    return payload


def codes(response: dict[str, Any]) -> dict[str, str]:
    return {r["taskId"]: r["resultCode"] for r in response["results"]}


def test_schema_1_0_runs_the_batch_handler_setting_and_answers_in_the_documented_shape(
    settings,
) -> None:
    settings.S3TASKS = {**settings.S3TASKS, "BATCH_HANDLER": "lambda_tests.batch_default"}
    invocation = load_payload("batch_1_0")

    response = handler(invocation, None)

    assert response == {
        "invocationSchemaVersion": "1.0",
        "treatMissingKeysAs": "PermanentFailure",
        "invocationId": invocation["invocationId"],
        "results": [
            {
                "taskId": "dGFza2lkZ29lc2hlcmUK",
                "resultCode": "Succeeded",
                "resultString": "default handler",
            }
        ],
    }
    # The key is URL-decoded like every other envelope's; the bucket comes from the ARN.
    assert CALLS == [("batch_default", "customerImages/customer image 1(1).jpg")]
    run = HandlerRun.objects.get()
    assert (run.event.bucket, run.state) == ("acme-archive", RunState.SUCCEEDED)


def test_schema_2_0_user_arguments_choose_the_handler_and_reach_it(settings) -> None:
    settings.S3TASKS = {**settings.S3TASKS, "BATCH_HANDLER": "lambda_tests.batch_default"}
    invocation = load_payload("batch_2_0")
    invocation["job"]["userArguments"]["handler"] = "lambda_tests.batch"

    response = handler(invocation, None)

    (result,) = response["results"]
    assert response["invocationSchemaVersion"] == "2.0"
    assert result["resultCode"] == "Succeeded"
    returned = json.loads(result["resultString"])
    assert returned["key"] == "photos/2024/IMG_0001+HDR.HEIC"
    assert returned["arguments"]["MyDestinationBucket"] == "acme-thumbnails"
    assert CALLS == [("batch", "photos/2024/IMG_0001+HDR.HEIC")]


def test_each_task_gets_the_code_its_handler_asked_for() -> None:
    invocation = job_2_0("ok.jpg", "temporary.jpg", "permanent.jpg", "missing.jpg", "crash.jpg")

    response = handler(invocation, None)

    assert codes(response) == {
        "task-0": "Succeeded",
        "task-1": "TemporaryFailure",
        "task-2": "PermanentFailure",
        "task-3": "PermanentFailure",  # treatMissingKeysAs defaults to PermanentFailure
        "task-4": "TemporaryFailure",  # an unplanned exception: S3 may retry
    }
    strings = {r["taskId"]: r["resultString"] for r in response["results"]}
    assert strings["task-1"] == "TemporaryFailure: throttled, try again"
    assert strings["task-2"] == "PermanentFailure: not an image"
    assert strings["task-4"] == "ValueError: unexpected"


def test_results_and_exceptions_reach_the_response_through_the_outcome_not_signals(
    monkeypatch,
) -> None:
    # With every s3tasks signal silenced, the response can only come from the run outcomes.
    for signal in (
        signals.event_received,
        signals.run_started,
        signals.run_succeeded,
        signals.run_failed,
    ):
        monkeypatch.setattr(signal, "send", lambda *args, **kwargs: [])
    invocation = job_2_0("ok.jpg", "permanent.jpg", "missing.jpg", note="x" * 3000)

    response = handler(invocation, None)

    results = {r["taskId"]: (r["resultCode"], r["resultString"]) for r in response["results"]}
    # the returned value itself, clipped at 1,024: the stored summary keeps only 1,000 characters
    assert results["task-0"][0] == "Succeeded" and len(results["task-0"][1]) == 1024
    assert results["task-1"] == ("PermanentFailure", "PermanentFailure: not an image")
    # a vanished object is recognised from the exception object, not from the error text
    assert results["task-2"] == (
        "PermanentFailure",
        "FileNotFoundError: s3://acme-media/missing.jpg",
    )


def test_missing_objects_get_the_configured_treat_missing_keys_as(settings) -> None:
    settings.S3TASKS = {**settings.S3TASKS, "BATCH_TREAT_MISSING_KEYS_AS": "Succeeded"}

    response = handler(job_2_0("missing.jpg", "permanent.jpg"), None)

    assert response["treatMissingKeysAs"] == "Succeeded"
    assert codes(response) == {"task-0": "Succeeded", "task-1": "PermanentFailure"}


def test_a_retried_task_reruns_after_a_temporary_failure_but_never_after_success() -> None:
    invocation = job_2_0("temporary.jpg", "ok.jpg")
    assert codes(handler(invocation, None)) == {
        "task-0": "TemporaryFailure",
        "task-1": "Succeeded",
    }
    first_string = handler(invocation, None)["results"][1]["resultString"]

    assert CALLS == [("batch", "temporary.jpg"), ("batch", "ok.jpg"), ("batch", "temporary.jpg")]
    assert json.loads(first_string)["key"] == "ok.jpg"  # the earlier result, not a second run
    runs = {r.event.key: r for r in HandlerRun.objects.select_related("event")}
    assert runs["temporary.jpg"].attempts == 2
    assert runs["ok.jpg"].attempts == 1


def test_temporary_failures_become_permanent_once_the_retry_limit_is_used(settings) -> None:
    settings.S3TASKS = {**settings.S3TASKS, "MAX_RETRIES": 1}
    invocation = job_2_0("temporary.jpg")

    seen = [codes(handler(invocation, None))["task-0"] for _ in range(3)]

    assert seen == ["TemporaryFailure", "PermanentFailure", "PermanentFailure"]


def test_without_a_handler_every_task_fails_permanently_saying_what_to_configure(
    settings,
) -> None:
    settings.S3TASKS = {**settings.S3TASKS, "BATCH_HANDLER": None}

    response = handler(load_payload("batch_1_0"), None)

    (result,) = response["results"]
    assert result["resultCode"] == "PermanentFailure"
    assert 'S3TASKS["BATCH_HANDLER"]' in result["resultString"]
    assert "userArguments" in result["resultString"]
    assert not HandlerRun.objects.exists()


def test_an_unregistered_handler_name_fails_permanently_with_its_name() -> None:
    invocation = job_2_0("ok.jpg")
    invocation["job"]["userArguments"]["handler"] = "nope.missing"

    (result,) = handler(invocation, None)["results"]

    assert result["resultCode"] == "PermanentFailure"
    assert "nope.missing" in result["resultString"]


def test_long_results_are_truncated_for_the_completion_report() -> None:
    invocation = job_2_0("ok.jpg", note="x" * 3000)  # a long result; keys stay within 1,024 bytes

    (result,) = handler(invocation, None)["results"]

    assert result["resultCode"] == "Succeeded"
    assert len(result["resultString"]) == 1024
    assert result["resultString"].endswith("…")


@pytest.mark.parametrize(
    "exception",
    [
        FileNotFoundError("gone"),
        ClientError({"Error": {"Code": "NoSuchKey", "Message": "nope"}}, "GetObject"),
        ClientError({"Error": {"Code": "404", "Message": "Not Found"}}, "HeadObject"),
    ],
    ids=["FileNotFoundError", "NoSuchKey", "404"],
)
def test_vanished_objects_are_recognised_directly_or_as_the_cause(exception: Exception) -> None:
    try:
        try:
            raise exception
        except Exception as inner:
            raise RuntimeError("could not read the object") from inner
    except RuntimeError as wrapped:
        assert is_missing_object(exception)
        assert is_missing_object(wrapped)
        assert result_code_for(wrapped, missing_as="Succeeded") == "Succeeded"


def test_other_client_errors_are_temporary_and_handler_failures_keep_their_kind() -> None:
    throttled = ClientError({"Error": {"Code": "SlowDown", "Message": "slow"}}, "GetObject")
    assert not is_missing_object(throttled)
    assert result_code_for(throttled) == "TemporaryFailure"
    assert result_code_for(TemporaryFailure("later")) == "TemporaryFailure"
    assert result_code_for(PermanentFailure("never")) == "PermanentFailure"


@pytest.mark.integration
def test_objects_gone_from_a_real_bucket_get_treat_missing_keys_as(
    moto_endpoint: str, settings
) -> None:
    from s3tasks.aws import client

    # "Succeeded" can only come from recognising the vanished object (any other error of
    # reading it would be a TemporaryFailure).
    settings.S3TASKS = {**settings.S3TASKS, "BATCH_TREAT_MISSING_KEYS_AS": "Succeeded"}
    s3 = client("s3")
    s3.create_bucket(Bucket="acme-media")
    s3.put_object(Bucket="acme-media", Key="photos/here now.jpg", Body=b"12345")
    invocation = job_2_0("photos/here+now.jpg", "photos/gone.jpg")
    invocation["job"]["userArguments"]["handler"] = "lambda_tests.read"
    for task in invocation["tasks"]:
        task["s3VersionId"] = None

    response = handler(invocation, None)

    assert codes(response) == {"task-0": "Succeeded", "task-1": "Succeeded"}
    assert response["results"][0]["resultString"] == "5 bytes"
    assert "gone.jpg" in response["results"][1]["resultString"]
