"""What happened: one row per distinct event, one per (event, handler) run."""

from __future__ import annotations

from django.db import models
from django.utils import timezone

from s3tasks.events import EventSource, S3Event


class EventRecord(models.Model):
    """A distinct S3 event (unique by its dedup key), with the raw payload it came in."""

    dedup_key = models.CharField(max_length=64, unique=True)
    bucket = models.CharField(max_length=63, db_index=True)
    key = models.TextField()
    event_name = models.CharField(max_length=100)
    event_time = models.DateTimeField(null=True, blank=True)
    size = models.BigIntegerField(null=True, blank=True)
    etag = models.CharField(max_length=100, blank=True)
    version_id = models.CharField(max_length=1024, blank=True)
    sequencer = models.CharField(max_length=100, blank=True)
    region = models.CharField(max_length=32, blank=True)
    source = models.CharField(max_length=32, choices=EventSource.CHOICES)
    payload = models.JSONField(default=dict, help_text="The normalized event (with raw record).")
    message_id = models.CharField(max_length=200, blank=True, help_text="SQS/SNS message id.")
    queue_name = models.CharField(max_length=200, blank=True)
    received_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-received_at", "-pk"]
        indexes = [models.Index(fields=["bucket", "received_at"])]

    def __str__(self) -> str:
        return f"{self.event_name} s3://{self.bucket}/{self.key}"

    def to_event(self) -> S3Event:
        return S3Event.from_dict(self.payload)


class RunState(models.TextChoices):
    PENDING = "pending", "Pending"
    RUNNING = "running", "Running"
    RETRYING = "retrying", "Retrying"
    SUCCEEDED = "succeeded", "Succeeded"
    FAILED = "failed", "Failed"


class HandlerRun(models.Model):
    """One handler's work on one event; unique per (event, handler) = exactly-once."""

    event = models.ForeignKey(EventRecord, on_delete=models.CASCADE, related_name="runs")
    handler_name = models.CharField(max_length=255, db_index=True)
    state = models.CharField(
        max_length=16, choices=RunState.choices, default=RunState.PENDING, db_index=True
    )
    attempts = models.PositiveIntegerField(default=0)
    celery_task_id = models.CharField(max_length=255, blank=True)
    celery_queue = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    error = models.TextField(blank=True)
    traceback = models.TextField(blank=True)
    result_summary = models.TextField(blank=True)
    lease_expires_at = models.DateTimeField(
        null=True,
        blank=True,
        help_text="Handed off and not finished by then: recovery drives the run again.",
    )

    class Meta:
        ordering = ["-created_at", "-pk"]
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
