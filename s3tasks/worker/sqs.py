"""The thin SQS layer of the worker: receive, delete and change visibility, in batches.

Everything takes a boto3 SQS client (or anything with the same methods, such as
`s3tasks.worker.memory_sqs.MemorySQS`), so tests and benchmarks can hand in their own.
Batch calls use positional entry ids ("0".."9") and report partial failures instead of
raising: a failed delete only means a redelivery, which the database dedupes.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar
from urllib.parse import urlparse

logger = logging.getLogger(__name__)

SQS_BATCH_LIMIT = 10
MAX_VISIBILITY_TIMEOUT = 43_200  # SQS's ceiling (12 hours)


@dataclass(frozen=True)
class QueueRef:
    """A resolved queue: its name, URL and the redrive settings that matter to the worker."""

    name: str
    url: str
    max_receive_count: int | None = None
    dead_letter_arn: str = ""
    visibility_timeout: int | None = None


@dataclass(frozen=True)
class ReceivedMessage:
    """One received SQS message and the handle needed to delete it or change its visibility."""

    queue: QueueRef
    message_id: str
    receipt_handle: str
    body: str
    receive_count: int = 1
    attributes: dict[str, Any] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class QueueDepth:
    """A queue's messages by state: ready to receive, received and not yet deleted, delayed."""

    visible: int = 0
    in_flight: int = 0
    delayed: int = 0

    ATTRIBUTES: ClassVar[dict[str, str]] = {
        "visible": "ApproximateNumberOfMessages",
        "in_flight": "ApproximateNumberOfMessagesNotVisible",
        "delayed": "ApproximateNumberOfMessagesDelayed",
    }


@dataclass
class BatchResult:
    """What a batch call did: the messages it succeeded for and `(message, reason)` failures."""

    succeeded: list[ReceivedMessage] = field(default_factory=list)
    failed: list[tuple[ReceivedMessage, str]] = field(default_factory=list)

    def extend(self, other: BatchResult) -> None:
        self.succeeded.extend(other.succeeded)
        self.failed.extend(other.failed)


def is_queue_url(name_or_url: str) -> bool:
    return name_or_url.startswith(("http://", "https://"))


def queue_name_from_url(url: str) -> str:
    return urlparse(url).path.rstrip("/").rsplit("/", 1)[-1]


