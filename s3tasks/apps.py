"""App wiring only: signals, checks, handler autodiscovery, code-binding sync on migrate."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.db.models.signals import post_delete, post_migrate, post_save, pre_save
from django.utils.translation import gettext_lazy as _


class S3TasksConfig(AppConfig):
    name = "s3tasks"
    verbose_name = _("S3 tasks")
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from django.utils.module_loading import autodiscover_modules

        from s3tasks import checks  # noqa: F401  (registers the system checks)
        from s3tasks.models import (
            Bucket,
            HandlerBinding,
            NotificationRule,
            Queue,
            Subscription,
            Topic,
        )
        from s3tasks.models.drift import note_delete, note_save
        from s3tasks.ops import backfill_tasks
        from s3tasks.processing import celery_tasks
        from s3tasks.rules.routing import rules_changed

        for model in (Bucket, Topic, Queue, Subscription, NotificationRule, HandlerBinding):
            post_save.connect(rules_changed, sender=model, dispatch_uid=f"s3tasks-{model}-save")
            post_delete.connect(rules_changed, sender=model, dispatch_uid=f"s3tasks-{model}-del")
        for model in (Bucket, Topic, Queue, Subscription, NotificationRule):  # edits sync applies
            pre_save.connect(note_save, sender=model, dispatch_uid=f"s3tasks-{model}-drift")
            post_delete.connect(note_delete, sender=model, dispatch_uid=f"s3tasks-{model}-gone")
        post_migrate.connect(_sync_code_bindings, sender=self, dispatch_uid="s3tasks-code")
        celery_tasks.install()  # before autodiscovery: a Celery worker needs every task name
        backfill_tasks.install()
        autodiscover_modules("handlers")


def _sync_code_bindings(using: str = "default", **kwargs: Any) -> None:
    """`migrate` reconciles code bindings fully (create, update, remove): it runs with the
    release being deployed, unlike a starting worker, which only adds (docs/worker.md)."""
    from s3tasks.rules.code_bindings import sync_code_bindings

    if using == "default":
        sync_code_bindings()
