"""What s3tasks owns in AWS: one row per resource sync created, adopted or recognised.

Sync changes and prunes only what these rows (and, for queues and topics, the
`s3tasks:managed=true` tag) say is ours; a name or an Id prefix proves nothing. The rows
outlive the configuration rows (a deleted `Queue` row still leaves its queue recorded), which
is what lets `--prune` find what to remove.
"""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class ManagedResource(models.Model):
    """One AWS resource (or part of one) that sync made or took over."""

    class Kind(models.TextChoices):
        BUCKET = "bucket", "S3 bucket"
        QUEUE = "queue", "SQS queue"
        TOPIC = "topic", "SNS topic"
        SUBSCRIPTION = "subscription", "SNS subscription"
        NOTIFICATION = "notification", "bucket notification entry"
        POLICY_STATEMENT = "policy_statement", "policy statement"

    class Origin(models.TextChoices):
        CREATED = "created", "created by sync"
        ADOPTED = "adopted", "adopted (sync --adopt)"
        RECOGNISED = "recognised", "recognised (made by s3tasks 0.1)"

    kind = models.CharField(max_length=32, choices=Kind.choices)
    identifier = models.CharField(
        max_length=512,
        help_text="The ARN; for parts of a resource `<parent ARN>#<Id or Sid>`, for a "
        "subscription `<topic ARN>#<queue ARN>`.",
    )
    region = models.CharField(max_length=32, blank=True)
    origin = models.CharField(max_length=16, choices=Origin.choices, default=Origin.CREATED)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["kind", "identifier"]
        verbose_name = "managed AWS resource"
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
