"""Follow-up commands through the outbox: real SQS/SNS on moto's HTTP server, and the
transactional guarantees (rollback sends nothing, a crash after commit loses nothing)."""

from __future__ import annotations

import json
import threading
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection, transaction
from django.utils import timezone

from s3tasks import enqueue, publish_sns, publish_sqs
from s3tasks.aws import client
from s3tasks.followups.commands import EnqueueTask, PublishSNS, PublishSQS
from s3tasks.followups.outbox import IDEMPOTENCY_ATTRIBUTE, forget_resolved_names, relay_outbox
from s3tasks.models import OutboxMessage, Queue, Topic
from tests.handlers_for_dispatch import FOLLOWUP_BUCKET, FOLLOWUP_TASK, runs_of


@pytest.fixture
def aws(moto_endpoint):
    forget_resolved_names()
    yield moto_endpoint
    forget_resolved_names()


def receive_all(queue_url: str) -> list[dict]:
    response = client("sqs").receive_message(
        QueueUrl=queue_url, MaxNumberOfMessages=10, MessageAttributeNames=["All"], WaitTimeSeconds=1
    )
    return response.get("Messages", [])


# --- values and validation (no I/O) -------------------------------------------------------


def test_fifo_queue_without_group_id_is_refused_with_a_hint():
    with pytest.raises(ValueError, match="FIFO: pass group_id="):
        PublishSQS("orders.fifo", "x")


def test_group_id_on_a_standard_queue_is_refused():
    with pytest.raises(ValueError, match="only apply to FIFO queues"):
        PublishSQS("orders", "x", group_id="g")


def test_non_json_arguments_are_refused_before_anything_is_written(db):
    with pytest.raises(TypeError, match="JSON-serialisable"):
        enqueue(FOLLOWUP_TASK, object())
    assert not OutboxMessage.objects.exists()


def test_enqueue_accepts_a_task_object_or_handler_function(db):
    from tests.handlers_for_dispatch import count, followup

    assert enqueue(followup, "k").target == FOLLOWUP_TASK
    assert enqueue(count, {}).target == "tests.dispatch.count"


# --- transactional behaviour --------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_rolled_back_transaction_sends_nothing():
    with pytest.raises(RuntimeError), transaction.atomic():
        enqueue(FOLLOWUP_TASK, "rolled-back")
        raise RuntimeError("handler failed")
    assert not OutboxMessage.objects.exists()
    assert relay_outbox() == 0 and runs_of(FOLLOWUP_BUCKET, "rolled-back") == 0


@pytest.mark.django_db(transaction=True)
def test_commit_sends_immediately_through_the_relay():
    with transaction.atomic():
        message = enqueue(FOLLOWUP_TASK, "committed")
        assert runs_of(FOLLOWUP_BUCKET, "committed") == 0  # nothing before commit
    message.refresh_from_db()
    assert message.sent_at is not None and message.attempts == 1
    assert runs_of(FOLLOWUP_BUCKET, "committed") == 1  # eager Celery ran it


@pytest.mark.django_db(transaction=True)
def test_entry_left_by_a_crash_after_commit_is_sent_once_by_the_periodic_relay(monkeypatch):
    monkeypatch.setattr(
        "s3tasks.followups.outbox.relay_after_commit", lambda pk: None
    )  # "process died"
    with transaction.atomic():
        enqueue(FOLLOWUP_TASK, "crashed")
    assert OutboxMessage.objects.get().sent_at is None
    assert relay_outbox() == 1
    assert relay_outbox() == 0
    assert runs_of(FOLLOWUP_BUCKET, "crashed") == 1


# --- SQS / SNS on moto's server ------------------------------------------------------------


@pytest.mark.integration
def test_publish_sqs_lands_with_the_idempotency_attribute(aws, db):
    url = client("sqs").create_queue(QueueName="followups")["QueueUrl"]
    message = publish_sqs("followups", {"key": "a.csv"}, attributes={"kind": "import", "n": 3})
    assert relay_outbox() == 1
    [received] = receive_all(url)
    assert json.loads(received["Body"]) == {"key": "a.csv"}
    attributes = received["MessageAttributes"]
    assert attributes[IDEMPOTENCY_ATTRIBUTE]["StringValue"] == str(message.idempotency_key)
    assert attributes["kind"]["StringValue"] == "import"
    assert attributes["n"] == {"DataType": "Number", "StringValue": "3"}


@pytest.mark.integration
def test_publish_sqs_uses_the_queue_url_from_the_model(aws, db):
    url = client("sqs").create_queue(QueueName="real-name")["QueueUrl"]
    Queue.objects.create(name="modelled", url=url)
    publish_sqs("modelled", "hello")
    assert relay_outbox() == 1
    assert [m["Body"] for m in receive_all(url)] == ["hello"]


