"""The outbox: follow-up commands written with the handler's transaction, sent after commit."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone


class OutboxKind(models.TextChoices):
    CELERY = "celery", "Celery task"
    SQS = "sqs", "SQS message"
    SNS = "sns", "SNS message"


class OutboxMessage(models.Model):
    """One follow-up command. Written in the caller's transaction (a rollback discards it),
    sent at least once by the relay after commit, carrying `idempotency_key` to the receiver."""

    kind = models.CharField(max_length=16, choices=OutboxKind.choices)
    target = models.CharField(
        max_length=512, help_text="Celery task name, SQS queue name or SNS topic name."
    )
    payload = models.JSONField(default=dict)
    idempotency_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    available_at = models.DateTimeField(
        default=timezone.now, help_text="Not sent before this time (backoff after failures)."
    )
    sent_at = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.TextField(blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        indexes = [
            models.Index(
                fields=["available_at"],
                name="s3tasks_outbox_due",
                condition=models.Q(sent_at__isnull=True),
            )
        ]

    def __str__(self) -> str:
        state = "sent" if self.sent_at else "pending"
        return f"{self.kind} → {self.target} ({state})"
