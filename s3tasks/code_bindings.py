"""Mirror `@on_s3_event` declarations into `NotificationRule`/`HandlerBinding` rows."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from django.db import transaction

from s3tasks.conf import get_settings
from s3tasks.registry import CodeBinding, Handler, HandlerRegistry, default_registry

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class CodeBindingSync:
    created: int
    updated: int
    removed: int


def code_key(handler: Handler, binding: CodeBinding) -> str:
    """A stable id for one declaration: changes when the declaration changes."""
    text = "|".join(
        [
            binding.bucket,
            ",".join(binding.events),
            binding.prefix,
            binding.suffix,
            binding.queue,
            binding.topic,
            binding.celery_queue,
        ]
    )
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    return f"{handler.name[:270]}@{digest}"


def _destination(binding: CodeBinding) -> dict:
    from s3tasks.models import Queue, Topic

    if binding.topic:
        return {"topic": Topic.objects.get_or_create(name=binding.topic)[0], "queue": None}
    queue_name = binding.queue or get_settings().DEFAULT_QUEUE
    return {"queue": Queue.objects.get_or_create(name=queue_name)[0], "topic": None}


@transaction.atomic
def sync_code_bindings(registry: HandlerRegistry | None = None) -> CodeBindingSync:
    """Create/update rows for every code declaration; delete rows whose declaration is gone."""
    from s3tasks.models import Bucket, HandlerBinding, NotificationRule

    registry = registry if registry is not None else default_registry
    created = updated = 0
    seen: set[str] = set()
    for handler in registry:
        for binding in handler.bindings:
            key = code_key(handler, binding)
            seen.add(key)
            bucket, _ = Bucket.objects.get_or_create(name=binding.bucket)
            values = {
                "name": f"{handler.name} on {binding.bucket}",
                "bucket": bucket,
                "events": [f"s3:{e}" for e in binding.events],
                "prefix": binding.prefix,
                "suffix": binding.suffix,
                "declared_in_code": True,
                "code_location": handler.location,
                **_destination(binding),
            }
            rule, was_created = NotificationRule.objects.get_or_create(
                code_key=key, defaults=values
            )
            if not was_created and _differs(rule, values):
                for field, value in values.items():
                    setattr(rule, field, value)
                rule.save()
                updated += 1
            created += was_created
            HandlerBinding.objects.update_or_create(
                rule=rule,
                handler_name=handler.name,
                defaults={
                    "celery_queue": binding.celery_queue,
                    "access": handler.access,
                    "declared_in_code": True,
                },
            )
    stale = NotificationRule.objects.filter(declared_in_code=True).exclude(code_key__in=seen)
    removed = stale.count()
    if removed:
        logger.info("s3tasks: removing %d code-declared rule(s) no longer in code", removed)
        stale.delete()
    return CodeBindingSync(created=created, updated=updated, removed=removed)


def _differs(rule, values: dict) -> bool:
    return any(getattr(rule, field) != value for field, value in values.items())
