"""What happened: one row per distinct event, one per (event, handler) run."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from s3tasks.events import EventSource, S3Event


class EventRecord(models.Model):
    """A distinct S3 event (unique by its dedup key), with the raw payload it came in."""

    dedup_key = models.CharField(_("dedup key"), max_length=64, unique=True)
    bucket = models.CharField(_("bucket"), max_length=63, db_index=True)
    key = models.TextField(_("key"))
    event_name = models.CharField(_("event name"), max_length=100)
    event_time = models.DateTimeField(_("event time"), null=True, blank=True)
    size = models.BigIntegerField(_("size"), null=True, blank=True)
    etag = models.CharField(_("ETag"), max_length=100, blank=True)
    version_id = models.CharField(_("version id"), max_length=1024, blank=True)
    sequencer = models.CharField(_("sequencer"), max_length=100, blank=True)
    region = models.CharField(_("region"), max_length=32, blank=True)
    source = models.CharField(_("source"), max_length=32, choices=EventSource.CHOICES)
    payload = models.JSONField(
        _("payload"), default=dict, help_text=_("The normalized event (with raw record).")
    )
    message_id = models.CharField(
        _("message id"), max_length=200, blank=True, help_text=_("SQS/SNS message id.")
    )
    queue_name = models.CharField(_("queue name"), max_length=200, blank=True)
    received_at = models.DateTimeField(_("received at"), default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-received_at", "-pk"]
        verbose_name = _("event record")
        verbose_name_plural = _("event records")
        indexes = [models.Index(fields=["bucket", "received_at"])]

    def __str__(self) -> str:
        return f"{self.event_name} s3://{self.bucket}/{self.key}"

    def to_event(self) -> S3Event:
        return S3Event.from_dict(self.payload)


class RunState(models.TextChoices):
    PENDING = "pending", _("Pending")
    RUNNING = "running", _("Running")
    RETRYING = "retrying", _("Retrying")
    SUCCEEDED = "succeeded", _("Succeeded")
    FAILED = "failed", _("Failed")


class HandlerRun(models.Model):
    """One handler's work on one event; unique per (event, handler) = exactly-once."""

    event = models.ForeignKey(
        EventRecord, verbose_name=_("event"), on_delete=models.CASCADE, related_name="runs"
    )
    handler_name = models.CharField(_("handler name"), max_length=255, db_index=True)
    state = models.CharField(
        _("state"),
        max_length=16,
        choices=RunState.choices,
        default=RunState.PENDING,
        db_index=True,
    )
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    celery_task_id = models.CharField(_("Celery task id"), max_length=255, blank=True)
    celery_queue = models.CharField(_("Celery queue"), max_length=200, blank=True)
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    started_at = models.DateTimeField(_("started at"), null=True, blank=True)
    finished_at = models.DateTimeField(_("finished at"), null=True, blank=True)
    duration_ms = models.FloatField(_("duration (ms)"), null=True, blank=True)
    error = models.TextField(_("error"), blank=True)
    traceback = models.TextField(_("traceback"), blank=True)
    result_summary = models.TextField(_("result summary"), blank=True)
    lease_expires_at = models.DateTimeField(
        _("lease expires at"),
        null=True,
        blank=True,
        help_text=_("Handed off and not finished by then: recovery drives the run again."),
    )
    # A replay (s3tasks.ops.replay) starts an ended run over on purpose; these say it did.
    replays = models.PositiveIntegerField(
        _("replays"),
        default=0,
        help_text=_("How many times the run was replayed from history; attempts count anew."),
    )
    replayed_at = models.DateTimeField(_("replayed at"), null=True, blank=True)
    replayed_by = models.CharField(_("replayed by"), max_length=150, blank=True)
    previous_outcome = models.TextField(
        _("outcome before the last replay"),
        blank=True,
        help_text=_("State, attempts, finish time and error or result the last replay replaced."),
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
        verbose_name = _("handler run")
        verbose_name_plural = _("handler runs")
        # Retrying, recovering and sending test events execute handler code: a right of
        # its own, apart from the view permission (history is never changed in the admin).
        permissions = [
            ("run_handlers", _("Can run handlers: retry and recover runs, send test events"))
        ]
        indexes = [
            # Only runs still out on a lease are indexed: finished runs cost the index nothing.
            models.Index(
                fields=["lease_expires_at"],
                condition=models.Q(lease_expires_at__isnull=False),
                name="s3tasks_run_lease",
            )
        ]
        constraints = [
            models.UniqueConstraint(
                fields=["event", "handler_name"], name="s3tasks_one_run_per_event_handler"
            )
        ]

    def __str__(self) -> str:
        return f"{self.handler_name} on {self.event_id}: {self.state}"
