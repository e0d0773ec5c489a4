"""A backfill: one run of `manage.py s3tasks_backfill` (or of the Celery task the admin
starts) over objects already in a bucket.

The row holds what was asked (bucket, filters, handlers, how to dispatch), how far the listing
got (`resume_after`: every object up to that key is done) and the counters, committed after
each chunk of objects, so an interrupted or crashed backfill resumes where it stopped.
"""

from __future__ import annotations

from datetime import timedelta

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

# A running backfill whose row has not moved for this long is taken for dead (a process killed
# without a chance to say so): `--resume` may then take it over.
STALE_AFTER = timedelta(minutes=15)


class Backfill(models.Model):
    class State(models.TextChoices):
        QUEUED = "queued", _("Waiting for a Celery worker")  # started from the admin
        RUNNING = "running", _("Running")
        INTERRUPTED = "interrupted", _("Interrupted")  # Ctrl-C: resume it
        FAILED = "failed", _("Failed")  # an error stopped it: fix the cause, resume it
        CANCELLED = "cancelled", _("Cancelled")  # stopped from the admin
        COMPLETED = "completed", _("Completed")

    class Mode(models.TextChoices):
        INLINE = "inline", _("Run inline")
        CELERY = "celery", _("Send to Celery")
        ENQUEUE = "enqueue", _("Enqueue to SQS for the workers")

    bucket = models.CharField(_("bucket"), max_length=63, db_index=True)
    prefix = models.CharField(_("prefix"), max_length=1024, blank=True)
    suffix = models.CharField(_("suffix"), max_length=1024, blank=True)
    handlers = models.JSONField(
        _("handlers"),
        default=list,
        blank=True,
        help_text=_("Only these handlers; empty: the handlers the enabled rules route to."),
    )
    modified_since = models.DateTimeField(_("modified since"), null=True, blank=True)
    modified_until = models.DateTimeField(_("modified until"), null=True, blank=True)
    mode = models.CharField(_("mode"), max_length=16, choices=Mode.choices)
    queue = models.CharField(
        _("queue"),
        max_length=80,
        blank=True,
        help_text=_("Enqueue: send every event to this SQS queue instead of its rule's."),
    )
    rate = models.FloatField(
        _("rate"), null=True, blank=True, help_text=_("At most this many objects per second.")
    )
    state = models.CharField(
        _("state"), max_length=16, choices=State.choices, default=State.RUNNING, db_index=True
    )
    resume_after = models.CharField(
        _("resume after"),
        max_length=1024,
        blank=True,
        help_text=_("Every object up to this key is done; listing resumes after it."),
    )
    pages = models.PositiveBigIntegerField(_("pages listed"), default=0)
    listed = models.PositiveBigIntegerField(_("objects listed"), default=0)
    matched = models.PositiveBigIntegerField(
        _("objects matched"), default=0, help_text=_("Passed the filters and have a handler.")
    )
    dispatched = models.PositiveBigIntegerField(
        _("dispatched"), default=0, help_text=_("Runs run or handed off, or messages enqueued.")
    )
    skipped = models.PositiveBigIntegerField(
        _("skipped"), default=0, help_text=_("Runs already done by an earlier delivery.")
    )
    failed = models.PositiveBigIntegerField(_("failed"), default=0)
    per_handler = models.JSONField(
        _("per handler"),
        default=dict,
        blank=True,
        help_text=_("Counters of each handler: matched, dispatched, skipped, failed."),
    )
    expected = models.PositiveBigIntegerField(
        _("expected objects"), null=True, blank=True, help_text=_("Counted first (--count).")
    )
    errors = models.JSONField(
        _("errors"), default=list, blank=True, help_text=_("The first errors seen.")
    )
    requested_by = models.CharField(_("requested by"), max_length=150, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now)
    updated_at = models.DateTimeField(_("last progress"), default=timezone.now)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("backfill")
        verbose_name_plural = _("backfills")
        permissions = [
            ("cancel_backfill", _("Can cancel a running backfill")),
            ("start_backfill", _("Can start or resume a backfill (run by Celery)")),
        ]

    def __str__(self) -> str:
        return f"backfill {self.pk} of s3://{self.bucket}/{self.prefix}"

    @property
    def is_stale(self) -> bool:
        """Running, but silent for so long that its process must be gone."""
        return self.state == self.State.RUNNING and (timezone.now() - self.updated_at > STALE_AFTER)

    @property
    def objects_per_second(self) -> float | None:
        end = self.finished_at or self.updated_at
        seconds = (end - self.created_at).total_seconds()
        return self.listed / seconds if seconds > 0 and self.listed else None
