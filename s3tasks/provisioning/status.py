"""Write what sync did onto the configuration rows: ARNs/URLs, `created_by_s3tasks`, sync
status/error, and the edits it applied taken off `pending_changes` (what s3tasks owns is
recorded separately, by `ledger`)."""

from __future__ import annotations

from typing import Any

from django.db import models, transaction
from django.db.models.functions import Greatest
from django.utils import timezone

from s3tasks.models import Bucket, Queue, Subscription, Topic
from s3tasks.models.config import SyncStatus
from s3tasks.provisioning.apply import ApplyResult
from s3tasks.provisioning.ownership import ResourceKind
from s3tasks.provisioning.steps import Plan


def _status_of(kind: ResourceKind, name: str, plan: Plan, result: ApplyResult) -> tuple[str, str]:

    failed = result.failed_step
    if failed is not None and failed.resource_type == kind and failed.resource == name:
        return SyncStatus.FAILED, result.error
    done = {id(s) for s in result.applied}
    if any(
        s.resource_type == kind and s.resource == name and id(s) not in done for s in plan.changes
    ):
        return SyncStatus.PENDING, ""
    return SyncStatus.OK, ""


SYNCED_MODELS: tuple[tuple[ResourceKind, Any], ...] = (
    (ResourceKind.BUCKET, Bucket),
    (ResourceKind.QUEUE, Queue),
    (ResourceKind.TOPIC, Topic),
)


def pending_changes_now() -> dict[tuple[ResourceKind, str], int]:
    """Every bucket's, queue's and topic's `pending_changes` above zero, read before planning
    so that a sync takes off only the edits its plan could have included."""
    return {
        (kind, name): count
        for kind, model in SYNCED_MODELS
        for name, count in model.objects.filter(pending_changes__gt=0).values_list(
            "name", "pending_changes"
        )
    }


def _update(queryset: Any, **values: Any) -> None:
    # Sync status does not change routing: skip ConfigQuerySet.update()'s rules-version bump.
    models.QuerySet.update(queryset, **values)


def _record(
    model: Any, kind: ResourceKind, names: list[str], plan: Plan, result: ApplyResult
) -> None:
    now = timezone.now()
    for name in names:
        status, error = _status_of(kind, name, plan, result)
        values: dict[str, Any] = {
            "last_sync_status": status,
            "last_sync_error": error,
            "last_synced_at": now,
        }
        seen = plan.pending_seen.get((kind, name), 0)
        if status == SyncStatus.OK and seen:
            # Edits made since planning began are not in this plan: they stay pending.
            values["pending_changes"] = Greatest(
                models.F("pending_changes") - seen, models.Value(0)
            )
        created = result.created.get((kind, name))
        if created:
            values["created_by_s3tasks"] = True
        if kind is ResourceKind.QUEUE:
            values["arn"] = plan.desired.account.sqs_arn(name)
            url = created or plan.queue_urls.get(name)
            if url:
                values["url"] = url
        elif kind is ResourceKind.TOPIC:
            values["arn"] = plan.desired.account.sns_arn(name)
        else:
            values["arn"] = plan.desired.account.bucket_arn(name)
        _update(model.objects.filter(name=name), **values)


def _record_subscriptions(plan: Plan, result: ApplyResult) -> None:
    """The ARN of every subscription apply made, updated or adopted."""
    desired = plan.desired
    names = {q.arn: q.name for q in desired.queues} | {t.arn: t.name for t in desired.topics}
    for (topic_arn, endpoint), arn in result.subscriptions.items():
        rows = Subscription.objects.filter(topic__name=names[topic_arn])
        if endpoint in names:
            rows = rows.filter(queue__name=names[endpoint])
        else:  # an HTTP(S) endpoint's URL
            rows = rows.filter(endpoint=endpoint)
        _update(rows, arn=arn)


@transaction.atomic
def record_result(plan: Plan, result: ApplyResult) -> None:
    """Record the outcome of `apply_plan` on every Bucket/Queue/Topic row in the plan's scope."""

    desired = plan.desired
    _record(Bucket, ResourceKind.BUCKET, [b.name for b in desired.buckets], plan, result)
    _record(Queue, ResourceKind.QUEUE, [q.name for q in desired.queues], plan, result)
    _record(Topic, ResourceKind.TOPIC, [t.name for t in desired.topics], plan, result)
    _record_subscriptions(plan, result)
