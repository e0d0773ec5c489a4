"""Plan: current state + desired state → ordered steps with readable messages (pure).

Only steps marked `pending` are executed by apply; without `prune`, stale s3tasks-owned
entries and resources appear as notes ("would remove (use --prune)") and are left alone.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from s3tasks.exceptions import OverlappingRules, ProvisioningError
from s3tasks.provisioning.current import CurrentBucket, CurrentState
from s3tasks.provisioning.desired import (
    MANAGED_TAG,
    DesiredBucket,
    DesiredState,
)
from s3tasks.provisioning.notifications import (
    configuration_clashes,
    merge_configuration,
    normalize_s3_entry,
    owned_entries,
)

JSON_ATTRIBUTES = ("Policy", "RedrivePolicy")


@dataclass(frozen=True)
class Step:
    """One change (or, when not `pending`, one note) with a message a human can review."""

    action: str
    resource_type: str  # "bucket", "queue", "topic", "subscription"
    resource: str  # a name or ARN
    message: str
    params: dict[str, Any] = field(default_factory=dict)
    pending: bool = True


@dataclass(frozen=True)
class Plan:
    steps: tuple[Step, ...]
    desired: DesiredState
    prune: bool = False
    buckets: tuple[str, ...] | None = None  # the --bucket scope; None = every bucket
    queue_urls: dict[str, str] = field(default_factory=dict)  # existing queues, by name

    @property
    def has_changes(self) -> bool:
        return any(s.pending for s in self.steps)

    @property
    def changes(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.pending)

    @property
    def notes(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if not s.pending)

    def to_dict(self) -> dict[str, Any]:
        return {
            "has_changes": self.has_changes,
            "prune": self.prune,
            "buckets": list(self.buckets) if self.buckets is not None else None,
            "account": self.desired.account.id,
            "region": self.desired.account.region,
            "steps": [asdict(s) for s in self.steps],
        }


def _same_attribute(name: str, wanted: str, current: str | None) -> bool:
    if current is None:
        return False
    if name in JSON_ATTRIBUTES:
        try:
            return json.loads(wanted) == json.loads(current)
        except ValueError:
            return False
    if name == "MaximumMessageSize":
        return int(current) >= int(wanted)
    return wanted == current


def _changed_attributes(wanted: dict[str, str], current: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in wanted.items() if not _same_attribute(k, v, current.get(k))}


def _queue_steps(desired: DesiredState, current: CurrentState) -> list[Step]:
    steps = []
    for q in desired.queues:
        found = current.queues.get(q.name)
        if found is None:
            role = " (dead-letter queue)" if q.is_implicit_dlq else ""
            steps.append(_create_step("queue", "SQS queue", q.name, q.attributes, role))
            continue
        target = {"name": q.name, "url": found.url}
        steps += _update_steps("queue", "SQS queue", q.name, q.attributes, found.attributes, target)
    return steps


def _topic_steps(desired: DesiredState, current: CurrentState) -> list[Step]:
    steps = []
    for t in desired.topics:
        found = current.topics.get(t.name)
        if found is None:
            steps.append(_create_step("topic", "SNS topic", t.name, t.attributes))
            continue
        target = {"arn": found.arn}
        steps += _update_steps("topic", "SNS topic", t.name, t.attributes, found.attributes, target)
    return steps


def _create_step(
    kind: str, label: str, name: str, attributes: dict[str, str], note: str = ""
) -> Step:
    """Create a missing queue/topic, tagged as managed so stale ones can be found later."""
    params = {"name": name, "attributes": attributes, "tags": {MANAGED_TAG: "true"}}
    return Step(f"create_{kind}", kind, name, f"create {label} {name}{note}", params)


def _update_steps(
    kind: str,
    label: str,
    name: str,
    wanted: dict[str, str],
    current: dict[str, str],
    target: dict[str, str],
) -> list[Step]:
    """Set the attributes of an existing queue/topic (`target`) that differ; [] if none do."""
    changed = _changed_attributes(wanted, current)
    if not changed:
        return []
    summary = f"update {label} {name}: set {', '.join(sorted(changed))}"
    return [Step(f"update_{kind}", kind, name, summary, {**target, "attributes": changed})]


def _subscription_attributes(raw: bool, filter_policy: dict | None) -> dict[str, str]:
    attributes = {"RawMessageDelivery": "true" if raw else "false"}
    attributes["FilterPolicy"] = json.dumps(filter_policy, sort_keys=True) if filter_policy else ""
    return attributes


def _subscription_steps(desired: DesiredState, current: CurrentState, prune: bool) -> list[Step]:
    steps = []
    existing = {(s.topic_arn, s.endpoint): s for s in current.subscriptions}
    wanted = set()
    for sub in desired.subscriptions:
        key = (sub.topic_arn, sub.queue_arn)
        wanted.add(key)
        label = f"{_name(sub.topic_arn)} → {_name(sub.queue_arn)}"
        raw = " (raw delivery)" if sub.raw_message_delivery else ""
        found = existing.get(key)
        attributes = _subscription_attributes(sub.raw_message_delivery, sub.filter_policy)
        if found is None:
            steps.append(
                Step(
                    "subscribe",
                    "subscription",
                    label,
                    f"subscribe queue {label}{raw}",
                    {
                        "topic_arn": sub.topic_arn,
                        "queue_arn": sub.queue_arn,
                        "attributes": {k: v for k, v in attributes.items() if v},
                    },
                )
            )
        elif (found.raw_message_delivery, found.filter_policy) != (
            sub.raw_message_delivery,
            sub.filter_policy or None,
        ):
            steps.append(
                Step(
                    "update_subscription",
                    "subscription",
                    label,
                    f"update subscription {label}: raw delivery "
                    f"{'on' if sub.raw_message_delivery else 'off'}, filter policy "
                    f"{'set' if sub.filter_policy else 'none'}",
                    {"arn": found.arn, "attributes": attributes},
                )
            )
    ours = {q.arn for q in desired.queues} | {
        _arn_of_url(q.url, desired) for q in current.queues.values() if q.managed
    }
    for (topic_arn, endpoint), found in existing.items():
        if (topic_arn, endpoint) in wanted or endpoint not in ours:
            continue
        label = f"{_name(topic_arn)} → {_name(endpoint)}"
        steps.append(
            _removal(
                "unsubscribe",
                "subscription",
                label,
                f"remove subscription {label}",
                {"arn": found.arn},
                prune,
            )
        )
    return steps


def _arn_of_url(url: str, desired: DesiredState) -> str:
    return desired.account.sqs_arn(url.rstrip("/").rsplit("/", 1)[-1])


def _name(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


def _removal(action: str, kind: str, resource: str, what: str, params: dict, prune: bool) -> Step:
    if prune:
        return Step(action, kind, resource, what, params)
    return Step("keep_stale", kind, resource, f"would {what} (use --prune)", params, False)


def _notification_steps(bucket: DesiredBucket, found: CurrentBucket, prune: bool) -> list[Step]:
    current = found.notification
    ours = {i: normalize_s3_entry(e) for i, e in owned_entries(current).items()}
    messages = []
    for entry in bucket.notifications:
        if entry.id not in ours:
            messages.append(f"add {entry.describe()}")
        elif ours[entry.id] != normalize_s3_entry(entry.to_s3()):
            messages.append(f"update {entry.describe()}")
    stale = sorted(set(ours) - {e.id for e in bucket.notifications})
    eventbridge_change = bucket.eventbridge is not None and bucket.eventbridge != (
        "EventBridgeConfiguration" in current
    )
    if eventbridge_change:
        messages.append(f"turn EventBridge delivery {'on' if bucket.eventbridge else 'off'}")
    merged = merge_configuration(
        current, bucket.notifications, prune=prune, eventbridge=bucket.eventbridge
    )
    clashes = configuration_clashes(merged)
    if clashes:
        if stale and not prune:
            clashes.append(f"stale s3tasks entries {stale} are only removed with --prune")
        raise OverlappingRules([f"bucket {bucket.name!r}: {c}" for c in clashes])
    steps = []
    if prune:
        messages += [f"remove stale entry {i}" for i in stale]
    if messages:
        steps.append(
            Step(
                "put_notifications",
                "bucket",
                bucket.name,
                f"bucket {bucket.name} notifications: " + "; ".join(messages),
                {
                    "bucket": bucket.name,
                    "entries": [e.to_s3() | {"kind": e.kind} for e in bucket.notifications],
                    "prune": prune,
                    "eventbridge": bucket.eventbridge,
                },
            )
        )
    if not prune:
        steps += [
            Step(
                "keep_stale",
                "bucket",
                bucket.name,
                f"would remove stale entry {i} from bucket {bucket.name} (use --prune)",
                {"bucket": bucket.name, "id": i},
                False,
            )
            for i in stale
        ]
    return steps


def _bucket_steps(bucket: DesiredBucket, found: CurrentBucket, prune: bool) -> list[Step]:
    steps = []
    if not found.exists:
        if not bucket.create_if_missing:
            raise ProvisioningError(
                f"Bucket {bucket.name!r} does not exist and is not marked create_if_missing; "
                "create it, tick 'create if missing' on the bucket, or pass --bucket to sync "
                "other buckets only."
            )
        steps.append(
            Step(
                "create_bucket",
                "bucket",
                bucket.name,
                f"create S3 bucket {bucket.name}",
                {"bucket": bucket.name},
            )
        )
        found = CurrentBucket(bucket.name, exists=False)
    if bucket.manage_notifications:
        steps += _notification_steps(bucket, found, prune)
    if bucket.cors_rules and list(found.cors_rules or ()) != list(bucket.cors_rules):
        steps.append(
            Step(
                "put_cors",
                "bucket",
                bucket.name,
                f"set CORS on bucket {bucket.name} ({len(bucket.cors_rules)} rule(s))",
                {"bucket": bucket.name, "rules": list(bucket.cors_rules)},
            )
        )
    return steps


def compute_steps(
    desired: DesiredState,
    current: CurrentState,
    *,
    prune: bool = False,
    buckets: tuple[str, ...] | None = None,
) -> Plan:
    """The ordered plan: buckets exist → queues → topics → subscriptions → bucket
    notifications and CORS (destinations first: S3 validates them) → removals."""
    created, configured = [], []
    for bucket in desired.buckets:
        steps = _bucket_steps(bucket, current.buckets[bucket.name], prune)
        created += [s for s in steps if s.action == "create_bucket"]
        configured += [s for s in steps if s.action != "create_bucket"]
    steps = created + _queue_steps(desired, current) + _topic_steps(desired, current)
    subscription_steps = _subscription_steps(desired, current, prune)
    steps += [s for s in subscription_steps if s.action != "unsubscribe" and s.pending]
    steps += [s for s in configured if s.pending]
    steps += [s for s in subscription_steps if s.action == "unsubscribe"]
    steps += _resource_removals(desired, current, prune)
    steps += [s for s in configured if not s.pending]
    steps += [s for s in subscription_steps if not s.pending]
    urls = {name: q.url for name, q in current.queues.items()}
    return Plan(tuple(steps), desired, prune, buckets, urls)


def _resource_removals(desired: DesiredState, current: CurrentState, prune: bool) -> list[Step]:
    wanted_topics = {t.name for t in desired.topics}
    wanted_queues = {q.name for q in desired.queues}
    steps = [
        _removal(
            "delete_topic",
            "topic",
            t.name,
            f"delete SNS topic {t.name} (made by s3tasks, no longer in the models)",
            {"arn": t.arn},
            prune,
        )
        for t in current.topics.values()
        if t.managed and t.name not in wanted_topics
    ]
    steps += [
        _removal(
            "delete_queue",
            "queue",
            q.name,
            f"delete SQS queue {q.name} (made by s3tasks, no longer in the models)",
            {"url": q.url},
            prune,
        )
        for q in current.queues.values()
        if q.managed and q.name not in wanted_queues
    ]
    return steps
