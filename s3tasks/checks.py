"""System checks (`manage.py check`): settings, loop risks, rules S3 would reject."""

from __future__ import annotations

import sys
from collections import defaultdict
from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from s3tasks.conf import build_settings, get_settings
from s3tasks.models import HandlerBinding, HandlerRun, NotificationRule, Queue
from s3tasks.ops.cleanup import describe_age, retention_floor
from s3tasks.provisioning.rule_entries import rule_filter_entries
from s3tasks.rules.filters import FilterEntry, find_clashes, prefixes_overlap
from s3tasks.rules.registry import default_registry


@checks.register("s3tasks")
def check_settings(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    from django.conf import settings

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


def rules_database() -> str:
    """The database the rules are read from (settings only: no query)."""
    from django.db import router

    return router.db_for_read(NotificationRule)


@checks.register("s3tasks", checks.Tags.database)
def check_rule_overlaps(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Rules in the database that S3 would reject, and bindings to unknown handlers.

    Like Django's own database checks it queries only when asked to check the database the
    rules live in (`check --database default`, `migrate`, a starting `sqs_worker`); commands
    that pass no `databases` get no query.
    """
    from django.db import DatabaseError

    if not databases or rules_database() not in databases:
        return []
    try:
        return _database_rule_messages()
    except DatabaseError:
        return []  # tables not migrated yet (checks run before `migrate` applies them)


def _database_rule_messages() -> list[checks.CheckMessage]:

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
        # A warning, not an error: during a rolling deploy the binding may be a newer
        # release's, and this process must keep running (it leaves those events to others).
        messages.append(
            checks.Warning(
                f"Binding {binding} names handler {binding.handler_name!r}, which this code "
                "does not register: its events are left for processes that do.",
                hint="Expected while another release rolls out. Otherwise register it with "
                "@s3_handler/@on_s3_event, or disable/delete the binding (code rules: run "
                "`manage.py s3tasks_bindings`).",
                obj=binding,
                id="s3tasks.W004",
            )
        )
    return messages


@checks.register("s3tasks", checks.Tags.database)
def check_history_retention(
    app_configs: Any = None, databases: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """History kept for less time than SQS keeps messages: a message redelivered after its
    event's row was deleted would run the event's handlers again.

    Reads the `Queue` rows, so, like `check_rule_overlaps`, only when asked to check the
    database they live in.
    """
    from django.db import DatabaseError, router

    try:
        retention = get_settings().HISTORY_RETENTION
    except ImproperlyConfigured:
        return []  # E001 reports it
    if retention is None or not databases or router.db_for_read(Queue) not in databases:
        return []
    try:
        floor = retention_floor()
    except DatabaseError:
        return []  # tables not migrated yet
    if floor is None or retention >= floor.retention:
        return []
    return [
        checks.Error(
            f'S3TASKS["HISTORY_RETENTION"] is {describe_age(retention)}, shorter than the '
            f"{describe_age(floor.retention)} SQS keeps messages in queue {floor.queue_name!r}: "
            "an event's record could be deleted while SQS may still redeliver it, and its "
            "handlers would run again.",
            hint=f'Set S3TASKS["HISTORY_RETENTION"] to at least '
            f"timedelta(seconds={floor.seconds}), or lower the queue's message retention "
            "(Queue.message_retention_seconds, then sync_notifications).",
            id="s3tasks.E006",
        )
    ]


@checks.register("s3tasks")
def check_sqlite_for_celery(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Celery mode on SQLite without a busy timeout and IMMEDIATE transactions makes Celery
    workers and sqs_worker fail each other's writes with "database is locked"."""
    from django.db import connections, router

    try:
        celery = get_settings().DISPATCH == "celery"
    except ImproperlyConfigured:
        return []  # E001 reports it
    alias = router.db_for_write(HandlerRun)  # settings only: no query, so no database tag
    connection = connections[alias]
    if not celery:
        return []
    if connection.vendor != "sqlite":
        return []
    options = connection.settings_dict.get("OPTIONS", {})
    if options.get("timeout", 5) >= 20 and options.get("transaction_mode") == "IMMEDIATE":
        return []
    return [
        checks.Warning(
            f"S3TASKS['DISPATCH'] is 'celery' and DATABASES[{alias!r}] is SQLite without a "
            "busy timeout of 20 s or more and IMMEDIATE transactions: Celery workers and "
            "sqs_worker will fail each other's writes with 'database is locked'.",
            hint=f'Set DATABASES[{alias!r}]["OPTIONS"] = {{"timeout": 30, '
            '"transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL"}, '
            "or better, use PostgreSQL for Celery mode (docs/dispatch.md).",
            id="s3tasks.W010",
        )
    ]


@checks.register("s3tasks")
def check_celery_keeps_connections(
    app_configs: Any = None, **kwargs: Any
) -> list[checks.CheckMessage]:
    """Without `CELERY_DB_REUSE_MAX`, Celery's Django fixup closes the database connections
    around every task: a new PostgreSQL connection per handler task caps a Celery worker near
    100-200 tasks/s (docs/dispatch.md, "Celery settings")."""
    from django.conf import settings
    from django.db import connections, router

    try:
        celery = get_settings().DISPATCH == "celery"
    except ImproperlyConfigured:
        return []  # E001 reports it
    if not celery or connections[router.db_for_write(HandlerRun)].vendor == "sqlite":
        return []  # opening a SQLite file costs next to nothing
    reuse = getattr(settings, "CELERY_DB_REUSE_MAX", None)
    if reuse is None and "celery" in sys.modules:  # a Celery app configured another way
        from celery import current_app

        reuse = current_app.conf.get("CELERY_DB_REUSE_MAX")
    if reuse:
        return []
    return [
        checks.Warning(
            "S3TASKS['DISPATCH'] is 'celery' and CELERY_DB_REUSE_MAX is not set: Celery closes "
            "the database connections before and after every task, so each handler task "
            "opens a new connection (several milliseconds on PostgreSQL).",
            hint="Set CELERY_DB_REUSE_MAX = 1000 in your settings (read through "
            'app.config_from_object("django.conf:settings", namespace="CELERY")).',
            id="s3tasks.W011",
        )
    ]


@checks.register("s3tasks")
def check_one_database(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every s3tasks model must live in the default database: the exactly-once claim, the
    handler's writes, its follow-up commands and the run's outcome commit in ONE transaction."""
    from django.apps import apps
    from django.db import DEFAULT_DB_ALIAS, router

    routed = sorted(
        {
            f"{model.__name__} -> {alias!r}"
            for model in apps.get_app_config("s3tasks").get_models()
            for alias in (router.db_for_write(model), router.db_for_read(model))
            if alias not in (None, DEFAULT_DB_ALIAS)
        }
    )
    if not routed:
        return []
    return [
        checks.Error(
            "A database router sends s3tasks models away from the default database ("
            + ", ".join(routed)
            + "). s3tasks records a run's outcome in the same transaction as the handler's own "
            "writes and follow-up commands, on the default database.",
            hint="Let your DATABASE_ROUTERS return None (or 'default') for the s3tasks app, "
            "and keep the tables your handlers write in the default database too.",
            id="s3tasks.E005",
        )
    ]