@pytest.mark.integration
def test_fifo_queue_gets_group_and_deduplication_ids(aws, db):
    url = client("sqs").create_queue(QueueName="jobs.fifo", Attributes={"FifoQueue": "true"})[
        "QueueUrl"
    ]
    publish_sqs("jobs.fifo", "first", group_id="g1", deduplication_id="same")
    publish_sqs("jobs.fifo", "dropped as a duplicate", group_id="g1", deduplication_id="same")
    default_dedup = publish_sqs("jobs.fifo", "second", group_id="g1")
    assert relay_outbox() == 3
    response = client("sqs").receive_message(
        QueueUrl=url, MaxNumberOfMessages=10, AttributeNames=["All"], WaitTimeSeconds=1
    )
    received = response["Messages"]
    assert [m["Body"] for m in received] == ["first", "second"]
    assert {m["Attributes"]["MessageGroupId"] for m in received} == {"g1"}
    assert received[1]["Attributes"]["MessageDeduplicationId"] == str(default_dedup.idempotency_key)


@pytest.mark.integration
def test_publish_sns_reaches_a_subscribed_queue(aws, db):
    sqs, sns = client("sqs"), client("sns")
    url = sqs.create_queue(QueueName="fanout")["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
        "QueueArn"
    ]
    topic_arn = sns.create_topic(Name="uploads-done")["TopicArn"]
    sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn)
    message = publish_sns("uploads-done", {"key": "b.csv"}, subject="done")
    assert relay_outbox() == 1
    [received] = receive_all(url)
    envelope = json.loads(received["Body"])
    assert json.loads(envelope["Message"]) == {"key": "b.csv"}
    assert envelope["Subject"] == "done"
    assert envelope["MessageAttributes"][IDEMPOTENCY_ATTRIBUTE]["Value"] == str(
        message.idempotency_key
    )


@pytest.mark.integration
def test_publish_sns_uses_the_topic_arn_from_the_model(aws, db):
    arn = client("sns").create_topic(Name="t-real")["TopicArn"]
    Topic.objects.create(name="t-modelled", arn=arn)
    PublishSNS("t-modelled", "x").submit()
    assert relay_outbox() == 1


@pytest.mark.integration
def test_unknown_queue_backs_off_with_a_clear_error_then_sends_once_it_exists(aws, db):
    message = publish_sqs("not-yet", "x")
    assert relay_outbox() == 0
    message.refresh_from_db()
    assert message.sent_at is None and message.attempts == 1
    assert "SQS queue 'not-yet' does not exist" in message.last_error
    assert "sync_notifications" in message.last_error
    assert message.available_at > timezone.now()
    assert relay_outbox() == 0  # not due yet: backoff holds
    url = client("sqs").create_queue(QueueName="not-yet")["QueueUrl"]
    OutboxMessage.objects.filter(pk=message.pk).update(
        available_at=timezone.now() - timedelta(seconds=1)
    )
    assert relay_outbox() == 1
    assert len(receive_all(url)) == 1


@pytest.mark.integration
def test_unknown_topic_is_reported_with_what_to_add(aws, db):
    publish_sns("no-such-topic", "x")
    relay_outbox()
    assert "SNS topic 'no-such-topic' does not exist" in OutboxMessage.objects.get().last_error


@pytest.mark.integration
def test_relay_command_once_sends_due_entries(aws, db, capsys):
    url = client("sqs").create_queue(QueueName="by-command")["QueueUrl"]
    publish_sqs("by-command", "one")
    call_command("s3tasks_relay", "--once")
    assert "Sent 1 outbox entries." in capsys.readouterr().out
    assert [m["Body"] for m in receive_all(url)] == ["one"]


# --- PostgreSQL: the guarantees under concurrency -----------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_relays_send_each_entry_once(monkeypatch):
    monkeypatch.setattr("s3tasks.followups.outbox.relay_after_commit", lambda pk: None)
    sent_ids: list[str] = []
    lock = threading.Lock()

    def fake_send(message):
        with lock:
            sent_ids.append(str(message.idempotency_key))

    monkeypatch.setattr("s3tasks.followups.outbox.send_celery", fake_send)
    for i in range(40):
        EnqueueTask(FOLLOWUP_TASK, (f"k{i}",)).submit()
    totals: list[int] = []

    def relay() -> None:
        try:
            totals.append(relay_outbox(limit=100))
        finally:
            connection.close()

    threads = [threading.Thread(target=relay) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sum(totals) == 40 and len(sent_ids) == len(set(sent_ids)) == 40
    assert not OutboxMessage.objects.filter(sent_at__isnull=True).exists()
