"""The entrypoint in a real process: AWS's runtime interface client against a local Runtime API,
and a fresh interpreter proving the SQS path never imports boto3."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from lambda_runtime import FakeRuntimeAPI
from payload_files import load_payload

from s3tasks.models import Bucket, HandlerBinding, HandlerRun, NotificationRule, RunState
from tests.conftest import ROOT, subprocess_env

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

TESTS = Path(__file__).resolve().parent
SNS_MESSAGE_ID = "2e1424d4-f796-459a-8184-9c92662be6da"


def lambda_env(**extra: str) -> dict[str, str]:
    """The test database, the test handlers' app, and nothing that reaches AWS."""
    env = subprocess_env(DJANGO_SETTINGS_MODULE="lambda_settings", **extra)
    env["PYTHONPATH"] = f"{ROOT}:{TESTS}:{env.get('PYTHONPATH', '')}"
    env["S3TASKS_LOG"] = "WARNING"
    return env


def bind(bucket: str, handler_name: str, prefix: str = "") -> None:
    row, _ = Bucket.objects.get_or_create(name=bucket)
    rule = NotificationRule.objects.create(bucket=row, events=["s3:ObjectCreated:*"], prefix=prefix)
    HandlerBinding.objects.create(rule=rule, handler_name=handler_name)


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[FakeRuntimeAPI]:
    """`python -m awslambdaric s3tasks.lambda_handler.handler` talking to a local Runtime API."""
    api = FakeRuntimeAPI()
    log = (tmp_path / "awslambdaric.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "awslambdaric", "s3tasks.lambda_handler.handler"],
        cwd=ROOT,
        env=lambda_env(AWS_LAMBDA_RUNTIME_API=api.address),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        yield api
    finally:
        process.kill()
        process.wait(10)
        api.close()
        log.close()
        if process.returncode not in (0, -9):
            print((tmp_path / "awslambdaric.log").read_text())


def test_awslambdaric_round_trip_answers_sqs_batches_and_batch_operations(
    runtime: FakeRuntimeAPI,
) -> None:
    bind("acme-uploads", "lambda_tests.record")
    bind("acme-media", "lambda_tests.explode", prefix="photos/")
    bind("acme-media", "lambda_tests.record", prefix="exports/")
    batch = load_payload("lambda_sqs_mixed")
    batch["Records"].append({**batch["Records"][0], "messageId": "bad", "body": "{not json"})

    answer = runtime.invoke(batch)

    assert answer.ok, answer.body
    assert {i["itemIdentifier"] for i in answer.body["batchItemFailures"]} == {
        SNS_MESSAGE_ID,
        "bad",
    }
    states = dict(HandlerRun.objects.values_list("event__key", "state"))
    assert states == {
        "inbox/order #981.csv": RunState.SUCCEEDED,
        "exports/daily.parquet": RunState.SUCCEEDED,
        "photos/summer/sunset.jpg": RunState.RETRYING,
    }

    invocation = load_payload("batch_2_0")
    invocation["job"]["userArguments"]["handler"] = "lambda_tests.batch"
    invocation["tasks"].append({**invocation["tasks"][0], "taskId": "t2", "s3Key": "permanent"})
    answer = runtime.invoke(invocation)

    assert answer.ok, answer.body
    assert answer.body["invocationId"] == invocation["invocationId"]
    assert [r["resultCode"] for r in answer.body["results"]] == ["Succeeded", "PermanentFailure"]
    assert (
        json.loads(answer.body["results"][0]["resultString"])["arguments"]
        == (invocation["job"]["userArguments"])
    )


def test_awslambdaric_reports_an_unknown_payload_as_an_invocation_error(
    runtime: FakeRuntimeAPI,
) -> None:
    answer = runtime.invoke({"hello": "world"})

    assert not answer.ok
    assert answer.body["errorType"] == "MalformedMessage"
    assert "SQS event source mapping" in answer.body["errorMessage"]
    # The container survives a bad event and serves the next one.
    assert runtime.invoke(load_payload("test_event")).body is None


SQS_SCRIPT = """
import json, sys
from s3tasks.lambda_handler import handler
response = handler(json.loads(sys.stdin.read()), None)
print(json.dumps({"response": response, "boto3": "boto3" in sys.modules,
                  "botocore": "botocore" in sys.modules}))
"""


def test_sqs_batch_in_a_fresh_process_never_imports_boto3() -> None:
    bind("acme-uploads", "lambda_tests.record")
    batch = load_payload("lambda_sqs_mixed")
    batch["Records"] = batch["Records"][:1]

    result = subprocess.run(
        [sys.executable, "-c", SQS_SCRIPT],
        input=json.dumps(batch),
        capture_output=True,
        text=True,
        env=lambda_env(),
        cwd=ROOT,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {"response": {"batchItemFailures": []}, "boto3": False, "botocore": False}
    assert HandlerRun.objects.get().state == RunState.SUCCEEDED


def test_missing_django_settings_module_says_what_to_set() -> None:
    env = lambda_env()
    del env["DJANGO_SETTINGS_MODULE"]

    result = subprocess.run(
        [sys.executable, "-c", "from s3tasks.lambda_handler import handler; handler({}, None)"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )

    assert result.returncode != 0
    assert "DJANGO_SETTINGS_MODULE is not set" in result.stderr


@pytest.mark.postgres
def test_concurrent_invocations_with_the_same_batch_run_each_handler_once() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from django.db import connections
    from lambda_app.handlers import CALLS

    from s3tasks.lambda_handler import handler

    bind("acme-uploads", "lambda_tests.record")
    bind("acme-media", "lambda_tests.record", prefix="exports/")
    batch = load_payload("lambda_sqs_mixed")
    del batch["Records"][1]  # keep the records whose handlers succeed
    CALLS.clear()

    def invoke(_: int) -> dict:
        try:
            return handler(batch, None)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(max_workers=4) as pool:
        responses = list(pool.map(invoke, range(4)))

    assert responses == [{"batchItemFailures": []}] * 4
    assert sorted(CALLS) == [
        ("record", "exports/daily.parquet"),
        ("record", "inbox/order #981.csv"),
    ]
    assert HandlerRun.objects.filter(state=RunState.SUCCEEDED, attempts=1).count() == 2
    CALLS.clear()
