"""Plain, frozen snapshots of the configuration models: the input of the pure desired state.

`load_rows()` is the only place provisioning reads the ORM for planning; everything after it
works on these values, so the desired-state and plan code can be tested without a database.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from s3tasks.models import Bucket, HandlerBinding, NotificationRule, Queue, Subscription, Topic


@dataclass(frozen=True)
class BucketRow:
    name: str
    manage_notifications: bool = True
    create_if_missing: bool = True
    eventbridge_enabled: bool | None = None
    cors_rules: tuple[dict[str, Any], ...] = ()
    region: str = ""


@dataclass(frozen=True)
class TopicRow:
    name: str
    region: str = ""


@dataclass(frozen=True)
class QueueRow:
    name: str
    visibility_timeout: int = 60
    message_retention_seconds: int = 345600
    dead_letter_queue: str = ""
    max_receive_count: int = 5
    region: str = ""

    @property
    def is_fifo(self) -> bool:
        return self.name.endswith(".fifo")


@dataclass(frozen=True)
class SubscriptionRow:
    """A topic's subscription: `queue` names an SQS queue, or `endpoint` is an HTTPS URL."""

    topic: str
    queue: str
    raw_message_delivery: bool = False
    filter_policy: dict[str, Any] | None = None
    endpoint: str = ""


@dataclass(frozen=True)
class RuleRow:
    """An enabled notification rule; `queue`/`topic` empty means the default queue."""

    id: int
    label: str
    bucket: str
    events: tuple[str, ...]
    prefix: str = ""
    suffix: str = ""
    topic: str = ""
    queue: str = ""


@dataclass(frozen=True)
class BindingRow:
    """An enabled handler binding (used for the IAM policy: which buckets, what access)."""

    handler_name: str
    bucket: str
    prefix: str
    access: str
    rule_id: int = 0


@dataclass(frozen=True)
class ModelRows:
    """Everything provisioning needs from the database, as plain values."""

    buckets: tuple[BucketRow, ...] = ()
    topics: tuple[TopicRow, ...] = ()
    queues: tuple[QueueRow, ...] = ()
    subscriptions: tuple[SubscriptionRow, ...] = ()
    rules: tuple[RuleRow, ...] = ()
    bindings: tuple[BindingRow, ...] = ()


def load_rows() -> ModelRows:
    """Read the configuration models (every bucket, enabled rules and bindings)."""

    rules = NotificationRule.objects.filter(enabled=True).select_related("bucket", "topic", "queue")
    bindings = HandlerBinding.objects.filter(enabled=True, rule__enabled=True).select_related(
        "rule__bucket"
    )
    return ModelRows(
        buckets=tuple(
            BucketRow(
                name=b.name,
                manage_notifications=b.manage_notifications,
                create_if_missing=b.create_if_missing,
                eventbridge_enabled=b.eventbridge_enabled,
                cors_rules=tuple(b.cors_rules or ()),
                region=b.region,
            )
            for b in Bucket.objects.all()
        ),
        topics=tuple(TopicRow(t.name, t.region) for t in Topic.objects.all()),
        queues=tuple(
            QueueRow(
                name=q.name,
                visibility_timeout=q.visibility_timeout,
                message_retention_seconds=q.message_retention_seconds,
                dead_letter_queue=q.dead_letter_queue.name if q.dead_letter_queue_id else "",
                max_receive_count=q.max_receive_count,
                region=q.region,
            )
            for q in Queue.objects.select_related("dead_letter_queue")
        ),
        subscriptions=tuple(
            SubscriptionRow(
                s.topic.name,
                s.queue.name if s.queue_id else "",
                s.raw_message_delivery,
                s.filter_policy,
                s.endpoint,
            )
            for s in Subscription.objects.select_related("topic", "queue")
        ),
        rules=tuple(
            RuleRow(
                id=r.pk,
                label=f"rule {r.pk} '{r}'",
                bucket=r.bucket.name,
                events=tuple(str(e) for e in r.events),
                prefix=r.prefix,
                suffix=r.suffix,
                topic=r.topic.name if r.topic_id else "",
                queue=r.queue.name if r.queue_id else "",
            )
            for r in rules
        ),
        bindings=tuple(
            BindingRow(b.handler_name, b.rule.bucket.name, b.rule.prefix, b.access, b.rule_id)
            for b in bindings
        ),
    )
