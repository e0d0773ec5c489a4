"""Follow-up commands through the outbox: real SQS/SNS on moto's HTTP server, and the
transactional guarantees (rollback sends nothing, a crash after commit loses nothing), the
relay's claims and its short duplicate window (nothing locked while AWS answers)."""

from __future__ import annotations

import json
import threading
import time
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.utils import timezone

from s3tasks import enqueue, publish_sns, publish_sqs
from s3tasks.aws import client
from s3tasks.followups.commands import EnqueueTask, PublishSNS, PublishSQS
from s3tasks.followups.outbox import (
    CLAIM_SECONDS,
    CONNECT_TIMEOUT,
    IDEMPOTENCY_ATTRIBUTE,
    READ_TIMEOUT,
    forget_resolved_names,
    relay_messages,
    relay_outbox,
)
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


# --- the relay: claims and the duplicate window ---------------------------------------------


def drain(queue_url: str) -> list[dict]:
    messages, batch = [], receive_all(queue_url)
    while batch:
        messages += batch
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(batch)]
        client("sqs").delete_message_batch(QueueUrl=queue_url, Entries=entries)
        batch = receive_all(queue_url)
    return messages


@pytest.mark.django_db(transaction=True)
def test_a_transaction_s_follow_ups_are_each_marked_sent_right_after_their_own_send(
    monkeypatch,
):
    """The duplicate window of an entry is its own send: the ones sent before it are already
    marked when it goes out, and the whole transaction's entries go in one relay pass."""
    seen: list[tuple[str, int]] = []

    def send(entry: OutboxMessage) -> None:
        marked = OutboxMessage.objects.filter(sent_at__isnull=False).count()
        seen.append((entry.payload["args"][0], marked))

    monkeypatch.setattr("s3tasks.followups.outbox.send_celery", send)
    with transaction.atomic():
        for n in range(4):
            enqueue(FOLLOWUP_TASK, f"k{n}")
        assert seen == []  # nothing before commit
    assert seen == [("k0", 0), ("k1", 1), ("k2", 2), ("k3", 3)]
    assert OutboxMessage.objects.filter(sent_at__isnull=True).count() == 0
    assert set(OutboxMessage.objects.values_list("attempts", flat=True)) == {1}


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
def test_a_follow_up_to_an_unknown_queue_backs_off_without_holding_back_the_others(aws):
    url = client("sqs").create_queue(QueueName="known")["QueueUrl"]
    with transaction.atomic():
        publish_sqs("no-such-queue", "lost?")
        publish_sqs("known", "delivered")
    assert [m["Body"] for m in drain(url)] == ["delivered"]
    unknown = OutboxMessage.objects.get(target="no-such-queue")
    assert unknown.sent_at is None and unknown.available_at > timezone.now()
    assert "does not exist" in unknown.last_error


@pytest.mark.integration
@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("failing_first", [True, False], ids=["failed-first", "failed-last"])
def test_follow_ups_of_a_rolled_back_savepoint_are_dropped_and_the_rest_sent_at_commit(
    aws, failing_first
):
    url = client("sqs").create_queue(QueueName="partial")["QueueUrl"]

    def failing_handler() -> None:
        with pytest.raises(RuntimeError), transaction.atomic():
            publish_sqs("partial", "rolled back")
            raise RuntimeError("handler failed")

    with transaction.atomic():
        if failing_first:
            failing_handler()
        publish_sqs("partial", "kept")
        if not failing_first:
            failing_handler()
    # Sent by the commit's own relay, not left for the periodic one:
    assert OutboxMessage.objects.get().sent_at is not None
    assert [m["Body"] for m in drain(url)] == ["kept"]


