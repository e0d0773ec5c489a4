"""Execute a plan's pending steps through boto3 clients, and record the outcome on the models.

Bucket notifications and resource policies are written read → merge → write at apply time
(not from the plan's snapshot), so an entry or statement someone else added between plan and
apply is still preserved. Ownership records are written around each step (`_run`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, assert_never

from s3tasks.exceptions import ProvisioningError, S3TasksError
from s3tasks.provisioning.notifications import merge_configuration
from s3tasks.provisioning.ownership import LedgerWriter, MemoryLedger, ResourceKind
from s3tasks.provisioning.policies import merge_policy
from s3tasks.provisioning.steps import (
    AwsChange,
    CreateBucket,
    CreateQueue,
    CreateTopic,
    DeleteQueue,
    DeleteTopic,
    Plan,
    PutCors,
    PutNotifications,
    Step,
    Subscribe,
    Unsubscribe,
    UpdateQueue,
    UpdateSubscription,
    UpdateTopic,
)

logger = logging.getLogger(__name__)

Clients = dict[str, Any]  # "s3", "sqs", "sns" → boto3 client


@dataclass
class ApplyResult:
    """What apply did: the steps done, the created resources, and the failure if any."""

    applied: list[Step] = field(default_factory=list)
    created: dict[tuple[ResourceKind, str], str] = field(default_factory=dict)  # → url/arn
    # (topic ARN, queue ARN or URL) → subscription ARN, for each subscription made or updated
    subscriptions: dict[tuple[str, str], str] = field(default_factory=dict)
    failed_step: Step | None = None
    error: str = ""
    region: str = ""

    @property
    def ok(self) -> bool:
        return self.failed_step is None


def explain_aws_error(exc: Exception, what: str) -> ProvisioningError:
    """A botocore error as a `ProvisioningError` saying what failed and what to check."""
    response = getattr(exc, "response", {}) or {}
    code = response.get("Error", {}).get("Code", type(exc).__name__)
    message = response.get("Error", {}).get("Message", str(exc))
    hint = ""
    if "Unable to validate the following destination configurations" in message:
        hint = (
            " S3 sends a test message to every destination and could not deliver it: check "
            "that the queue/topic exists in the bucket's region and that its policy allows "
            "s3.amazonaws.com (sync writes that policy; run it without --bucket, or look for "
            "a foreign entry pointing at a deleted destination)."
        )
    elif code in ("AccessDenied", "AccessDeniedException", "AuthorizationError"):
        hint = (
            " The credentials lack a permission; `sync_notifications --print-iam-policy` "
            "prints the operator policy sync needs."
        )
    return ProvisioningError(f"{what}: AWS said {code}: {message}.{hint}")


def _put_notifications(clients: Clients, change: PutNotifications, result: ApplyResult) -> None:
    s3 = clients["s3"]
    current = s3.get_bucket_notification_configuration(Bucket=change.bucket)
    current.pop("ResponseMetadata", None)
    merged = merge_configuration(
        current,
        change.entries,
        owned_ids=set(change.owned_ids),
        prune=change.prune,
        eventbridge=change.eventbridge,
    )
    s3.put_bucket_notification_configuration(Bucket=change.bucket, NotificationConfiguration=merged)


def _create_bucket(clients: Clients, change: CreateBucket, result: ApplyResult) -> None:
    s3 = clients["s3"]
    kwargs: dict[str, Any] = {"Bucket": change.bucket}
    region = s3.meta.region_name
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)
    result.created[(ResourceKind.BUCKET, change.bucket)] = f"arn:aws:s3:::{change.bucket}"


def _create_queue(clients: Clients, change: CreateQueue, result: ApplyResult) -> None:
    url = clients["sqs"].create_queue(
        QueueName=change.name, Attributes=change.attributes, tags=change.tags
    )["QueueUrl"]
    result.created[(ResourceKind.QUEUE, change.name)] = url


def _merged_policy(
    current: str | None, statements: Sequence[dict[str, Any]], remove_sids: Sequence[str]
) -> dict[str, str]:
    """The Policy attribute to set, merged by Sid against the policy as it is *now*."""
    if not statements and not remove_sids:
        return {}
    return {"Policy": merge_policy(current, statements, remove_sids)}


def _update_queue(clients: Clients, change: UpdateQueue, result: ApplyResult) -> None:
    # create_queue with other attributes fails on an existing queue: set them instead.
    sqs = clients["sqs"]
    read = sqs.get_queue_attributes(QueueUrl=change.url, AttributeNames=["Policy"])
    current = read.get("Attributes", {}).get("Policy")
    policy = _merged_policy(current, change.statements, change.remove_sids)
    if not change.attributes and not policy:
        return
    if not policy and current:
        # moto (the local emulator) drops a queue's policy on any SetQueueAttributes call
        # without one; sending it back as read keeps it there and changes nothing on AWS.
        policy = {"Policy": current}
    sqs.set_queue_attributes(QueueUrl=change.url, Attributes=change.attributes | policy)


def _set_topic_policy(
    sns: Any, arn: str, statements: Sequence[dict[str, Any]], remove_sids: Sequence[str]
) -> None:
    current = sns.get_topic_attributes(TopicArn=arn)["Attributes"].get("Policy")
    policy = _merged_policy(current, statements, remove_sids).get("Policy")
    if policy:  # SNS cannot hold an empty policy; a topic always keeps its default one
        sns.set_topic_attributes(TopicArn=arn, AttributeName="Policy", AttributeValue=policy)


def _create_topic(clients: Clients, change: CreateTopic, result: ApplyResult) -> None:
    tags = [{"Key": k, "Value": v} for k, v in change.tags.items()]
    arn = clients["sns"].create_topic(Name=change.name, Tags=tags)["TopicArn"]
    result.created[(ResourceKind.TOPIC, change.name)] = arn
    if change.statements:
        _set_topic_policy(clients["sns"], arn, change.statements, ())


def _update_topic(clients: Clients, change: UpdateTopic, result: ApplyResult) -> None:
    if change.statements or change.remove_sids:
        _set_topic_policy(clients["sns"], change.arn, change.statements, change.remove_sids)


def _subscribe(clients: Clients, change: Subscribe, result: ApplyResult) -> None:
    arn = clients["sns"].subscribe(
        TopicArn=change.topic_arn,
        Protocol=change.protocol,
        Endpoint=change.endpoint,
        Attributes=change.attributes,
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    result.subscriptions[(change.topic_arn, change.endpoint)] = arn


def _update_subscription(clients: Clients, change: UpdateSubscription, result: ApplyResult) -> None:
    for name, value in change.attributes.items():
        clients["sns"].set_subscription_attributes(
            SubscriptionArn=change.arn, AttributeName=name, AttributeValue=value
        )
    result.subscriptions[(change.topic_arn, change.endpoint)] = change.arn


def _call_aws(clients: Clients, change: AwsChange, result: ApplyResult) -> None:
    """The boto3 calls of one change (one function per type of change)."""
    match change:
        case CreateBucket():
            _create_bucket(clients, change, result)
        case PutNotifications():
            _put_notifications(clients, change, result)
        case PutCors():
            clients["s3"].put_bucket_cors(
                Bucket=change.bucket, CORSConfiguration={"CORSRules": list(change.rules)}
            )
        case CreateQueue():
            _create_queue(clients, change, result)
        case UpdateQueue():
            _update_queue(clients, change, result)
        case DeleteQueue():
            clients["sqs"].delete_queue(QueueUrl=change.url)
        case CreateTopic():
            _create_topic(clients, change, result)
        case UpdateTopic():
            _update_topic(clients, change, result)
        case DeleteTopic():
            clients["sns"].delete_topic(TopicArn=change.arn)
        case Subscribe():
            _subscribe(clients, change, result)
        case UpdateSubscription():
            _update_subscription(clients, change, result)
        case Unsubscribe():
            clients["sns"].unsubscribe(SubscriptionArn=change.arn)
        case _:
            assert_never(change)


def _run(step: Step, clients: dict[str, Any], result: ApplyResult, ledger: LedgerWriter) -> None:
    """One step between its ownership writes: claims before the AWS call (so nothing we make
    is ever unrecorded), undone if AWS refused it; releases after it succeeded."""
    from botocore.exceptions import ClientError

    region = result.region
    new = ledger.claim(step.claims, region) if step.claims else []
    try:
        if step.change is not None:  # None: only ownership records change
            _call_aws(clients, step.change, result)
    except ClientError:
        if new:
            ledger.release(new)
        raise
    if step.releases:
        ledger.release(step.releases)


def execute(plan: Plan, clients: dict[str, Any], ledger: LedgerWriter | None = None) -> ApplyResult:
    """Run the pending steps in order; stop at the first failure (later steps depend on
    earlier ones) and report it in the result instead of raising. A blocked plan (foreign
    resources the models need) runs nothing."""
    from botocore.exceptions import BotoCoreError, ClientError

    result = ApplyResult(region=plan.desired.account.region)
    ledger = ledger or MemoryLedger()
    if plan.blocked:
        result.failed_step, result.error = plan.foreign[0], blocked_message(plan)
        return result
    for step in plan.changes:
        try:
            _run(step, clients, result, ledger)
        except (ClientError, BotoCoreError) as exc:
            error = explain_aws_error(exc, step.message)
            logger.warning("s3tasks sync: %s", error)
            result.failed_step, result.error = step, str(error)
            return result
        except S3TasksError as exc:
            result.failed_step, result.error = step, str(exc)
            return result
        result.applied.append(step)
    return result


def blocked_message(plan: Plan) -> str:
    """What blocks a plan and how to proceed (for the command, the admin and `execute`)."""
    names = ", ".join(f"{s.resource_type} {s.resource}" for s in plan.foreign)
    return (
        f"Nothing was changed: {len(plan.foreign)} resource(s) the models need exist in AWS "
        f"but were not made by s3tasks ({names}). Run `manage.py sync_notifications --adopt` "
        "to adopt them (sync then manages only what the models set and s3tasks' own policy "
        "statements and entries; everything else on them is kept), or change the models so "
        "they no longer need them."
    )