class SqsQueueClient:
    """The worker's view of SQS over one boto3-compatible client."""

    def __init__(self, client: Any) -> None:
        self.client = client

    # --- queues ------------------------------------------------------------------------------

    def resolve(self, name_or_url: str) -> QueueRef:
        """Look a queue up by name or URL and read its redrive policy and visibility timeout.

        Raises the client's error (e.g. `QueueDoesNotExist`) when the queue is missing.
        """
        if is_queue_url(name_or_url):
            url, name = name_or_url, queue_name_from_url(name_or_url)
        else:
            url, name = self.client.get_queue_url(QueueName=name_or_url)["QueueUrl"], name_or_url
        attributes = self.client.get_queue_attributes(
            QueueUrl=url, AttributeNames=["RedrivePolicy", "VisibilityTimeout"]
        ).get("Attributes", {})
        max_receive, dlq = parse_redrive_policy(attributes.get("RedrivePolicy"))
        timeout = attributes.get("VisibilityTimeout")
        return QueueRef(
            name=name,
            url=url,
            max_receive_count=max_receive,
            dead_letter_arn=dlq,
            visibility_timeout=int(timeout) if timeout is not None else None,
        )

    def depth(self, url: str) -> QueueDepth:
        """How many messages the queue holds now, by state (`GetQueueAttributes`; SQS's
        figures are approximate and settle within about a minute)."""
        attributes = self.client.get_queue_attributes(
            QueueUrl=url, AttributeNames=list(QueueDepth.ATTRIBUTES.values())
        ).get("Attributes", {})
        return QueueDepth(
            **{state: int(attributes.get(name, 0)) for state, name in QueueDepth.ATTRIBUTES.items()}
        )

    def url_of_arn(self, arn: str) -> str:
        """The URL of the queue an ARN names (`arn:aws:sqs:REGION:ACCOUNT:NAME`)."""
        parts = arn.split(":")
        if len(parts) != 6 or parts[2] != "sqs":
            raise ValueError(f"not an SQS queue ARN: {arn!r}")
        return self.client.get_queue_url(QueueName=parts[5], QueueOwnerAWSAccountId=parts[4])[
            "QueueUrl"
        ]

    # --- messages ----------------------------------------------------------------------------

    def receive(
        self, queue: QueueRef, *, max_messages: int, wait_time: int, visibility_timeout: int
    ) -> list[ReceivedMessage]:
        """Receive up to `max_messages` (1..10), long-polling up to `wait_time` seconds."""
        response = self.client.receive_message(
            QueueUrl=queue.url,
            MaxNumberOfMessages=max(1, min(SQS_BATCH_LIMIT, max_messages)),
            WaitTimeSeconds=wait_time,
            VisibilityTimeout=visibility_timeout,
            MessageSystemAttributeNames=["ApproximateReceiveCount", "SentTimestamp"],
        )
        return [self._message(queue, raw) for raw in response.get("Messages", [])]

    def delete(self, messages: Sequence[ReceivedMessage]) -> BatchResult:
        """Delete messages with `DeleteMessageBatch`, ten per call, per queue."""
        return self._batched(messages, "delete_message_batch", lambda m: {})

    def change_visibility(
        self, messages: Sequence[ReceivedMessage], timeouts: Sequence[int]
    ) -> BatchResult:
        """Set each message's visibility timeout (`ChangeMessageVisibilityBatch`, ten per call)."""
        wanted = {id(m): clamp_visibility(t) for m, t in zip(messages, timeouts, strict=True)}
        return self._batched(
            messages,
            "change_message_visibility_batch",
            lambda m: {"VisibilityTimeout": wanted[id(m)]},
        )

    # --- internals ---------------------------------------------------------------------------

    @staticmethod
    def _message(queue: QueueRef, raw: dict[str, Any]) -> ReceivedMessage:
        attributes = raw.get("Attributes") or {}
        return ReceivedMessage(
            queue=queue,
            message_id=raw["MessageId"],
            receipt_handle=raw["ReceiptHandle"],
            body=raw.get("Body", ""),
            receive_count=int(attributes.get("ApproximateReceiveCount", 1)),
            attributes=attributes,
        )

    def _batched(self, messages: Sequence[ReceivedMessage], method: str, extra: Any) -> BatchResult:
        result = BatchResult()
        by_queue: dict[str, list[ReceivedMessage]] = {}
        for message in messages:
            by_queue.setdefault(message.queue.url, []).append(message)
        for url, queued in by_queue.items():
            for start in range(0, len(queued), SQS_BATCH_LIMIT):
                chunk = queued[start : start + SQS_BATCH_LIMIT]
                result.extend(self._one_batch(url, chunk, method, extra))
        return result

    def _one_batch(
        self, url: str, chunk: list[ReceivedMessage], method: str, extra: Any
    ) -> BatchResult:
        entries = [
            {"Id": str(i), "ReceiptHandle": m.receipt_handle, **extra(m)}
            for i, m in enumerate(chunk)
        ]
        try:
            response = getattr(self.client, method)(QueueUrl=url, Entries=entries)
        except Exception as exc:  # the whole call failed: report every entry, never raise
            logger.warning("s3tasks worker: %s on %s failed: %s", method, url, exc)
            return BatchResult(failed=[(m, f"{type(exc).__name__}: {exc}") for m in chunk])
        result = BatchResult()
        failed_ids = set()
        for failure in response.get("Failed", []):
            index = int(failure["Id"])
            failed_ids.add(index)
            reason = f"{failure.get('Code', '?')}: {failure.get('Message', '')}".strip()
            result.failed.append((chunk[index], reason))
            logger.warning(
                "s3tasks worker: %s failed for message %s on %s: %s",
                method,
                chunk[index].message_id,
                url,
                reason,
            )
        result.succeeded = [m for i, m in enumerate(chunk) if i not in failed_ids]
        return result


def parse_redrive_policy(policy: str | dict[str, Any] | None) -> tuple[int | None, str]:
    """`(maxReceiveCount, deadLetterTargetArn)` from a RedrivePolicy attribute (or `(None, "")`)."""
    if not policy:
        return None, ""
    try:
        data = json.loads(policy) if isinstance(policy, str) else dict(policy)
        return int(data["maxReceiveCount"]), str(data.get("deadLetterTargetArn", ""))
    except (ValueError, KeyError, TypeError):
        logger.warning("s3tasks worker: unreadable RedrivePolicy %r", policy)
        return None, ""


def clamp_visibility(seconds: float) -> int:
    return int(max(0, min(MAX_VISIBILITY_TIMEOUT, seconds)))


def backoff_seconds(receive_count: int, *, base: float, cap: float) -> int:
    """Exponential backoff by receive count: base, 2·base, 4·base, … capped at `cap`."""
    exponent = max(0, receive_count - 1)
    if exponent > 30:  # 2**30·base is past any cap; avoid huge floats
        return clamp_visibility(cap)
    return clamp_visibility(min(cap, base * 2**exponent))