@pytest.mark.django_db(transaction=True)
def test_no_database_lock_is_held_while_the_follow_up_is_sent(monkeypatch):
    """The relay claims entries in a short transaction and sends after it committed: another
    connection can lock the very row (PostgreSQL) or write at all (SQLite) mid-send."""
    monkeypatch.setattr("s3tasks.followups.outbox.relay_after_commit", lambda pk: None)
    message = EnqueueTask(FOLLOWUP_TASK, ("locked?",)).submit()
    seen: list[str] = []

    def probe() -> None:
        try:
            if connection.vendor == "sqlite":
                with connection.cursor() as cursor:
                    cursor.execute("PRAGMA busy_timeout = 300")
            with transaction.atomic():  # SQLite: BEGIN IMMEDIATE takes the write lock
                list(OutboxMessage.objects.select_for_update(nowait=True).filter(pk=message.pk))
            seen.append("free")
        except DatabaseError as exc:
            seen.append(f"locked: {exc}")
        finally:
            connection.close()

    def send_while_probing(entry: OutboxMessage) -> None:
        thread = threading.Thread(target=probe)
        thread.start()
        thread.join(30)

    monkeypatch.setattr("s3tasks.followups.outbox.send_celery", send_while_probing)
    assert relay_outbox() == 1
    assert seen == ["free"]
    message.refresh_from_db()
    assert message.sent_at is not None and message.attempts == 1


@pytest.mark.django_db(transaction=True)
def test_an_entry_whose_relay_died_mid_send_is_sent_again_once_its_claim_expires(
    monkeypatch,
):
    monkeypatch.setattr("s3tasks.followups.outbox.relay_after_commit", lambda pk: None)
    sent: list[str] = []
    message = EnqueueTask(FOLLOWUP_TASK, ("claimed",)).submit()

    def die_mid_send(entry: OutboxMessage) -> None:
        sent.append(str(entry.idempotency_key))
        raise SystemExit("killed between the send and the mark")  # not an Exception

    monkeypatch.setattr("s3tasks.followups.outbox.send_celery", die_mid_send)
    with pytest.raises(SystemExit):
        relay_outbox()
    monkeypatch.setattr("s3tasks.followups.outbox.send_celery", lambda entry: sent.append("again"))
    assert relay_outbox() == 0 and relay_messages([message.pk]) == 0  # claimed: left alone
    message.refresh_from_db()
    assert message.sent_at is None and message.attempts == 1
    assert message.available_at > timezone.now() + timedelta(seconds=CLAIM_SECONDS - 10)
    OutboxMessage.objects.filter(pk=message.pk).update(available_at=timezone.now())  # expired
    assert relay_outbox() == 1
    assert sent == [str(message.idempotency_key), "again"]  # the one duplicate a death allows


@pytest.mark.django_db(transaction=True)
def test_a_pass_that_runs_long_hands_back_what_it_could_not_send_before_its_claim_ends(
    monkeypatch,
):
    """No send starts that could end after the claim (another relay may take the entry then):
    the rest is handed back at once, unclaimed, for the next pass."""
    monkeypatch.setattr("s3tasks.followups.outbox.relay_after_commit", lambda pk: None)
    monkeypatch.setattr(
        "s3tasks.followups.outbox.CLAIM_SECONDS", CONNECT_TIMEOUT + READ_TIMEOUT + 1
    )
    sent: list[str] = []

    def slow_send(entry: OutboxMessage) -> None:
        sent.append(entry.payload["args"][0])
        time.sleep(1.2)  # past the last moment a send may start

    monkeypatch.setattr("s3tasks.followups.outbox.send_celery", slow_send)
    for n in range(3):
        EnqueueTask(FOLLOWUP_TASK, (f"k{n}",)).submit()
    assert relay_outbox(limit=3) == 1
    assert sent == ["k0"]
    rest = OutboxMessage.objects.filter(sent_at__isnull=True)
    assert rest.count() == 2
    assert all(m.attempts == 0 and m.available_at <= timezone.now() for m in rest)
    monkeypatch.setattr("s3tasks.followups.outbox.send_celery", lambda entry: sent.append("later"))
    assert relay_outbox() == 2
