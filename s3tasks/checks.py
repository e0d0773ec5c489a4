"""System checks (`manage.py check`): settings, loop risks, rules S3 would reject."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from s3tasks.filters import FilterEntry, find_clashes, prefixes_overlap
from s3tasks.registry import default_registry


@checks.register("s3tasks")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.conf import settings

    from s3tasks.conf import build_settings

    try:
        conf = build_settings(getattr(settings, "S3TASKS", None))
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                str(exc),
                hint="Fix the S3TASKS dict in your settings; docs/configuration.md lists "
                "every option and its default.",
                id="s3tasks.E001",
            )
        ]
    messages: list[checks.CheckMessage] = []
    if conf.BATCH_HANDLER and conf.BATCH_HANDLER not in default_registry:
        messages.append(
            checks.Error(
                f'S3TASKS["BATCH_HANDLER"] names {conf.BATCH_HANDLER!r}, which is not a '
                "registered handler.",
                hint="Use the name of a function decorated with @s3_handler/@on_s3_event "
                f"(registered: {', '.join(default_registry.names()) or 'none'}).",
                id="s3tasks.E003",
            )
        )
    return messages


@checks.register("s3tasks")
def check_handler_loops(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A handler that writes where it listens can trigger itself forever (Jets' warning)."""
    messages: list[checks.CheckMessage] = []
    for handler in default_registry:
        for output in handler.writes_to:
            for binding in handler.bindings:
                if binding.bucket == output.bucket and prefixes_overlap(
                    binding.prefix, output.prefix
                ):
                    messages.append(
                        checks.Warning(
                            f"Handler {handler.name} writes to s3://{output.bucket}/"
                            f"{output.prefix} and listens on s3://{binding.bucket}/"
                            f"{binding.prefix}: each write can trigger it again, forever.",
                            hint="Write results to another bucket, or to a prefix that the "
                            "binding's prefix does not cover (e.g. listen on 'incoming/', "
                            "write to 'processed/').",
                            obj=handler.location,
                            id="s3tasks.W001",
                        )
                    )
    return messages


@checks.register("s3tasks")
def check_code_binding_overlaps(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Code bindings that S3 would reject as overlapping (before anyone runs sync)."""
    from s3tasks.conf import get_settings

    try:
        default_queue = get_settings().DEFAULT_QUEUE
    except ImproperlyConfigured:
        return []  # reported by check_settings
    per_bucket: dict[str, list[FilterEntry]] = defaultdict(list)
    for handler in default_registry:
        for b in handler.bindings:
            destination = f"topic {b.topic}" if b.topic else f"queue {b.queue or default_queue}"
            per_bucket[b.bucket].append(
                FilterEntry(handler.name, b.events, b.prefix, b.suffix, destination)
            )
    return [
        checks.Error(
            f"Bucket {bucket!r}: {clash}.",
            hint="Send these handlers to one topic or queue (s3tasks routes each event to "
            "every matching handler), or make their prefixes/suffixes disjoint.",
            id="s3tasks.E002",
        )
        for bucket, entries in sorted(per_bucket.items())
        for clash in find_clashes(entries)
    ]


@checks.register("s3tasks", checks.Tags.database)
def check_rule_overlaps(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Rules in the database that S3 would reject (runs with `check --database default`)."""
    from django.db import DatabaseError

    try:
        return _database_rule_messages()
    except DatabaseError:
        return []  # tables not migrated yet (checks run before `migrate` applies them)


def _database_rule_messages() -> list[checks.CheckMessage]:
    from s3tasks.models import HandlerBinding
    from s3tasks.provisioning.rule_entries import rule_filter_entries

    messages: list[checks.CheckMessage] = [
        checks.Error(
            f"Bucket {bucket!r}: {clash}.",
            hint="Point these rules at one topic or queue, or make their filters disjoint.",
            id="s3tasks.E002",
        )
        for bucket, entries in sorted(rule_filter_entries().items())
        for clash in find_clashes(entries)
    ]
    unknown = (
        HandlerBinding.objects.filter(enabled=True)
        .exclude(handler_name__in=default_registry.names())
        .select_related("rule")
    )
    for binding in list(unknown):
        messages.append(
            checks.Error(
                f"Binding {binding} names handler {binding.handler_name!r}, which no code "
                "registers.",
                hint="Register it with @s3_handler, or disable/delete the binding.",
                obj=binding,
                id="s3tasks.E004",
            )
        )
    return messages
