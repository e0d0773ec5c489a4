"""What the SQS workers report: messages no envelope parser understood, and each running
worker (its heartbeat row)."""

from __future__ import annotations

from datetime import datetime, timedelta

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


# A worker writes its row every `interval` seconds; one not written for this many intervals
# belongs to a process that is gone (killed, out of memory, host lost).
GONE_AFTER_BEATS = 3
# Rows of gone workers are kept this long (what died and when), then the live workers prune them.
PRUNE_GONE_AFTER = timedelta(days=1)


class WorkerHeartbeat(models.Model):
    """A running `sqs_worker` process as it last reported itself (one row per process).

    The worker writes its row when it starts and every `interval` seconds, and deletes it on a
    clean shutdown; the admin's operations dashboard lists the rows. A row not written for
    `GONE_AFTER_BEATS` intervals shows as gone.
    """

    worker_id = models.CharField(_("worker id"), max_length=64, unique=True)
    host = models.CharField(_("host"), max_length=255)
    pid = models.PositiveIntegerField(_("process id"))
    queues = models.JSONField(_("queues"), default=list, blank=True)
    version = models.CharField(_("s3tasks version"), max_length=64, blank=True)
    dispatch = models.CharField(_("dispatch mode"), max_length=16, blank=True)
    concurrency = models.PositiveIntegerField(_("concurrency"), default=1)
    interval = models.FloatField(
        _("interval"), help_text=_("Seconds between two writes of this row by its worker.")
    )
    started_at = models.DateTimeField(_("started at"), default=timezone.now)
    last_seen_at = models.DateTimeField(_("last seen at"), default=timezone.now, db_index=True)
    counters = models.JSONField(
        _("counters"), default=dict, blank=True, help_text=_("The worker's stats since start.")
    )

    class Meta:
        ordering = ["host", "pid", "pk"]
        verbose_name = _("worker heartbeat")
        verbose_name_plural = _("worker heartbeats")

    def __str__(self) -> str:
        return f"{self.host}:{self.pid}"

    @property
    def gone_after(self) -> timedelta:
        return timedelta(seconds=self.interval * GONE_AFTER_BEATS)

    def is_gone(self, now: datetime | None = None) -> bool:
        """Not written for `GONE_AFTER_BEATS` intervals: the process is no longer running."""
        return (now or timezone.now()) - self.last_seen_at > self.gone_after
