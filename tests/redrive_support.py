"""Helpers of the dead-letter redrive tests: queues in moto's server, messages that reach the
dead-letter queue the way SQS puts them there, and a client that fails on purpose."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from s3tasks.aws import client
from s3tasks.models import Queue

BINARY = b"\x00\x01\xfe\xff"


def arn_of(url: str) -> str:
    attributes = client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    return attributes["Attributes"]["QueueArn"]


def make_pair(source: str, dlq: str, *, rows: bool = True, max_receive: int = 1) -> tuple[str, str]:
    """A source queue whose RedrivePolicy sends to `dlq` (both in SQS; rows when `rows`)."""
    sqs = client("sqs")
    fifo = {"FifoQueue": "true"} if source.endswith(".fifo") else {}
    dlq_url = sqs.create_queue(QueueName=dlq, Attributes=fifo)["QueueUrl"]
    policy = {"deadLetterTargetArn": arn_of(dlq_url), "maxReceiveCount": max_receive}
    attributes = {**fifo, "RedrivePolicy": json.dumps(policy)}
    source_url = sqs.create_queue(QueueName=source, Attributes=attributes)["QueueUrl"]
    if rows:
        dead_letter_queue, _ = Queue.objects.get_or_create(name=dlq)
        Queue.objects.create(name=source, dead_letter_queue=dead_letter_queue)
    return source_url, dlq_url


def attributes_for(i: int) -> dict[str, Any]:
    """Message attributes on every third message: a string, a number and binary."""
    if i % 3:
        return {}
    return {
        "origin": {"DataType": "String", "StringValue": f"upload-{i}"},
        "attempt": {"DataType": "Number", "StringValue": str(i)},
        "blob": {"DataType": "Binary", "BinaryValue": BINARY + bytes([i])},
    }


def originals(count: int) -> list[tuple[str, dict[str, Any]]]:
    return [(json.dumps({"Records": [], "n": i}), attributes_for(i)) for i in range(count)]


def send_all(
    url: str, messages: list[tuple[str, dict[str, Any]]], sqs: Any = None, **extra: Any
) -> None:
    sqs = sqs or client("sqs")
    for start in range(0, len(messages), 10):
        entries = []
        for i, (body, attributes) in enumerate(messages[start : start + 10]):
            entry: dict[str, Any] = {"Id": str(i), "MessageBody": body, **extra}
            if attributes:
                entry["MessageAttributes"] = attributes
            if "MessageGroupId" in extra:
                entry["MessageDeduplicationId"] = f"original-{start + i}"
            entries.append(entry)
        response = sqs.send_message_batch(QueueUrl=url, Entries=entries)
        assert not response.get("Failed"), response


def fail_into_dlq(source_url: str, dlq_url: str, count: int) -> None:
    """Receive from the source until SQS has moved `count` messages to the DLQ (receive count
    past `maxReceiveCount`), as a failing consumer would."""
    sqs = client("sqs")
    for _ in range(20 * count):
        if depth(dlq_url) >= count:
            return
        sqs.receive_message(QueueUrl=source_url, MaxNumberOfMessages=10, VisibilityTimeout=0)
    raise AssertionError(f"only {depth(dlq_url)} of {count} messages reached the DLQ")


def depth(url: str) -> int:
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = client("sqs").get_queue_attributes(QueueUrl=url, AttributeNames=names)
    return sum(int(attributes["Attributes"][n]) for n in names)


def drain(url: str) -> list[dict[str, Any]]:
    """Every message of a queue (received and deleted), with its attributes."""
    sqs = client("sqs")
    found: list[dict[str, Any]] = []
    while True:
        response = sqs.receive_message(
            QueueUrl=url,
            MaxNumberOfMessages=10,
            WaitTimeSeconds=0,
            MessageAttributeNames=["All"],
            MessageSystemAttributeNames=["All"],
        )
        batch = response.get("Messages", [])
        if not batch:
            return found
        found += batch
        entries = [{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(batch)]
        client("sqs").delete_message_batch(QueueUrl=url, Entries=entries)


def as_sent(messages: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(body, message attributes) of received messages, comparable with `originals`."""
    return sorted(
        ((m["Body"], m.get("MessageAttributes", {})) for m in messages), key=lambda p: p[0]
    )


def refusing(endings: tuple[str, ...]):
    """A `send_message_batch` that sends the entries for real except those whose body ends
    with one of `endings`, which it reports failed, as SQS reports a partial batch failure."""

    def send(real, QueueUrl, Entries):
        refused = [e for e in Entries if e["MessageBody"].endswith(endings)]
        keep = [e for e in Entries if e not in refused]
        response = real.send_message_batch(QueueUrl=QueueUrl, Entries=keep) if keep else {}
        failed = [
            {"Id": e["Id"], "SenderFault": False, "Code": "InternalError", "Message": "try later"}
            for e in refused
        ]
        return {"Successful": response.get("Successful", []), "Failed": failed}

    return send


class WrappedSQS:
    """The real SQS client, with some methods replaced: `overrides[name](real, **kwargs)`."""

    def __init__(self, real: Any, **overrides: Callable[..., Any]) -> None:
        self.real = real
        self.overrides = overrides
        self.calls: list[tuple[str, dict[str, Any]]] = []

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.real, name)
        override = self.overrides.get(name)
        if not callable(method) or name.startswith("_") or name in ("meta", "exceptions"):
            return method

        def call(**kwargs: Any) -> Any:
            self.calls.append((name, kwargs))
            return override(self.real, **kwargs) if override else method(**kwargs)

        return call if override or name.endswith("_batch") else method

    def called(self, name: str) -> list[dict[str, Any]]:
        return [kwargs for called, kwargs in self.calls if called == name]
