"""Execute a plan's pending steps through boto3 clients, and record the outcome on the models.

Bucket notifications and resource policies are written read → merge → write at apply time
(not from the plan's snapshot), so an entry or statement someone else added between plan and
apply is still preserved. Ownership records are written around each step (`_run`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from s3tasks.exceptions import ProvisioningError, S3TasksError
from s3tasks.provisioning.notifications import merge_configuration
from s3tasks.provisioning.ownership import LedgerWriter, MemoryLedger
from s3tasks.provisioning.policies import merge_policy
from s3tasks.provisioning.steps import Action, Plan, Step

logger = logging.getLogger(__name__)


@dataclass
class ApplyResult:
    """What apply did: the steps done, the created resources, and the failure if any."""

    applied: list[Step] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)  # "queue:name" → url/arn
    subscriptions: dict[tuple[str, str], str] = field(default_factory=dict)  # (topic, queue)
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


def _put_notifications(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    s3 = clients["s3"]
    bucket = step.params["bucket"]
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    merged = merge_configuration(
        current,
        step.params["entries"],
        owned_ids=set(step.params["owned_ids"]),
        prune=step.params["prune"],
        eventbridge=step.params["eventbridge"],
    )
    s3.put_bucket_notification_configuration(Bucket=bucket, NotificationConfiguration=merged)


def _create_bucket(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    s3 = clients["s3"]
    kwargs: dict[str, Any] = {"Bucket": step.params["bucket"]}
    region = s3.meta.region_name
    if region and region != "us-east-1":
        kwargs["CreateBucketConfiguration"] = {"LocationConstraint": region}
    s3.create_bucket(**kwargs)
    result.created[f"bucket:{step.params['bucket']}"] = f"arn:aws:s3:::{step.params['bucket']}"


def _create_queue(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    url = clients["sqs"].create_queue(
        QueueName=step.params["name"],
        Attributes=step.params["attributes"],
        tags=step.params["tags"],
    )["QueueUrl"]
    result.created[f"queue:{step.params['name']}"] = url


def _merged_policy(current: str | None, step: Step) -> dict[str, str]:
    """The Policy attribute to set, merged by Sid against the policy as it is *now*."""
    if not step.params["statements"] and not step.params["remove_sids"]:
        return {}
    return {"Policy": merge_policy(current, step.params["statements"], step.params["remove_sids"])}


def _update_queue(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    # create_queue with other attributes fails on an existing queue: set them instead.
    sqs, url = clients["sqs"], step.params["url"]
    attributes = dict(step.params["attributes"])
    read = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["Policy"])
    current = read.get("Attributes", {}).get("Policy")
    policy = _merged_policy(current, step)
    if not attributes and not policy:
        return
    if not policy and current:
        # moto (the local emulator) drops a queue's policy on any SetQueueAttributes call
        # without one; sending it back as read keeps it there and changes nothing on AWS.
        policy = {"Policy": current}
    sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes | policy)


def _set_topic_policy(sns: Any, arn: str, step: Step) -> None:
    current = sns.get_topic_attributes(TopicArn=arn)["Attributes"].get("Policy")
    policy = _merged_policy(current, step).get("Policy")
    if policy:  # SNS cannot hold an empty policy; a topic always keeps its default one
        sns.set_topic_attributes(TopicArn=arn, AttributeName="Policy", AttributeValue=policy)


def _create_topic(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    tags = [{"Key": k, "Value": v} for k, v in step.params["tags"].items()]
    arn = clients["sns"].create_topic(Name=step.params["name"], Tags=tags)["TopicArn"]
    result.created[f"topic:{step.params['name']}"] = arn
    if step.params["statements"]:
        _set_topic_policy(clients["sns"], arn, step)


def _update_topic(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    if step.params["statements"] or step.params["remove_sids"]:
        _set_topic_policy(clients["sns"], step.params["arn"], step)


def _subscribe(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    arn = clients["sns"].subscribe(
        TopicArn=step.params["topic_arn"],
        Protocol="sqs",
        Endpoint=step.params["queue_arn"],
        Attributes=step.params["attributes"],
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    result.subscriptions[(step.params["topic"], step.params["queue"])] = arn


def _update_subscription(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    for name, value in step.params["attributes"].items():
        clients["sns"].set_subscription_attributes(
            SubscriptionArn=step.params["arn"], AttributeName=name, AttributeValue=value
        )


def _put_cors(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    clients["s3"].put_bucket_cors(
        Bucket=step.params["bucket"], CORSConfiguration={"CORSRules": step.params["rules"]}
    )


def _unsubscribe(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    clients["sns"].unsubscribe(SubscriptionArn=step.params["arn"])


def _delete_topic(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    clients["sns"].delete_topic(TopicArn=step.params["arn"])


def _delete_queue(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    clients["sqs"].delete_queue(QueueUrl=step.params["url"])


def _nothing_in_aws(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    """Records and releases only (the ledger writes happen around every step)."""


ACTIONS: dict[Action, Callable[[dict[str, Any], Step, ApplyResult], None]] = {
    Action.CREATE_BUCKET: _create_bucket,
    Action.CREATE_QUEUE: _create_queue,
    Action.UPDATE_QUEUE: _update_queue,
    Action.ADOPT_QUEUE: _update_queue,
    Action.RELEASE_QUEUE: _update_queue,
    Action.CREATE_TOPIC: _create_topic,
    Action.UPDATE_TOPIC: _update_topic,
    Action.ADOPT_TOPIC: _update_topic,
    Action.RELEASE_TOPIC: _update_topic,
    Action.SUBSCRIBE: _subscribe,
    Action.UPDATE_SUBSCRIPTION: _update_subscription,
    Action.ADOPT_SUBSCRIPTION: _update_subscription,
    Action.RELEASE_SUBSCRIPTION: _nothing_in_aws,
    Action.PUT_NOTIFICATIONS: _put_notifications,
    Action.PUT_CORS: _put_cors,
    Action.UNSUBSCRIBE: _unsubscribe,
    Action.DELETE_TOPIC: _delete_topic,
    Action.DELETE_QUEUE: _delete_queue,
    Action.RECORD: _nothing_in_aws,
}


def _run(step: Step, clients: dict[str, Any], result: ApplyResult, ledger: LedgerWriter) -> None:
    """One step between its ownership writes: claims before the AWS call (so nothing we make
    is ever unrecorded), undone if AWS refused it; releases after it succeeded."""
    from botocore.exceptions import ClientError

    region = result.region
    new = ledger.claim(step.claims, region) if step.claims else []
    try:
        ACTIONS[step.action](clients, step, result)
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
