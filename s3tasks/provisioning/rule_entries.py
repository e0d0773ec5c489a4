"""Database rules as S3 filter entries, for the system check that runs before any sync."""

from __future__ import annotations

from collections import defaultdict

from s3tasks.conf import get_settings
from s3tasks.models import NotificationRule
from s3tasks.rules.filters import FilterEntry


def rule_destination(rule, default_queue: str) -> str:
    if rule.topic_id:
        return f"topic {rule.topic.name}"
    return f"queue {rule.queue.name if rule.queue_id else default_queue}"


def rule_filter_entries(bucket: str | None = None) -> dict[str, list[FilterEntry]]:
    """Enabled rules grouped by bucket, as `FilterEntry`s labelled with the rule's name."""

    default_queue = get_settings().DEFAULT_QUEUE
    rules = NotificationRule.objects.filter(enabled=True).select_related("bucket", "topic", "queue")
    if bucket:
        rules = rules.filter(bucket__name=bucket)
    grouped: dict[str, list[FilterEntry]] = defaultdict(list)
    for rule in rules:
        try:
            events = rule.normalized_events
        except ValueError:
            continue
        grouped[rule.bucket.name].append(
            FilterEntry(
                f"rule {rule.pk} '{rule}'",
                events,
                rule.prefix,
                rule.suffix,
                rule_destination(rule, default_queue),
            )
        )
    return grouped
