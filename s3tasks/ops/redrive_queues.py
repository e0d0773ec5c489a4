"""Which queues a dead-letter redrive reads and writes: the DLQ, its sources, a destination.

A DLQ's sources are the `Queue` rows that name it as their dead-letter queue plus the queues
whose RedrivePolicy in SQS points at it; a source's DLQ comes from its RedrivePolicy (what SQS
does), else from its row. Used by `s3tasks.ops.redrive`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from s3tasks import aws
from s3tasks.exceptions import RedriveError
from s3tasks.models import Queue

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class QueueInfo:
    name: str
    url: str
    arn: str

    @property
    def is_fifo(self) -> bool:
        return self.name.endswith(".fifo")


@dataclass(frozen=True)
class RedrivePlan:
    """Where messages come from and go to."""

    dead_letter_queue: QueueInfo
    sources: tuple[QueueInfo, ...] = ()  # queues whose failed messages land in the DLQ
    destination: QueueInfo | None = None  # None: each message back to the queue it came from

    def describe(self) -> str:
        targets = [self.destination] if self.destination else list(self.sources)
        return f"{self.dead_letter_queue.name} → {', '.join(q.name for q in targets)}"

    def destination_for(self, source_arn: str = "") -> QueueInfo | str:
        """Where one message goes: the destination, else the source SQS recorded on it
        (`DeadLetterQueueSourceArn`), else the only source; otherwise why it cannot go."""
        if self.destination is not None:
            return self.destination
        for source in self.sources:
            if source.arn == source_arn:
                return source
        if len(self.sources) == 1:
            return self.sources[0]
        names = ", ".join(s.name for s in self.sources)
        return (
            f"{self.dead_letter_queue.name} is the dead-letter queue of {names} and the message "
            "does not say which it came from: choose the destination (--to)"
        )


def resolve_redrive(queue: str, to: str | None = None, *, sqs: Any = None) -> RedrivePlan:
    """The plan for `queue`: a DLQ's name or URL (its messages go back to their sources), or a
    source queue's name (its DLQ's messages come back to it). `to` names the destination."""
    sqs = sqs or aws.client("sqs")
    named = locate(sqs, queue)
    destination = locate(sqs, to) if to else None
    sources = source_queues(sqs, named)
    if sources:
        return RedrivePlan(named, sources, destination)
    dead_letter_queue = dead_letter_queue_of(sqs, named)
    if dead_letter_queue is not None:
        return _plan_for_source(sqs, named, dead_letter_queue, destination)
    if destination is not None:
        return RedrivePlan(named, (), destination)
    raise RedriveError(
        f"SQS queue {named.name!r} is no queue's dead-letter queue (no Queue row names it and "
        "no queue's RedrivePolicy points at it) and has no dead-letter queue itself: name a "
        "dead-letter queue or a queue that has one, or choose the destination with --to."
    )


def resolve_for_source(queue: str, *, sqs: Any = None) -> RedrivePlan:
    """The plan that brings the messages of `queue`'s dead-letter queue back into `queue`."""
    sqs = sqs or aws.client("sqs")
    source = locate(sqs, queue)
    dead_letter_queue = dead_letter_queue_of(sqs, source)
    if dead_letter_queue is None:
        raise RedriveError(
            f"SQS queue {source.name!r} has no dead-letter queue (no RedrivePolicy in SQS, no "
            "dead-letter queue on its Queue row): there is nothing to redrive into it."
        )
    return _plan_for_source(sqs, source, dead_letter_queue, None)


def _plan_for_source(
    sqs: Any, source: QueueInfo, dead_letter_queue: QueueInfo, destination: QueueInfo | None
) -> RedrivePlan:
    sources = source_queues(sqs, dead_letter_queue)
    others = [s.name for s in sources if s.arn != source.arn]
    if others and destination is None:
        raise RedriveError(
            f"{source.name}'s dead-letter queue {dead_letter_queue.name!r} also serves "
            f"{', '.join(others)}: name {dead_letter_queue.name!r} itself to send each message "
            f"back to the queue it came from, or choose the destination explicitly (--to)."
        )
    return RedrivePlan(dead_letter_queue, sources or (source,), destination or source)


