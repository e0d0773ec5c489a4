"""Read the current AWS state that sync compares against (the thin boto3 layer).

Every function takes its boto3 client, so tests hand in moto's. Only what the plan needs is
read: the desired queues/topics/buckets, plus the queues/topics recorded as ours or tagged
`s3tasks:managed` so stale ones can be reported or pruned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from s3tasks.provisioning.desired import MANAGED_TAG, Account, DesiredState


@dataclass(frozen=True)
class CurrentBucket:
    name: str
    exists: bool
    notification: dict[str, Any] = field(default_factory=dict)
    cors_rules: tuple[dict[str, Any], ...] | None = None  # None: no CORS configuration


@dataclass(frozen=True)
class CurrentQueue:
    name: str
    url: str
    attributes: dict[str, str] = field(default_factory=dict)
    tagged: bool = False  # s3tasks:managed=true: created by s3tasks (any release)


@dataclass(frozen=True)
class CurrentTopic:
    name: str
    arn: str
    attributes: dict[str, str] = field(default_factory=dict)
    tagged: bool = False  # s3tasks:managed=true: created by s3tasks (any release)


@dataclass(frozen=True)
class CurrentSubscription:
    arn: str  # "" while `pending`: SNS names no subscription before it is confirmed
    topic_arn: str
    endpoint: str  # a queue ARN, or an HTTP(S) URL
    raw_message_delivery: bool = False
    filter_policy: dict[str, Any] | None = None
    protocol: str = "sqs"
    pending: bool = False  # an HTTP(S) endpoint that has not confirmed it (yet)


SUBSCRIPTION_PROTOCOLS = ("sqs", "http", "https")


@dataclass(frozen=True)
class CurrentState:
    buckets: dict[str, CurrentBucket] = field(default_factory=dict)
    queues: dict[str, CurrentQueue] = field(default_factory=dict)  # by name
    topics: dict[str, CurrentTopic] = field(default_factory=dict)  # by name
    subscriptions: tuple[CurrentSubscription, ...] = ()


def error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def read_account(sts: Any, region: str) -> Account:
    """The caller's account id and partition, from `sts:GetCallerIdentity`."""
    identity = sts.get_caller_identity()
    partition = identity.get("Arn", "arn:aws:").split(":")[1] or "aws"
    return Account(id=identity["Account"], region=region, partition=partition)


def read_bucket(s3: Any, name: str, *, with_cors: bool) -> CurrentBucket:
    from botocore.exceptions import ClientError

    try:
        s3.head_bucket(Bucket=name)
    except ClientError as exc:
        if error_code(exc) in ("404", "NoSuchBucket", "NotFound"):
            return CurrentBucket(name, exists=False)
        raise
    config = s3.get_bucket_notification_configuration(Bucket=name)
    config.pop("ResponseMetadata", None)
    cors = None
    if with_cors:
        try:
            cors = tuple(s3.get_bucket_cors(Bucket=name).get("CORSRules", []))
        except ClientError as exc:
            if error_code(exc) != "NoSuchCORSConfiguration":
                raise
    return CurrentBucket(name, exists=True, notification=config, cors_rules=cors)


def _queue_url(sqs: Any, name: str) -> str | None:
    from botocore.exceptions import ClientError

    try:
        return sqs.get_queue_url(QueueName=name)["QueueUrl"]
    except ClientError as exc:
        if "NonExistentQueue" in error_code(exc) or "QueueDoesNotExist" in error_code(exc):
            return None
        raise


def read_queue(sqs: Any, name: str, url: str | None = None) -> CurrentQueue | None:
    url = url or _queue_url(sqs, name)
    if url is None:
        return None
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
    tags = sqs.list_queue_tags(QueueUrl=url).get("Tags", {})
    return CurrentQueue(name, url, attributes, tagged=tags.get(MANAGED_TAG) == "true")


def read_tagged_queues(sqs: Any, skip: set[str]) -> dict[str, CurrentQueue]:
    """Queues tagged `s3tasks:managed=true` (created by sync), except the names in `skip`."""
    found: dict[str, CurrentQueue] = {}
    for page in sqs.get_paginator("list_queues").paginate():
        for url in page.get("QueueUrls", []):
            name = url.rstrip("/").rsplit("/", 1)[-1]
            if name in skip:
                continue
            if sqs.list_queue_tags(QueueUrl=url).get("Tags", {}).get(MANAGED_TAG) == "true":
                found[name] = CurrentQueue(name, url, tagged=True)
    return found


