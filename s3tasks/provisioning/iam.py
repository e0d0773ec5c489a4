"""Least-privilege IAM policies (pure): one for the worker/Lambda role, one for the operator
who runs `sync_notifications`.

The worker may only consume the queues S3 events arrive in, read/write the objects its
handlers declared (per binding: `read`, `write`, `readwrite` on the bucket and prefix), and
publish follow-up commands to the given targets.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from s3tasks.provisioning.desired import DesiredState
from s3tasks.provisioning.model_rows import BindingRow

CONSUME_ACTIONS = [
    "sqs:ChangeMessageVisibility",
    "sqs:DeleteMessage",
    "sqs:GetQueueAttributes",
    "sqs:GetQueueUrl",
    "sqs:ReceiveMessage",
]
ACCESS_ACTIONS = {
    "read": ["s3:GetObject"],
    "write": ["s3:PutObject"],
    "readwrite": ["s3:GetObject", "s3:PutObject"],
}


def _policy(statements: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Version": "2012-10-17", "Statement": [s for s in statements if s["Resource"]]}


def _object_statements(bindings: Iterable[BindingRow], partition: str) -> list[dict[str, Any]]:
    resources: dict[str, set[str]] = defaultdict(set)
    for b in bindings:
        for action in ACCESS_ACTIONS.get(b.access, ACCESS_ACTIONS["read"]):
            resources[action].add(f"arn:{partition}:s3:::{b.bucket}/{b.prefix}*")
    return [
        {
            "Sid": "S3tasks" + action.split(":")[1],
            "Effect": "Allow",
            "Action": action,
            "Resource": sorted(arns),
        }
        for action, arns in sorted(resources.items())
    ]


def _dead_letter_arns(desired: DesiredState) -> set[str]:
    return {
        json.loads(q.attributes["RedrivePolicy"])["deadLetterTargetArn"]
        for q in desired.queues
        if "RedrivePolicy" in q.attributes
    }


def _consumed_queue_arns(desired: DesiredState) -> list[str]:
    dlqs = _dead_letter_arns(desired)
    return sorted(q.arn for q in desired.queues if q.arn not in dlqs and not q.is_implicit_dlq)


def worker_policy(
    desired: DesiredState, bindings: Iterable[BindingRow], publish_targets: Iterable[str] = ()
) -> dict[str, Any]:
    """The policy a worker or Lambda role needs: consume queues, touch objects, publish."""
    targets = sorted(set(publish_targets))
    statements = [
        {
            "Sid": "S3tasksConsumeQueues",
            "Effect": "Allow",
            "Action": CONSUME_ACTIONS,
            "Resource": _consumed_queue_arns(desired),
        },
        {
            # the worker's queue-depth gauges (`--metrics-port`) read the dead-letter queues
            "Sid": "S3tasksWatchDeadLetterQueues",
            "Effect": "Allow",
            "Action": ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
            "Resource": sorted(_dead_letter_arns(desired)),
        },
        *_object_statements(bindings, desired.account.partition),
        {
            "Sid": "S3tasksPublishTopics",
            "Effect": "Allow",
            "Action": "sns:Publish",
            "Resource": [t for t in targets if ":sns:" in t],
        },
        {
            "Sid": "S3tasksSendQueues",
            "Effect": "Allow",
            "Action": "sqs:SendMessage",
            "Resource": [t for t in targets if ":sqs:" in t],
        },
    ]
    return _policy(statements)


def operator_policy(desired: DesiredState) -> dict[str, Any]:
    """The policy whoever runs `sync_notifications` needs (nothing that deletes a bucket)."""
    buckets = sorted(b.arn for b in desired.buckets)
    queues = sorted(q.arn for q in desired.queues)
    topics = sorted(t.arn for t in desired.topics)
    return _policy(
        [
            {
                "Sid": "S3tasksSyncBuckets",
                "Effect": "Allow",
                "Action": [
                    "s3:CreateBucket",
                    "s3:GetBucketCORS",
                    "s3:GetBucketNotification",
                    "s3:ListBucket",
                    "s3:PutBucketCORS",
                    "s3:PutBucketNotification",
                ],
                "Resource": buckets,
            },
            {
                "Sid": "S3tasksSyncQueues",
                "Effect": "Allow",
                "Action": [
                    "sqs:CreateQueue",
                    "sqs:DeleteQueue",
                    "sqs:GetQueueAttributes",
                    "sqs:GetQueueUrl",
                    "sqs:ListQueueTags",
                    "sqs:SetQueueAttributes",
                    "sqs:TagQueue",
                ],
                "Resource": queues,
            },
            {
                # `s3tasks_redrive` and the admin's redrive action: dead-letter queues back
                # to their sources (StartMessageMoveTask on AWS, else receive/send/delete)
                "Sid": "S3tasksRedriveQueues",
                "Effect": "Allow",
                "Action": [
                    "sqs:ChangeMessageVisibility",
                    "sqs:DeleteMessage",
                    "sqs:ListDeadLetterSourceQueues",
                    "sqs:ListMessageMoveTasks",
                    "sqs:ReceiveMessage",
                    "sqs:SendMessage",
                    "sqs:StartMessageMoveTask",
                ],
                "Resource": queues,
            },
            {
                "Sid": "S3tasksSyncTopics",
                "Effect": "Allow",
                "Action": [
                    "sns:CreateTopic",
                    "sns:DeleteTopic",
                    "sns:GetSubscriptionAttributes",
                    "sns:GetTopicAttributes",
                    "sns:ListSubscriptionsByTopic",
                    "sns:ListTagsForResource",
                    "sns:SetSubscriptionAttributes",
                    "sns:SetTopicAttributes",
                    "sns:Subscribe",
                    "sns:TagResource",
                    "sns:Unsubscribe",
                ],
                "Resource": topics + [f"{t}:*" for t in topics],
            },
            {
                "Sid": "S3tasksSyncList",
                "Effect": "Allow",
                "Action": ["sns:ListTopics", "sqs:ListQueues"],
                "Resource": ["*"],
            },
        ]
    )
