"""What s3tasks owns in AWS: one row per resource sync created, adopted or recognised.

Sync changes and prunes only what these rows (and, for queues and topics, the
`s3tasks:managed=true` tag) say is ours; a name or an Id prefix proves nothing. The rows
outlive the configuration rows (a deleted `Queue` row still leaves its queue recorded), which
is what lets `--prune` find what to remove.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ManagedResource(models.Model):
    """One AWS resource (or part of one) that sync made or took over."""

    class Kind(models.TextChoices):
        BUCKET = "bucket", _("S3 bucket")
        QUEUE = "queue", _("SQS queue")
        TOPIC = "topic", _("SNS topic")
        SUBSCRIPTION = "subscription", _("SNS subscription")
        NOTIFICATION = "notification", _("bucket notification entry")
        POLICY_STATEMENT = "policy_statement", _("policy statement")

    class Origin(models.TextChoices):
        CREATED = "created", _("created by sync")
        ADOPTED = "adopted", _("adopted (sync --adopt)")
        RECOGNISED = "recognised", _("recognised (made by s3tasks 0.1)")

    kind = models.CharField(_("kind"), max_length=32, choices=Kind.choices)
    identifier = models.CharField(
        _("identifier"),
        max_length=512,
        help_text=_(
            "The ARN; for parts of a resource `<parent ARN>#<Id or Sid>`, for a "
            "subscription `<topic ARN>#<queue ARN>`."
        ),
    )
    region = models.CharField(_("region"), max_length=32, blank=True)
    origin = models.CharField(
        _("origin"), max_length=16, choices=Origin.choices, default=Origin.CREATED
    )
    created_at = models.DateTimeField(_("created at"), default=timezone.now)

    class Meta:
        ordering = ["kind", "identifier"]
        verbose_name = _("managed AWS resource")
        verbose_name_plural = _("managed AWS resources")
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "identifier"], name="s3tasks_one_record_per_resource"
            )
        ]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.identifier}"

    @property
    def adopted(self) -> bool:
        """Taken over on request: prune releases it instead of deleting it."""
        return self.origin == self.Origin.ADOPTED
