"""The worker loop against the in-memory SQS stand-in: backpressure, batching, backoff,
heartbeat, failure injection and shutdown. Fast, no network."""

from __future__ import annotations

import json
import threading
import time

import pytest
from django.core.management import CommandError, call_command

from s3tasks.processing.messages import Status
from s3tasks.worker.memory_sqs import MemorySQS, MemorySQSError
from s3tasks.worker.sqs import backoff_seconds, parse_redrive_policy
from tests.worker_support import Recorder, consumer, make_queue


def receive_sizes(sqs: MemorySQS) -> list[int]:
    """A list that fills with the `MaxNumberOfMessages` of every later receive on `sqs`."""
    asked: list[int] = []
    original = sqs.receive_message

    def spy(**kwargs):
        asked.append(kwargs["MaxNumberOfMessages"])
        return original(**kwargs)

    sqs.receive_message = spy  # type: ignore[method-assign]
    return asked


def test_handled_messages_are_deleted_in_batches_and_the_queue_ends_empty():
    sqs = MemorySQS()
    url = make_queue(sqs)
    for i in range(40):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    final = consumer(sqs, Recorder(), concurrency=10).run()
    assert (final.received, final.handled, final.deleted) == (40, 40, 40)
    assert sqs.counts(url) == (0, 0)
    assert sqs.calls["delete_message_batch"] < 40  # batched, not one call per message


def test_never_receives_more_messages_than_free_workers():
    sqs = MemorySQS()
    url = make_queue(sqs)
    for i in range(12):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    asked = receive_sizes(sqs)
    process = Recorder(delay=0.05)
    final = consumer(sqs, process, concurrency=3, batch_size=10).run()
    assert final.handled == 12
    assert max(asked) <= 3
    assert process.max_running <= 3


def test_failed_message_is_retried_after_an_exponential_backoff_then_deleted():
    sqs = MemorySQS()
    url = make_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="flaky")
    process = Recorder(answers={"flaky": [Status.FAILED]})
    began = time.monotonic()
    final = consumer(sqs, process, backoff_base=0.5, max_backoff=5, exit_when_idle=1.5).run()
    assert [m.receive_count for m in process.calls] == [1, 2]
    assert time.monotonic() - began >= 0.5  # hidden for the backoff, not redelivered at once
    assert (final.failed, final.handled, final.deleted) == (1, 1, 1)
    assert sqs.counts(url) == (0, 0)


def test_always_failing_message_reaches_the_dead_letter_queue_while_others_are_consumed():
    sqs = MemorySQS()
    make_queue(sqs, "jobs-dlq")
    policy = json.dumps({"maxReceiveCount": 3, "deadLetterTargetArn": "arn:aws:sqs:::jobs-dlq"})
    url = make_queue(sqs, RedrivePolicy=policy)
    sqs.send_message(QueueUrl=url, MessageBody="poison")
    for i in range(5):
        sqs.send_message(QueueUrl=url, MessageBody=f"ok{i}")
    process = Recorder(answers={"poison": [Status.MALFORMED] * 10})
    final = consumer(sqs, process, max_backoff=0, exit_when_idle=0.5).run()
    dlq_url = url.replace("jobs", "jobs-dlq")
    assert sqs.counts(dlq_url) == (1, 0)
    assert sqs.counts(url) == (0, 0)
    assert final.malformed == 3 and final.handled == 5


def test_partial_failure_of_a_delete_batch_is_counted_and_the_loop_goes_on():
    sqs = MemorySQS()
    url = make_queue(sqs)
    for i in range(3):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    sqs.fail_next(
        "delete_message_batch",
        {"Successful": [], "Failed": [{"Id": "0", "Code": "InternalError", "Message": "boom"}]},
    )
    final = consumer(sqs, Recorder(), concurrency=1, batch_size=1).run()
    assert final.handled == 3
    assert final.delete_failed == 1 and final.deleted == 2


def test_receive_errors_back_off_and_the_worker_keeps_consuming():
    sqs = MemorySQS()
    url = make_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="m")
    sqs.fail_next("receive_message", MemorySQSError("ServiceUnavailable"))
    sqs.fail_next("receive_message", MemorySQSError("ServiceUnavailable"))
    began = time.monotonic()
    final = consumer(sqs, Recorder(), receive_error_backoff=0.1, exit_when_idle=1.5).run()
    assert final.receive_errors == 2 and final.handled == 1
    assert time.monotonic() - began >= 0.3  # 0.1 s, then 0.2 s of backoff


def test_heartbeat_extends_visibility_so_a_long_handler_is_not_redelivered():
    sqs = MemorySQS()
    url = make_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="long")
    process = Recorder(delay=3.0)
    final = consumer(sqs, process, visibility_timeout=1, concurrency=2).run()
    assert len(process.calls) == 1  # never visible again while it ran
    assert final.extended >= 2 and final.deleted == 1
    assert sqs.counts(url) == (0, 0)


