"""Write what sync did onto the configuration rows: ARNs/URLs, `created_by_s3tasks`, sync
status/error (what s3tasks owns is recorded separately, by `ledger`)."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.utils import timezone

from s3tasks.models import Bucket, Queue, Subscription, Topic
from s3tasks.models.config import SyncStatus
from s3tasks.provisioning.apply import ApplyResult
from s3tasks.provisioning.steps import Action, Plan

MODEL_KINDS = ("bucket", "queue", "topic")


def _status_of(kind: str, name: str, plan: Plan, result: ApplyResult) -> tuple[str, str]:

    failed = result.failed_step
    if failed is not None and failed.resource_type == kind and failed.resource == name:
        return SyncStatus.FAILED, result.error
    done = {id(s) for s in result.applied}
    if any(
        s.resource_type == kind and s.resource == name and id(s) not in done for s in plan.changes
    ):
        return SyncStatus.PENDING, ""
    return SyncStatus.OK, ""


def _update(queryset: Any, **values: Any) -> None:
    # Sync status does not change routing: skip ConfigQuerySet.update()'s rules-version bump.
    models.QuerySet.update(queryset, **values)


def _record(model: Any, kind: str, names: list[str], plan: Plan, result: ApplyResult) -> None:
    now = timezone.now()
    for name in names:
        status, error = _status_of(kind, name, plan, result)
        values: dict[str, Any] = {
            "last_sync_status": status,
            "last_sync_error": error,
            "last_synced_at": now,
        }
        created = result.created.get(f"{kind}:{name}")
        if created:
            values["created_by_s3tasks"] = True
        if kind == "queue":
            values["arn"] = plan.desired.account.sqs_arn(name)
            url = created or plan.queue_urls.get(name)
            if url:
                values["url"] = url
        elif kind == "topic":
            values["arn"] = plan.desired.account.sns_arn(name)
        else:
            values["arn"] = plan.desired.account.bucket_arn(name)
        _update(model.objects.filter(name=name), **values)


def _record_subscriptions(plan: Plan, result: ApplyResult) -> None:

    for step in result.applied:
        if step.action not in (
            Action.SUBSCRIBE,
            Action.UPDATE_SUBSCRIPTION,
            Action.ADOPT_SUBSCRIPTION,
        ):
            continue
        topic, queue = step.params["topic"], step.params["queue"]
        arn = result.subscriptions.get((topic, queue)) or step.params.get("arn", "")
        _update(Subscription.objects.filter(topic__name=topic, queue__name=queue), arn=arn)


@transaction.atomic
def record_result(plan: Plan, result: ApplyResult) -> None:
    """Record the outcome of `apply_plan` on every Bucket/Queue/Topic row in the plan's scope."""

    desired = plan.desired
    _record(Bucket, "bucket", [b.name for b in desired.buckets], plan, result)
    _record(Queue, "queue", [q.name for q in desired.queues], plan, result)
    _record(Topic, "topic", [t.name for t in desired.topics], plan, result)
    _record_subscriptions(plan, result)
