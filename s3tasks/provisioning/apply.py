"""Execute a plan's pending steps through boto3 clients, and record the outcome on the models.

Bucket notifications are written read → merge → write at apply time (not from the plan's
snapshot), so an entry someone else added between plan and apply is still preserved.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from s3tasks.exceptions import ProvisioningError, S3TasksError
from s3tasks.provisioning.notifications import NotificationEntry, merge_configuration
from s3tasks.provisioning.plan import Plan, Step

logger = logging.getLogger(__name__)


@dataclass
class ApplyResult:
    """What apply did: the steps done, the created resources, and the failure if any."""

    applied: list[Step] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)  # "queue:name" → url/arn
    failed_step: Step | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return self.failed_step is None


def explain_aws_error(exc: Exception, step: Step) -> ProvisioningError:
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
    return ProvisioningError(f"{step.message}: AWS said {code}: {message}.{hint}")


def _entries(step: Step) -> list[NotificationEntry]:
    result = []
    for e in step.params["entries"]:
        rules = {
            r["Name"]: r["Value"] for r in e.get("Filter", {}).get("Key", {}).get("FilterRules", [])
        }
        arn = e.get("QueueArn") or e.get("TopicArn")
        result.append(
            NotificationEntry(
                e["Id"],
                e["kind"],
                arn,
                tuple(e["Events"]),
                rules.get("prefix", ""),
                rules.get("suffix", ""),
            )
        )
    return result


def _put_notifications(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    s3 = clients["s3"]
    bucket = step.params["bucket"]
    current = s3.get_bucket_notification_configuration(Bucket=bucket)
    current.pop("ResponseMetadata", None)
    merged = merge_configuration(
        current, _entries(step), prune=step.params["prune"], eventbridge=step.params["eventbridge"]
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


def _update_queue(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    # create_queue with other attributes fails on an existing queue: set them instead.
    clients["sqs"].set_queue_attributes(
        QueueUrl=step.params["url"], Attributes=step.params["attributes"]
    )


def _create_topic(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    tags = [{"Key": k, "Value": v} for k, v in step.params["tags"].items()]
    arn = clients["sns"].create_topic(Name=step.params["name"], Tags=tags)["TopicArn"]
    for name, value in step.params["attributes"].items():
        clients["sns"].set_topic_attributes(TopicArn=arn, AttributeName=name, AttributeValue=value)
    result.created[f"topic:{step.params['name']}"] = arn


def _update_topic(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    for name, value in step.params["attributes"].items():
        clients["sns"].set_topic_attributes(
            TopicArn=step.params["arn"], AttributeName=name, AttributeValue=value
        )


def _subscribe(clients: dict[str, Any], step: Step, result: ApplyResult) -> None:
    arn = clients["sns"].subscribe(
        TopicArn=step.params["topic_arn"],
        Protocol="sqs",
        Endpoint=step.params["queue_arn"],
        Attributes=step.params["attributes"],
        ReturnSubscriptionArn=True,
    )["SubscriptionArn"]
    result.created[f"subscription:{step.resource}"] = arn


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


ACTIONS: dict[str, Callable[[dict[str, Any], Step, ApplyResult], None]] = {
    "create_bucket": _create_bucket,
    "create_queue": _create_queue,
    "update_queue": _update_queue,
    "create_topic": _create_topic,
    "update_topic": _update_topic,
    "subscribe": _subscribe,
    "update_subscription": _update_subscription,
    "put_notifications": _put_notifications,
    "put_cors": _put_cors,
    "unsubscribe": _unsubscribe,
    "delete_topic": _delete_topic,
    "delete_queue": _delete_queue,
}


def execute(plan: Plan, clients: dict[str, Any]) -> ApplyResult:
    """Run the pending steps in order; stop at the first failure (later steps depend on
    earlier ones) and report it in the result instead of raising."""
    from botocore.exceptions import BotoCoreError, ClientError

    result = ApplyResult()
    for step in plan.changes:
        try:
            ACTIONS[step.action](clients, step, result)
        except (ClientError, BotoCoreError) as exc:
            error = explain_aws_error(exc, step)
            logger.warning("s3tasks sync: %s", error)
            result.failed_step, result.error = step, str(error)
            return result
        except S3TasksError as exc:
            result.failed_step, result.error = step, str(exc)
            return result
        result.applied.append(step)
    return result