def test_stop_lets_in_flight_work_finish_and_never_receives_again():
    sqs = MemorySQS()
    url = make_queue(sqs)
    for i in range(10):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    process = Recorder(delay=0.5)
    worker = consumer(sqs, process, concurrency=2, batch_size=2, exit_when_idle=None)
    receives_at_stop: list[int] = []

    def stop_soon() -> None:
        while not process.calls:
            time.sleep(0.01)
        receives_at_stop.append(sqs.calls["receive_message"])
        worker.stop()

    threading.Thread(target=stop_soon).start()
    final = worker.run()
    assert sqs.calls["receive_message"] == receives_at_stop[0]
    assert final.handled == final.received == final.deleted == len(process.calls)
    visible, hidden = sqs.counts(url)
    assert (visible, hidden) == (10 - final.handled, 0)


def test_messages_received_after_stop_are_released_unstarted():
    sqs = MemorySQS()
    url = make_queue(sqs)
    sqs.send_message(QueueUrl=url, MessageBody="late")
    process = Recorder()
    worker = consumer(sqs, process, exit_when_idle=None)
    original = sqs.receive_message

    def slow_poll(**kwargs):  # the stop arrives while this long poll is under way
        worker.stop()
        return original(**kwargs)

    sqs.receive_message = slow_poll  # type: ignore[method-assign]
    final = worker.run()
    assert process.calls == []
    assert final.released == 1 and final.received == 1
    assert sqs.counts(url) == (1, 0)  # visible again at once for another worker


def test_max_messages_and_once_bound_what_is_received():
    sqs = MemorySQS()
    url = make_queue(sqs)
    for i in range(30):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    assert consumer(sqs, Recorder(), max_messages=7, exit_when_idle=None).run().handled == 7
    once = consumer(sqs, Recorder(), once=True, concurrency=10, exit_when_idle=None).run()
    assert once.handled == 10
    assert sqs.counts(url) == (13, 0)


def test_multiple_queues_are_each_consumed():
    sqs = MemorySQS()
    urls = [make_queue(sqs, name) for name in ("a", "b", "c")]
    for url in urls:
        for i in range(4):
            sqs.send_message(QueueUrl=url, MessageBody=f"{url}{i}")
    final = consumer(sqs, Recorder(), "a", "b", "c", concurrency=4).run()
    assert final.handled == 12
    assert all(sqs.counts(url) == (0, 0) for url in urls)


def test_backoff_grows_exponentially_and_is_capped():
    assert [backoff_seconds(n, base=2, cap=30) for n in (1, 2, 3, 4, 5, 99)] == [
        2,
        4,
        8,
        16,
        30,
        30,
    ]


def test_redrive_policy_is_read_from_text_or_dict():
    arn = "arn:aws:sqs:us-east-1:1:dlq"
    text = json.dumps({"maxReceiveCount": "4", "deadLetterTargetArn": arn})
    assert parse_redrive_policy(text) == (4, arn)
    assert parse_redrive_policy({"maxReceiveCount": 2}) == (2, "")
    assert parse_redrive_policy(None) == (None, "")


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--batch-size", "11"], "--batch-size must be 1..10"),
        (["--wait-time", "21"], "--wait-time must be 0..20"),
        (["--concurrency", "0"], "--concurrency must be at least 1"),
        (["--visibility-timeout", "0"], "--visibility-timeout must be 1..43200"),
    ],
)
def test_invalid_flags_are_command_errors(flags, message):
    with pytest.raises(CommandError, match=message):
        call_command("sqs_worker", *flags)


@pytest.mark.django_db
def test_no_queue_at_all_is_a_command_error_saying_what_to_do(settings, aws_credentials):
    from s3tasks.models import Queue

    Queue.objects.update(enabled=False)
    settings.S3TASKS = {**settings.S3TASKS, "ENDPOINT_URL": "http://127.0.0.1:9"}
    with pytest.raises(CommandError, match="no enabled Queue.*sync_notifications.*--queue"):
        call_command("sqs_worker", "--once")


@pytest.mark.django_db
def test_a_queue_that_does_not_exist_is_a_command_error(moto_endpoint):
    with pytest.raises(CommandError, match="Cannot find SQS queue 'nope'.*sync_notifications"):
        call_command("sqs_worker", "--queue", "nope", "--once")


def test_each_queue_receiver_asks_for_at_most_its_share_of_the_workers():
    sqs = MemorySQS()
    for name in ("busy", "quiet"):
        make_queue(sqs, name)
    url = sqs.get_queue_url(QueueName="busy")["QueueUrl"]
    for i in range(12):
        sqs.send_message(QueueUrl=url, MessageBody=f"m{i}")
    asked = receive_sizes(sqs)
    final = consumer(sqs, Recorder(delay=0.01), "busy", "quiet", concurrency=4).run()
    assert final.handled == 12
    assert max(asked) == 2  # 4 workers, 2 queues: an idle queue never holds them all
