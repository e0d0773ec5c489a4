"""What the SQS worker could not handle: messages no envelope parser understood."""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class MessageFailure(models.Model):
    """A malformed message seen by `sqs_worker` (one row per queue + message id).

    The message itself is left in SQS to reach the dead-letter queue; this row tells an
    operator what was wrong with it without reading the DLQ.
    """

    queue_name = models.CharField(_("queue name"), max_length=200)
    message_id = models.CharField(_("message id"), max_length=200)
    receive_count = models.PositiveIntegerField(_("receive count"), default=1)
    reason = models.TextField(_("reason"))
    body_excerpt = models.TextField(
        _("body excerpt"), blank=True, help_text=_("The first 2,000 characters.")
    )
    first_seen_at = models.DateTimeField(_("first seen at"), default=timezone.now)
    last_seen_at = models.DateTimeField(_("last seen at"), default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-last_seen_at", "-pk"]
        verbose_name = _("message failure")
        verbose_name_plural = _("message failures")
        constraints = [
            models.UniqueConstraint(
                fields=["queue_name", "message_id"], name="s3tasks_one_failure_per_message"
            )
        ]

    def __str__(self) -> str:
        return f"{self.message_id} on {self.queue_name}: {self.reason[:80]}"