def locate(sqs: Any, name_or_url: str) -> QueueInfo:
    """A queue's name, URL and ARN, from its name or URL; `RedriveError` when SQS lacks it."""
    if name_or_url.startswith(("http://", "https://")):
        url, name = name_or_url, name_or_url.rstrip("/").rsplit("/", 1)[-1]
    else:
        name = name_or_url
        try:
            url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        except sqs.exceptions.QueueDoesNotExist:
            raise RedriveError(_unknown(sqs, name)) from None
    try:
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])
    except sqs.exceptions.QueueDoesNotExist:
        raise RedriveError(_unknown(sqs, name)) from None
    return QueueInfo(name, url, attributes["Attributes"]["QueueArn"])


def _unknown(sqs: Any, name: str) -> str:
    known = ", ".join(Queue.objects.values_list("name", flat=True)[:20]) or "none"
    return (
        f"SQS queue {name!r} does not exist in {sqs.meta.region_name} "
        f"({sqs.meta.endpoint_url}). Check the name (Queue rows: {known}); "
        "`manage.py sync_notifications` creates the queues of the Queue rows."
    )


def source_queues(sqs: Any, dead_letter_queue: QueueInfo) -> tuple[QueueInfo, ...]:
    """Queues whose failed messages land in `dead_letter_queue`: Queue rows that name it, and
    queues whose RedrivePolicy in SQS points at it."""
    found: dict[str, QueueInfo] = {}
    rows = Queue.objects.filter(dead_letter_queue__name=dead_letter_queue.name)
    for name in rows.values_list("name", flat=True):
        try:
            queue = locate(sqs, name)
        except RedriveError:
            logger.warning("s3tasks redrive: Queue row %r has no queue in SQS; skipped", name)
            continue
        found[queue.url] = queue
    for url in _listed_sources(sqs, dead_letter_queue):
        if url not in found:
            found[url] = locate(sqs, url)
    return tuple(sorted(found.values(), key=lambda q: q.name))


def _listed_sources(sqs: Any, dead_letter_queue: QueueInfo) -> list[str]:
    try:
        pages = sqs.get_paginator("list_dead_letter_source_queues").paginate(
            QueueUrl=dead_letter_queue.url
        )
        return [url for page in pages for url in page.get("queueUrls", [])]
    except sqs.exceptions.ClientError as exc:  # e.g. no sqs:ListDeadLetterSourceQueues
        logger.warning("s3tasks redrive: cannot list the sources of %s: %s", dead_letter_queue, exc)
        return []


def dead_letter_queue_of(sqs: Any, queue: QueueInfo) -> QueueInfo | None:
    """`queue`'s DLQ: from its RedrivePolicy in SQS (what SQS does), else from its Queue row."""
    attributes = sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=["RedrivePolicy"])
    policy = attributes.get("Attributes", {}).get("RedrivePolicy")
    target = json.loads(policy).get("deadLetterTargetArn", "") if policy else ""
    if target:
        return locate(sqs, target.rsplit(":", 1)[-1])
    row = Queue.objects.filter(name=queue.name).select_related("dead_letter_queue").first()
    if row is not None and row.dead_letter_queue is not None:
        return locate(sqs, row.dead_letter_queue.name)
    return None


def queue_depth(sqs: Any, queue: QueueInfo) -> tuple[int, int]:
    """(visible, in flight) messages in `queue`, as SQS approximates them."""
    names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
    attributes = sqs.get_queue_attributes(QueueUrl=queue.url, AttributeNames=names)["Attributes"]
    return int(attributes.get(names[0], 0)), int(attributes.get(names[1], 0))
