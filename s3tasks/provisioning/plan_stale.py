"""Plan steps for queues/topics no longer in the models, and records of things gone (pure).

Only what is ours is ever removed: created (recorded, or tagged by an earlier release) is
deleted with `--prune`; adopted is released — our policy statements come out, the records go,
the resource stays where its owner put it.
"""

from __future__ import annotations

from s3tasks.provisioning.current import CurrentQueue, CurrentState, CurrentTopic
from s3tasks.provisioning.desired import DesiredState
from s3tasks.provisioning.ownership import (
    Claim,
    Ledger,
    Origin,
    ResourceKind,
    subscription_identifier,
)
from s3tasks.provisioning.steps import (
    Action,
    AwsChange,
    DeleteQueue,
    DeleteTopic,
    Step,
    UpdateQueue,
    UpdateTopic,
)

QUEUE, TOPIC = ResourceKind.QUEUE, ResourceKind.TOPIC
LABELS = {QUEUE: "SQS queue", TOPIC: "SNS topic"}
DELETE = {QUEUE: Action.DELETE_QUEUE, TOPIC: Action.DELETE_TOPIC}
RELEASE = {QUEUE: Action.RELEASE_QUEUE, TOPIC: Action.RELEASE_TOPIC}


def _removal(
    kind: ResourceKind,
    arn: str,
    found: CurrentQueue | CurrentTopic,
    origin: Origin,
    ledger: Ledger,
    prune: bool,
) -> Step:
    releases = (Claim(kind, arn, origin), *ledger.owned_parts(arn))
    label = f"{LABELS[kind]} {found.name}"
    if origin is Origin.ADOPTED:
        sids = tuple(sorted(ledger.parts(ResourceKind.POLICY_STATEMENT, arn)))
        action, what = (
            RELEASE[kind],
            (
                f"release {label} (adopted, no longer in the models: s3tasks' policy statements "
                "removed, the resource itself kept)"
            ),
        )
        change: AwsChange = (
            UpdateQueue(found.url, {}, remove_sids=sids)
            if isinstance(found, CurrentQueue)
            else UpdateTopic(found.arn, remove_sids=sids)
        )
    else:
        action, what = DELETE[kind], f"delete {label} (made by s3tasks, no longer in the models)"
        change = (
            DeleteQueue(found.url) if isinstance(found, CurrentQueue) else DeleteTopic(found.arn)
        )
    if not prune:
        note = f"would {what} (use --prune)"
        return Step(Action.KEEP_STALE, kind, found.name, note, pending=False)
    return Step(action, kind, found.name, what, change, releases=releases)


def resource_removals(
    desired: DesiredState, current: CurrentState, ledger: Ledger, prune: bool
) -> list[Step]:
    """Delete (or release) the queues and topics that are ours and no longer wanted."""
    account = desired.account
    wanted_topics = {t.name for t in desired.topics}
    wanted_queues = {q.name for q in desired.queues}
    found: list[tuple[ResourceKind, str, CurrentQueue | CurrentTopic]] = [
        (TOPIC, t.arn, t) for t in current.topics.values() if t.name not in wanted_topics
    ]
    found += [
        (QUEUE, account.sqs_arn(q.name), q)
        for q in current.queues.values()
        if q.name not in wanted_queues
    ]
    steps = []
    for kind, arn, resource in found:
        origin = ledger.origin(kind, arn)
        if origin is None and resource.tagged:
            origin = Origin.RECOGNISED
        if origin is not None:
            steps.append(_removal(kind, arn, resource, origin, ledger, prune))
    return steps


def vanished_records(desired: DesiredState, current: CurrentState, ledger: Ledger) -> list[Step]:
    """Forget records of queues, topics and subscriptions someone deleted outside sync (only
    bookkeeping: nothing in AWS changes). Desired ones are simply created again."""
    account = desired.account
    exists = {account.sqs_arn(q) for q in current.queues} | {t.arn for t in current.topics.values()}
    wanted = {q.arn for q in desired.queues} | {t.arn for t in desired.topics}
    steps = []
    for kind, prefix in ((QUEUE, account.sqs_arn("")), (TOPIC, account.sns_arn(""))):
        for arn in ledger.identifiers(kind):
            if arn.startswith(prefix) and arn not in exists and arn not in wanted:
                name = arn[len(prefix) :]
                releases = (Claim(kind, arn), *ledger.owned_parts(arn))
                message = f"forget {LABELS[kind]} {name}: recorded as s3tasks' but gone from AWS"
                steps.append(Step(Action.RECORD, kind, name, message, releases=releases))
    subscribed = {subscription_identifier(s.topic_arn, s.endpoint) for s in current.subscriptions}
    wanted_subs = {subscription_identifier(s.topic_arn, s.endpoint) for s in desired.subscriptions}
    read_topics = {t.arn for t in current.topics.values()}
    for identifier in ledger.identifiers(ResourceKind.SUBSCRIPTION):
        topic_arn = identifier.split("#", 1)[0]
        if topic_arn in read_topics and identifier not in subscribed | wanted_subs:
            message = f"forget subscription {identifier}: recorded as s3tasks' but gone from AWS"
            steps.append(
                Step(
                    Action.RECORD,
                    ResourceKind.SUBSCRIPTION,
                    identifier,
                    message,
                    releases=(Claim(ResourceKind.SUBSCRIPTION, identifier),),
                )
            )
    return steps
