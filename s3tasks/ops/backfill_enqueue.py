"""`s3tasks_backfill --enqueue`: hand a backfill's events to the worker fleet through SQS.

Each event goes, as the S3 notification body S3 itself would have sent (one record, marked as
a backfill), to the queue its rule delivers to: the rule's queue, the queues subscribed to the
rule's topic, or `S3TASKS["DEFAULT_QUEUE"]` (also for a handler named with `--handler` that
no rule binds); `--queue` sends everything to one queue. `SendMessageBatch`, ten per call; an
entry SQS refuses is tried again twice, then counted as failed. Any worker routes the event
itself and runs it exactly once.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from s3tasks.conf import get_settings
from s3tasks.exceptions import BackfillError
from s3tasks.models import NotificationRule, Subscription
from s3tasks.ops.backfill_objects import BackfillRequest
from s3tasks.processing.dispatch import BatchItem

logger = logging.getLogger(__name__)

BATCH_LIMIT = 10  # SQS's entries per SendMessageBatch
ATTEMPTS = 3  # per entry SQS refuses
RETRY_DELAY = 0.2  # seconds, doubled per attempt


def rule_queues(bucket: str, default_queue: str) -> dict[int, tuple[str, ...]]:
    """The SQS queue names each enabled rule of `bucket` delivers to."""
    rules = NotificationRule.objects.filter(enabled=True, bucket__name=bucket).select_related(
        "queue", "topic"
    )
    subscribed: dict[int, list[str]] = defaultdict(list)
    topic_ids = [r.topic_id for r in rules if r.topic_id]
    subscriptions = Subscription.objects.filter(topic_id__in=topic_ids, queue__isnull=False)
    for sub in subscriptions.select_related("queue"):  # an HTTPS endpoint has no queue
        subscribed[sub.topic_id].append(sub.queue.name)
    found = {}
    for rule in rules:
        if rule.topic_id:
            found[rule.pk] = tuple(sorted(subscribed[rule.topic_id]))
        else:
            found[rule.pk] = (rule.queue.name if rule.queue_id else default_queue,)
    return found


def message_body(item: BatchItem) -> str:
    """The SQS body of one backfill event: `{"Records": [its S3-shaped record]}`."""
    return json.dumps({"Records": [item.event.raw]}, separators=(",", ":"))


class EnqueueSender:
    """Sends chunks of backfill events to their queues; one instance per backfill."""

    def __init__(self, sqs: Any, request: BackfillRequest) -> None:
        self.sqs = sqs
        self.override = request.queue
        self.default_queue = get_settings().DEFAULT_QUEUE
        self.rule_queues = {} if request.queue else rule_queues(request.bucket, self.default_queue)
        self._urls: dict[str, str] = {}

    def queues_for(self, item: BatchItem) -> tuple[str, ...]:
        if self.override:
            return (self.override,)
        names: set[str] = set()
        for r in item.routes or ():
            queues = self.rule_queues.get(r.rule_id) if r.rule_id else None
            if queues == ():
                raise BackfillError(
                    f"rule {r.rule_id} sends to an SNS topic that no queue subscribes to (an "
                    "HTTPS endpoint cannot be sent to): name a queue the workers consume with "
                    "--queue"
                )
            names.update(queues or (self.default_queue,))
        return tuple(sorted(names))

    def url(self, name: str) -> str:
        if name not in self._urls:
            if name.startswith(("https://", "http://")):
                self._urls[name] = name
            else:
                try:
                    self._urls[name] = self.sqs.get_queue_url(QueueName=name)["QueueUrl"]
                except self.sqs.exceptions.QueueDoesNotExist:
                    raise BackfillError(
                        f"SQS queue {name!r} does not exist: run `manage.py "
                        "sync_notifications`, or name another queue with --queue"
                    ) from None
        return self._urls[name]

    def send(self, items: Sequence[BatchItem]) -> list[str]:
        """Send every item to its queues; per item, "" or why (one of) its messages failed."""
        by_queue: dict[str, list[tuple[int, str]]] = defaultdict(list)
        for index, item in enumerate(items):
            body = message_body(item)
            for name in self.queues_for(item):
                by_queue[name].append((index, body))
        errors = [""] * len(items)
        for name, entries in by_queue.items():
            url = self.url(name)
            for start in range(0, len(entries), BATCH_LIMIT):
                for index, error in self._send_batch(url, entries[start : start + BATCH_LIMIT]):
                    errors[index] = f"{name}: {error}"
        return errors

    def _send_batch(self, url: str, entries: list[tuple[int, str]]) -> list[tuple[int, str]]:
        """Send up to ten messages; the (item index, error) of those SQS refused for good."""
        pending = {str(n): body for n, (_, body) in enumerate(entries)}
        failed: dict[str, str] = {}
        for attempt in range(ATTEMPTS):
            if attempt:
                time.sleep(RETRY_DELAY * 2 ** (attempt - 1))
            response = self.sqs.send_message_batch(
                QueueUrl=url,
                Entries=[{"Id": key, "MessageBody": body} for key, body in pending.items()],
            )
            refused = {f["Id"]: f for f in response.get("Failed", [])}
            for key in pending:
                if key in refused:
                    failed[key] = f"{refused[key].get('Code')}: {refused[key].get('Message', '')}"
                else:
                    failed.pop(key, None)
            # an entry refused as the sender's fault (too big, ...) would be refused again
            pending = {key: pending[key] for key, f in refused.items() if not f.get("SenderFault")}
            if not pending:
                break
        return [(entries[int(key)][0], text) for key, text in failed.items()]
