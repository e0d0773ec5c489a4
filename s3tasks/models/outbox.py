"""The outbox: follow-up commands written with the handler's transaction, sent after commit."""

from __future__ import annotations

import uuid

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class OutboxKind(models.TextChoices):
    CELERY = "celery", _("Celery task")
    SQS = "sqs", _("SQS message")
    SNS = "sns", _("SNS message")


class OutboxMessage(models.Model):
    """One follow-up command. Written in the caller's transaction (a rollback discards it),
    sent at least once by the relay after commit, carrying `idempotency_key` to the receiver."""

    kind = models.CharField(_("kind"), max_length=16, choices=OutboxKind.choices)
    target = models.CharField(
        _("target"),
        max_length=512,
        help_text=_("Celery task name, SQS queue name or SNS topic name."),
    )
    payload = models.JSONField(_("payload"), default=dict)
    idempotency_key = models.UUIDField(
        _("idempotency key"), default=uuid.uuid4, unique=True, editable=False
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now, db_index=True)
    available_at = models.DateTimeField(
        _("available at"),
        default=timezone.now,
        help_text=_("Not sent before this time (backoff after failures)."),
    )
    sent_at = models.DateTimeField(_("sent at"), null=True, blank=True)
    attempts = models.PositiveIntegerField(_("attempts"), default=0)
    last_error = models.TextField(_("last error"), blank=True)

    class Meta:
        ordering = ["created_at", "pk"]
        verbose_name = _("outbox message")
        verbose_name_plural = _("outbox messages")
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
