"""A rolling deploy for real: two releases of one app (tests/deploy_v1, tests/deploy_v2; the
newer adds an `ObjectRemoved:*` handler and moves a rule's prefix) with `manage.py sqs_worker`
processes of both consuming one queue on moto's HTTP server.

Every event must reach the newer handler exactly once, old workers must keep running (also
after a restart mid-deploy), and no rule may be deleted, changed back or re-enabled by them.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from s3tasks.models import HandlerRun, NotificationRule, RunState
from tests.conftest import subprocess_env
from tests.deploy_support import (
    ARCHIVE,
    BUCKET,
    QUEUE,
    RECORD_REMOVED,
    RECORD_UPLOAD,
    runs_per_key,
)
from tests.worker_support import ROOT, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

V1, V2 = "tests.deploy_v1", "tests.deploy_v2"
# Short visibility so a message an old worker leaves comes back within seconds.
WORKER_ARGS = ["--dispatch", "inline", "--wait-time", "1", "--visibility-timeout", "2"]
WORKER_ARGS += ["--max-backoff", "1", "--stats-interval", "2", "--concurrency", "2"]
# Waits are generous: on 2 shared cores under load a worker takes many seconds to start.


def aws(service: str, endpoint: str):
    return boto3.client(service, endpoint_url=endpoint, region_name="us-east-1")


def manage(endpoint: str, release: str, *args: str, log: Path | None = None):
    """`manage.py ARGS` of one release, as a subprocess on this test's database."""
    env = subprocess_env(
        S3TASKS_ENDPOINT_URL=endpoint, S3TASKS_DISPATCH="inline", S3TASKS_EXTRA_APPS=release
    )
    command = [sys.executable, str(ROOT / "manage.py"), *args]
    if log is None:
        return subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
        )
    out = open(log, "wb")  # noqa: SIM115 (closed by the OS when the worker ends)
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)


def migrate(endpoint: str, release: str) -> None:
    done = manage(endpoint, release, "migrate", "--no-input")
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.fixture
def started() -> Iterator[dict[Path, subprocess.Popen]]:
    """The workers this test started, by log file; any still running at the end are killed."""
    workers: dict[Path, subprocess.Popen] = {}
    yield workers
    for worker in workers.values():
        if worker.poll() is None:
            worker.kill()
            worker.wait(30)


def start_worker(
    endpoint: str, release: str, url: str, log: Path, started: dict[Path, subprocess.Popen]
) -> subprocess.Popen:
    worker = manage(endpoint, release, "sqs_worker", "--queue", url, *WORKER_ARGS, log=log)
    started[log] = worker
    wait_until(lambda: "s3tasks worker: consuming" in log.read_text(), 180, f"{log.name} up")
    return worker


def diagnosis(started: dict[Path, subprocess.Popen], sqs, url: str, dlq: str) -> str:
    """What a failed wait shows: run rows, queue depths and the end of every worker's log."""
    runs = HandlerRun.objects.filter(event__bucket=BUCKET).order_by("pk")
    lines = [
        f"run {r.pk} {r.handler_name} {r.event.key} {r.state} attempts={r.attempts} {r.error}"
        for r in runs.select_related("event")
    ]
    lines.append(f"queue depth {queue_depth(sqs, url)}, DLQ depth {queue_depth(sqs, dlq)}")
    for log, worker in started.items():
        lines.append(f"--- {log.name} (exit {worker.poll()}):\n{log.read_text()[-4000:]}")
    return "\n".join(lines)


def stop(worker: subprocess.Popen, log: Path) -> str:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(120)
    except subprocess.TimeoutExpired:
        worker.kill()
        raise AssertionError(f"{log.name} did not stop:\n{log.read_text()[-3000:]}")
    output = log.read_text()
    assert worker.returncode == 0, output[-3000:]
    return output


def make_queues(sqs) -> tuple[str, str, str]:
    """The queue S3 sends to, with a DLQ and SQS's largest maxReceiveCount; its URL, ARN, DLQ.

    The 2 s visibility caps the deferral backoff at 2 s, so an old worker releases a removal
    event every ~3 s; on a loaded machine a worker may take a minute to start, and a smaller
    limit could send an event to the DLQ before release 2's worker is up (a CI run saw that).
    """
    dlq = sqs.create_queue(QueueName=f"{QUEUE}-dlq")["QueueUrl"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq, AttributeNames=["QueueArn"])
    policy = {"maxReceiveCount": "1000", "deadLetterTargetArn": dlq_arn["Attributes"]["QueueArn"]}
    url = sqs.create_queue(
        QueueName=QUEUE,
        Attributes={"VisibilityTimeout": "2", "RedrivePolicy": json.dumps(policy)},
    )["QueueUrl"]
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return url, arn["Attributes"]["QueueArn"], dlq


