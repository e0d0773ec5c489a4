"""Desired AWS state, computed purely from model rows and settings.

Per bucket: existence, the s3tasks-owned notification entries, CORS and the EventBridge switch;
plus every queue (with its dead-letter queue, redrive policy, visibility timeout and our policy
statements letting only our buckets/topics send), every topic (with our statement letting only
our buckets publish) and every subscription. ARNs are derived from the account id and region,
so the plan can be computed before anything exists. Whether each one is ours, foreign or to
be adopted is the planner's business (`ownership`), not this module's.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from s3tasks.exceptions import S3TasksConfigurationError
from s3tasks.provisioning.model_rows import ModelRows, QueueRow, RuleRow, SubscriptionRow
from s3tasks.provisioning.notifications import NotificationEntry, RuleTarget, compile_entries
from s3tasks.provisioning.policies import sender_statements

MIN_MESSAGE_SIZE = 65536  # S3 event messages can exceed SQS' old small limits
WANTED_MESSAGE_SIZE = 262144
DLQ_RETENTION_SECONDS = 1209600  # 14 days: time to look at what failed
MANAGED_TAG = "s3tasks:managed"


@dataclass(frozen=True)
class Account:
    """Where resources live: the partition, account id (from STS) and region."""

    id: str
    region: str
    partition: str = "aws"

    def sqs_arn(self, name: str) -> str:
        return f"arn:{self.partition}:sqs:{self.region}:{self.id}:{name}"

    def sns_arn(self, name: str) -> str:
        return f"arn:{self.partition}:sns:{self.region}:{self.id}:{name}"

    def bucket_arn(self, name: str) -> str:
        return f"arn:{self.partition}:s3:::{name}"


@dataclass(frozen=True)
class DesiredQueue:
    name: str
    arn: str
    attributes: dict[str, str] = field(default_factory=dict)  # all set on a queue sync owns
    explicit: frozenset[str] = frozenset()  # those a Queue row sets (also set on adopted queues)
    statements: tuple[dict[str, Any], ...] = ()  # our policy statements (merged by Sid)
    is_implicit_dlq: bool = False  # sync adds `<name>-dlq` for queues without a DLQ


@dataclass(frozen=True)
class DesiredTopic:
    name: str
    arn: str
    statements: tuple[dict[str, Any], ...] = ()  # our policy statements (merged by Sid)


@dataclass(frozen=True)
class DesiredSubscription:
    """`endpoint` is a queue ARN (protocol "sqs") or the URL of an HTTP(S) endpoint."""

    topic_arn: str
    endpoint: str
    raw_message_delivery: bool = False
    filter_policy: dict[str, Any] | None = None
    protocol: str = "sqs"


@dataclass(frozen=True)
class DesiredBucket:
    name: str
    arn: str
    create_if_missing: bool
    manage_notifications: bool
    notifications: tuple[NotificationEntry, ...] = ()
    eventbridge: bool | None = None
    cors_rules: tuple[dict[str, Any], ...] = ()  # empty: CORS not managed


@dataclass(frozen=True)
class DesiredState:
    account: Account
    buckets: tuple[DesiredBucket, ...] = ()
    queues: tuple[DesiredQueue, ...] = ()
    topics: tuple[DesiredTopic, ...] = ()
    subscriptions: tuple[DesiredSubscription, ...] = ()


def dlq_name(queue: str) -> str:
    """`jobs` → `jobs-dlq`, `jobs.fifo` → `jobs-dlq.fifo` (within SQS' 80 characters)."""
    base, fifo = (queue[:-5], ".fifo") if queue.endswith(".fifo") else (queue, "")
    return f"{base[: 80 - 4 - len(fifo)]}-dlq{fifo}"


def _check_region(kind: str, name: str, region: str, account: Account) -> None:
    if region and region != account.region:
        raise S3TasksConfigurationError(
            f"{kind} {name!r} is in region {region!r} but sync manages S3TASKS['REGION'] "
            f"({account.region!r}); run sync with that region, or clear the row's region."
        )


def _rule_destination(rule: RuleRow, default_queue: str, account: Account) -> tuple[str, str]:
    if rule.topic:
        if rule.topic.endswith(".fifo"):
            raise S3TasksConfigurationError(
                f"{rule.label} sends to FIFO topic {rule.topic!r}; S3 can only notify standard "
                "topics. Point the rule at a standard topic or queue."
            )
        return "topic", account.sns_arn(rule.topic)
    queue = rule.queue or default_queue
    if queue.endswith(".fifo"):
        raise S3TasksConfigurationError(
            f"{rule.label} sends to FIFO queue {queue!r}; S3 cannot notify FIFO queues. Use a "
            "standard queue (s3tasks dedupes events itself)."
        )
    return "queue", account.sqs_arn(queue)


def _senders_statements(
    resource_arn: str, action: str, buckets: list[str], topics: list[str], account: Account
) -> tuple[dict[str, Any], ...]:
    """Our policy statements letting only these buckets (S3) and topics (SNS) send to us."""
    return sender_statements(
        resource_arn,
        action,
        [account.bucket_arn(b) for b in buckets],
        [account.sns_arn(t) for t in topics],
        account.id,
    )


def _queue(
    row: QueueRow, has_row: bool, dlq: str, senders: dict[str, list[str]], account: Account
) -> DesiredQueue:
    attributes = {
        "VisibilityTimeout": str(row.visibility_timeout),
        "MessageRetentionPeriod": str(row.message_retention_seconds),
        "MaximumMessageSize": str(WANTED_MESSAGE_SIZE),
    }
    if dlq:
        attributes["RedrivePolicy"] = json.dumps(
            {"deadLetterTargetArn": account.sqs_arn(dlq), "maxReceiveCount": row.max_receive_count},
            sort_keys=True,
        )
    # A Queue row's fields are explicit; an implied queue (DEFAULT_QUEUE) or an automatic DLQ
    # only has defaults, which are never forced onto a queue sync adopted.
    explicit = {"VisibilityTimeout", "MessageRetentionPeriod"} if has_row else set()
    if has_row and row.dead_letter_queue:
        explicit.add("RedrivePolicy")
    arn = account.sqs_arn(row.name)
    statements = _senders_statements(
        arn, "sqs:SendMessage", senders.get("bucket", []), senders.get("topic", []), account
    )
    return DesiredQueue(row.name, arn, attributes, frozenset(explicit), statements)


def _queues(
    rows: ModelRows, queue_senders: dict[str, dict[str, list[str]]], account: Account
) -> tuple[DesiredQueue, ...]:
    by_name = {q.name: q for q in rows.queues}
    used_as_dlq = {q.dead_letter_queue for q in rows.queues if q.dead_letter_queue}
    wanted = set(by_name) | set(queue_senders)
    result: dict[str, DesiredQueue] = {}
    for name in sorted(wanted):
        row = by_name.get(name) or QueueRow(name=name)
        _check_region("Queue", name, row.region, account)
        dlq = row.dead_letter_queue
        if not dlq and name not in used_as_dlq and not _looks_like_dlq(name):
            dlq = dlq_name(name)
            if dlq not in by_name:
                result[dlq] = DesiredQueue(
                    dlq,
                    account.sqs_arn(dlq),
                    {
                        "MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS),
                        "MaximumMessageSize": str(WANTED_MESSAGE_SIZE),
                    },
                    is_implicit_dlq=True,
                )
        result[name] = _queue(row, name in by_name, dlq, queue_senders[name], account)
    # DLQs first: a redrive policy must point at an existing queue.
    return tuple(sorted(result.values(), key=lambda q: (not _is_dlq(q, result), q.name)))


def _looks_like_dlq(name: str) -> bool:
    return name.removesuffix(".fifo").endswith("-dlq")


def _is_dlq(queue: DesiredQueue, queues: dict[str, DesiredQueue]) -> bool:
    return queue.is_implicit_dlq or any(queue.arn == _dlq_arn(q) for q in queues.values())


def _dlq_arn(queue: DesiredQueue) -> str:
    policy = queue.attributes.get("RedrivePolicy")
    return json.loads(policy)["deadLetterTargetArn"] if policy else ""


def build_desired(
    rows: ModelRows, *, default_queue: str, account: Account, buckets: list[str] | None = None
) -> DesiredState:
    """The whole desired state (limited to `buckets` when given; queues/topics then only
    those the chosen buckets' rules use, plus their DLQs and subscriptions)."""
    chosen = [b for b in rows.buckets if buckets is None or b.name in buckets]
    chosen_names = {b.name for b in chosen}
    queue_senders: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    topic_senders: dict[str, list[str]] = defaultdict(list)
    targets: dict[str, list[RuleTarget]] = defaultdict(list)
    for rule in rows.rules:
        kind, arn = _rule_destination(rule, default_queue, account)
        name = arn.rsplit(":", 1)[-1]
        if kind == "queue":
            queue_senders[name]["bucket"].append(rule.bucket)
        else:
            topic_senders[name].append(rule.bucket)
        if rule.bucket in chosen_names:
            targets[rule.bucket].append(
                RuleTarget(rule.id, rule.label, rule.events, rule.prefix, rule.suffix, kind, arn)
            )
    for sub in rows.subscriptions:
        if not sub.endpoint:
            queue_senders[sub.queue]["topic"].append(sub.topic)
    for senders in queue_senders.values():
        for key in senders:
            senders[key] = sorted(set(senders[key]))
    desired_buckets = []
    for b in chosen:
        _check_region("Bucket", b.name, b.region, account)
        desired_buckets.append(
            DesiredBucket(
                name=b.name,
                arn=account.bucket_arn(b.name),
                create_if_missing=b.create_if_missing,
                manage_notifications=b.manage_notifications,
                notifications=compile_entries(targets[b.name]) if b.manage_notifications else (),
                eventbridge=b.eventbridge_enabled,
                cors_rules=tuple(b.cors_rules),
            )
        )
    queues = _queues(rows, queue_senders, account)
    topic_names = {t.name for t in rows.topics} | set(topic_senders)
    topics = []
    for name in sorted(topic_names):
        row_region = next((t.region for t in rows.topics if t.name == name), "")
        _check_region("Topic", name, row_region, account)
        arn = account.sns_arn(name)
        statements = _senders_statements(
            arn, "sns:Publish", sorted(set(topic_senders[name])), [], account
        )
        topics.append(DesiredTopic(name, arn, statements))
    subscriptions = tuple(_subscription(s, account) for s in rows.subscriptions)
    state = DesiredState(account, tuple(desired_buckets), queues, tuple(topics), subscriptions)
    return state if buckets is None else _limit_to_buckets(state, chosen_names)


def _subscription(row: SubscriptionRow, account: Account) -> DesiredSubscription:
    topic_arn = account.sns_arn(row.topic)
    if not row.endpoint:
        return DesiredSubscription(
            topic_arn, account.sqs_arn(row.queue), row.raw_message_delivery, row.filter_policy
        )
    protocol = row.endpoint.split(":", 1)[0].lower()
    if protocol not in ("http", "https"):
        raise S3TasksConfigurationError(
            f"The subscription of topic {row.topic!r} to {row.endpoint!r} names no http(s) URL; "
            "write the https:// URL of s3tasks' SNS endpoint."
        )
    if row.raw_message_delivery:
        raise S3TasksConfigurationError(
            f"The subscription of topic {row.topic!r} to {row.endpoint} asks for raw message "
            "delivery, which carries no signature: s3tasks' SNS endpoint refuses such messages. "
            "Turn raw delivery off."
        )
    return DesiredSubscription(topic_arn, row.endpoint, False, row.filter_policy, protocol)


def _limit_to_buckets(state: DesiredState, names: set[str]) -> DesiredState:
    """Keep only the queues/topics/subscriptions the chosen buckets deliver to."""
    arns = {e.arn for b in state.buckets for e in b.notifications}
    subs = tuple(s for s in state.subscriptions if s.topic_arn in arns)
    arns |= {s.endpoint for s in subs}
    for q in state.queues:
        if q.arn in arns and _dlq_arn(q):
            arns.add(_dlq_arn(q))
    return DesiredState(
        state.account,
        state.buckets,
        tuple(q for q in state.queues if q.arn in arns),
        tuple(t for t in state.topics if t.arn in arns),
        subs,
    )