def _topic_managed(sns: Any, arn: str) -> bool:
    tags = sns.list_tags_for_resource(ResourceArn=arn).get("Tags", [])
    return any(t["Key"] == MANAGED_TAG and t["Value"] == "true" for t in tags)


def read_topics(sns: Any, wanted: set[str]) -> dict[str, CurrentTopic]:
    """The wanted topics that exist (with attributes), plus every tagged topic."""
    found: dict[str, CurrentTopic] = {}
    for page in sns.get_paginator("list_topics").paginate():
        for item in page.get("Topics", []):
            arn = item["TopicArn"]
            name = arn.rsplit(":", 1)[-1]
            if name in wanted:
                attributes = sns.get_topic_attributes(TopicArn=arn)["Attributes"]
                found[name] = CurrentTopic(name, arn, attributes, _topic_managed(sns, arn))
            elif _topic_managed(sns, arn):
                found[name] = CurrentTopic(name, arn, tagged=True)
    return found


def read_subscriptions(sns: Any, topic_arns: list[str]) -> tuple[CurrentSubscription, ...]:
    """SQS and HTTP(S) subscriptions of these topics, with raw delivery and filter policy;
    an HTTP(S) one not confirmed yet is read as `pending` (SNS has no attributes for it)."""
    import json

    found = []
    for topic_arn in topic_arns:
        paginator = sns.get_paginator("list_subscriptions_by_topic")
        for page in paginator.paginate(TopicArn=topic_arn):
            for sub in page.get("Subscriptions", []):
                protocol = sub.get("Protocol")
                if protocol not in SUBSCRIPTION_PROTOCOLS:
                    continue
                if sub["SubscriptionArn"] == "PendingConfirmation":
                    if protocol != "sqs":
                        found.append(
                            CurrentSubscription(
                                "", topic_arn, sub["Endpoint"], protocol=protocol, pending=True
                            )
                        )
                    continue
                attrs = sns.get_subscription_attributes(SubscriptionArn=sub["SubscriptionArn"])[
                    "Attributes"
                ]
                policy = attrs.get("FilterPolicy")
                found.append(
                    CurrentSubscription(
                        sub["SubscriptionArn"],
                        topic_arn,
                        sub["Endpoint"],
                        attrs.get("RawMessageDelivery") == "true",
                        json.loads(policy) if policy else None,
                        protocol,
                    )
                )
    return tuple(found)


def _recorded_names(arns: Sequence[str], prefix: str) -> set[str]:
    """Names of the recorded queue/topic ARNs in this account and region."""
    return {arn[len(prefix) :] for arn in arns if arn.startswith(prefix)}


def read_current(
    desired: DesiredState,
    clients: dict[str, Any],
    *,
    all_buckets: bool,
    recorded_queues: Sequence[str] = (),
    recorded_topics: Sequence[str] = (),
) -> CurrentState:
    """Everything the plan compares, read through the given clients ("s3", "sqs", "sns").

    Stale queues/topics (recorded as ours or tagged) are only looked for when the scope is
    every bucket: a `--bucket` run must not report another bucket's resources as stale.
    """
    s3, sqs, sns = clients["s3"], clients["sqs"], clients["sns"]
    account = desired.account
    buckets = {
        b.name: read_bucket(s3, b.name, with_cors=bool(b.cors_rules)) for b in desired.buckets
    }
    wanted_queues = {q.name for q in desired.queues}
    if all_buckets:
        wanted_queues |= _recorded_names(recorded_queues, account.sqs_arn(""))
    queues: dict[str, CurrentQueue] = {}
    for name in sorted(wanted_queues):
        current = read_queue(sqs, name)
        if current is not None:
            queues[name] = current
    if all_buckets:
        queues.update(read_tagged_queues(sqs, skip=wanted_queues))
    wanted_topics = {t.name for t in desired.topics}
    if all_buckets:
        wanted_topics |= _recorded_names(recorded_topics, account.sns_arn(""))
    topics = read_topics(sns, wanted_topics)
    if not all_buckets:
        topics = {n: t for n, t in topics.items() if n in wanted_topics}
    subscriptions = read_subscriptions(sns, sorted(t.arn for t in topics.values()))
    return CurrentState(buckets, queues, topics, subscriptions)