def queue_depth(sqs, url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    return sum(int(attributes[n]) for n in names)


def code_rules() -> dict[int, tuple[str, str, bool, tuple[str, ...]]]:
    rules = NotificationRule.objects.filter(bucket__name=BUCKET).prefetch_related("bindings")
    return {
        r.pk: (r.code_key, r.prefix, r.enabled, tuple(b.handler_name for b in r.bindings.all()))
        for r in rules
    }


def upload_then_delete(s3, keys: list[str]) -> None:
    for key in keys:
        s3.put_object(Bucket=BUCKET, Key=key, Body=b"abc")
    for key in keys:
        s3.delete_object(Bucket=BUCKET, Key=key)


def test_rolling_deploy_every_event_reaches_the_newer_handler_once_and_old_workers_keep_running(
    moto_endpoint, tmp_path, started
):
    s3, sqs = aws("s3", moto_endpoint), aws("sqs", moto_endpoint)
    s3.create_bucket(Bucket=BUCKET)
    url, arn, dlq = make_queues(sqs)
    events = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
    s3.put_bucket_notification_configuration(
        Bucket=BUCKET,
        NotificationConfiguration={"QueueConfigurations": [{"QueueArn": arn, "Events": events}]},
    )

    # Release 1 is live and an operator disabled its archive rule in the admin.
    migrate(moto_endpoint, V1)
    NotificationRule.objects.filter(bucket__name=BUCKET, prefix="archive/").update(enabled=False)
    (archive_pk,) = [pk for pk, rule in code_rules().items() if rule[3] == (ARCHIVE,)]
    # The deploy of release 2 starts with its migrate: the archive rule moves, stays disabled.
    migrate(moto_endpoint, V2)
    deployed = code_rules()
    assert deployed[archive_pk][1:3] == ("archive/2/", False)
    assert sorted(rule[3] for rule in deployed.values()) == [
        (ARCHIVE,),
        (RECORD_REMOVED,),
        (RECORD_UPLOAD,),
    ]

    # An old worker sees removal events it has no handler for.
    old_log = tmp_path / "v1-first.log"
    old = start_worker(moto_endpoint, V1, url, old_log, started)
    first = [f"uploads/first-{i}.txt" for i in range(5)]
    upload_then_delete(s3, first)
    wait_until(lambda: len(runs_per_key(RECORD_UPLOAD)) == 5, 180, "release 1 handling uploads")
    removed_runs = HandlerRun.objects.filter(handler_name=RECORD_REMOVED)
    wait_until(removed_runs.exists, 180, "release 1 receiving a removal event")
    assert runs_per_key(RECORD_REMOVED) == {}  # release 1 cannot run it, and did not

    # Release 2's worker starts; an old worker restarts mid-deploy (and must come up).
    new_log = tmp_path / "v2.log"
    new = start_worker(moto_endpoint, V2, url, new_log, started)
    first_output = stop(old, old_log)
    restarted_log = tmp_path / "v1-restarted.log"
    restarted = start_worker(moto_endpoint, V1, url, restarted_log, started)
    second = [f"uploads/second-{i}.txt" for i in range(5)]
    upload_then_delete(s3, [*second, "archive/2/skipped.txt", "archive/old-prefix.txt"])

    every = first + second
    try:
        wait_until(
            lambda: runs_per_key(RECORD_REMOVED) == dict.fromkeys(every, 1),
            300,
            "every removal handled by release 2",
            step=0.5,
        )
        wait_until(lambda: queue_depth(sqs, url) == 0, 180, "the queue drained")
    except AssertionError as failed:
        counted = {h: runs_per_key(h) for h in (RECORD_UPLOAD, RECORD_REMOVED)}
        raise AssertionError(f"{failed}; ran {counted}\n{diagnosis(started, sqs, url, dlq)}")
    assert old.returncode == 0 and restarted.poll() is None and new.poll() is None
    outputs = [first_output, stop(restarted, restarted_log), stop(new, new_log)]

    assert runs_per_key(RECORD_UPLOAD) == dict.fromkeys(every, 1)
    assert runs_per_key(RECORD_REMOVED) == dict.fromkeys(every, 1)
    assert runs_per_key(ARCHIVE) == {}  # disabled in the admin: stayed disabled
    runs = HandlerRun.objects.filter(event__bucket=BUCKET)
    assert sorted(runs.values_list("handler_name", flat=True)) == sorted(
        [RECORD_UPLOAD] * 10 + [RECORD_REMOVED] * 10
    )
    assert set(runs.values_list("state", flat=True)) == {RunState.SUCCEEDED}
    assert code_rules() == deployed  # nothing deleted, changed back or re-enabled
    assert queue_depth(sqs, dlq) == 0
    for output in outputs[:2]:  # release 1: warned about the unknown handler, kept running
        assert "SystemCheckError" not in output
        assert "left as they are" in output
