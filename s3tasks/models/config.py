"""What AWS should look like: buckets, topics, queues, notification rules, handler bindings."""

from __future__ import annotations

from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from s3tasks.models.drift import add_pending_changes, note_bulk_update
from s3tasks.rules.filters import normalize_event_pattern

S3_BUCKET_NAME_HELP = _("The S3 bucket name, e.g. 'acme-uploads'.")
FILLED_BY_SYNC = _("Filled in by sync.")


class RulesVersion(models.Model):
    """One row bumped on every configuration change so long-running processes reload rules."""

    version = models.PositiveBigIntegerField(_("version"), default=0)
    changed_at = models.DateTimeField(_("changed at"), default=timezone.now)

    class Meta:
        verbose_name = _("rules version")
        verbose_name_plural = _("rules versions")

    def __str__(self) -> str:
        return f"rules v{self.version}"

    @classmethod
    def bump(cls) -> None:
        """Record that routing configuration changed (idempotent within a transaction)."""

        def _bump() -> None:
            updated = cls.objects.filter(pk=1).update(
                version=models.F("version") + 1, changed_at=timezone.now()
            )
            if not updated:
                cls.objects.get_or_create(pk=1, defaults={"version": 1})

        transaction.on_commit(_bump)

    @classmethod
    def current(cls) -> int:
        row = cls.objects.filter(pk=1).values_list("version", flat=True).first()
        return row or 0


class ConfigQuerySet(models.QuerySet):
    """Bulk `update()`/`delete()` skip model signals; bump the rules version here instead."""

    def update(self, **kwargs: Any) -> int:
        changes = note_bulk_update(self, kwargs)
        count = super().update(**kwargs)
        if count:
            RulesVersion.bump()
            add_pending_changes(changes)
        return count

    def delete(self) -> tuple[int, dict[str, int]]:
        result = super().delete()
        if result[0]:
            RulesVersion.bump()
        return result


class SyncStatus(models.TextChoices):
    NEVER = "never", _("Never synced")
    OK = "ok", _("In sync")
    PENDING = "pending", _("Changes pending")
    FAILED = "failed", _("Failed")


class SyncedResource(models.Model):
    """Fields every AWS resource s3tasks manages shares: its sync status and last error, and
    how many edits sync has not applied yet (`models.drift`)."""

    # The fields sync writes to AWS: editing one makes a change pending (`models.drift`).
    synced_fields: ClassVar[tuple[str, ...]] = ("name", "region")
    # Foreign keys to the rows whose sync applies this row's edits; empty: the row itself.
    synced_owners: ClassVar[tuple[str, ...]] = ()

    region = models.CharField(
        _("region"),
        max_length=32,
        blank=True,
        help_text=_("AWS region; blank means S3TASKS['REGION']."),
    )
    arn = models.CharField(_("ARN"), max_length=512, blank=True, help_text=FILLED_BY_SYNC)
    created_by_s3tasks = models.BooleanField(
        _("created by s3tasks"),
        default=False,
        help_text=_("Set by sync when it created this resource in AWS."),
    )
    last_sync_status = models.CharField(
        _("last sync status"), max_length=16, choices=SyncStatus.choices, default=SyncStatus.NEVER
    )
    last_sync_error = models.TextField(_("last sync error"), blank=True)
    last_synced_at = models.DateTimeField(_("last synced at"), null=True, blank=True)
    pending_changes = models.PositiveIntegerField(
        _("changes pending"),
        default=0,
        editable=False,
        help_text=_(
            "Edits made since the last successful sync that change what sync writes to AWS "
            "(this row's own fields, its rules or subscriptions)."
        ),
    )

    objects = ConfigQuerySet.as_manager()

    class Meta:
        abstract = True


class Bucket(SyncedResource):
    synced_fields = (
        "name",
        "region",
        "manage_notifications",
        "create_if_missing",
        "eventbridge_enabled",
        "cors_rules",
    )

    name = models.CharField(_("name"), max_length=63, unique=True, help_text=S3_BUCKET_NAME_HELP)
    manage_notifications = models.BooleanField(
        _("manage notifications"),
        default=True,
        help_text=_(
            "Let sync_notifications write this bucket's s3tasks-owned notification "
            "entries (entries made by others are always preserved)."
        ),
    )
    create_if_missing = models.BooleanField(
        _("create if missing"),
        default=True,
        help_text=_("Create the bucket on sync when it does not exist."),
    )
    eventbridge_enabled = models.BooleanField(
        _("EventBridge enabled"),
        null=True,
        blank=True,
        help_text=_("Turn S3→EventBridge delivery on/off on sync; leave empty to never touch it."),
    )
    cors_rules = models.JSONField(
        _("CORS rules"),
        default=list,
        blank=True,
        help_text=_(
            "Optional CORS rules for browser uploads, as S3 expects them, e.g. "
            '[{"AllowedMethods": ["PUT", "POST"], "AllowedOrigins": '
            '["https://app.example.com"], "AllowedHeaders": ["*"]}]. '
            "Empty: CORS is not managed."
        ),
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("bucket")
        verbose_name_plural = _("buckets")
        # Sync writes to AWS with the web process's credentials: a right of its own, not
        # something permission to edit the rows implies.
        permissions = [("sync_to_aws", _("Can sync notification configuration to AWS"))]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if not isinstance(self.cors_rules, list):
            raise ValidationError({"cors_rules": _("CORS rules must be a JSON list of rules.")})


class Topic(SyncedResource):
    name = models.CharField(_("name"), max_length=256, unique=True, help_text=_("SNS topic name."))

    class Meta:
        ordering = ["name"]
        verbose_name = _("topic")
        verbose_name_plural = _("topics")

    def __str__(self) -> str:
        return self.name

    @property
    def is_fifo(self) -> bool:
        return self.name.endswith(".fifo")


class Queue(SyncedResource):
    synced_fields = (
        "name",
        "region",
        "visibility_timeout",
        "message_retention_seconds",
        "dead_letter_queue",
        "max_receive_count",
    )

    name = models.CharField(_("name"), max_length=80, unique=True, help_text=_("SQS queue name."))
    url = models.CharField(_("URL"), max_length=512, blank=True, help_text=FILLED_BY_SYNC)
    enabled = models.BooleanField(
        _("enabled"),
        default=True,
        help_text=_("Consumed by `manage.py sqs_worker` when no --queue is given."),
    )
    visibility_timeout = models.PositiveIntegerField(
        _("visibility timeout"),
        default=60,
        help_text=_("Seconds a received message stays hidden (0..43200)."),
    )
    message_retention_seconds = models.PositiveIntegerField(
        _("message retention seconds"), default=345600
    )
    dead_letter_queue = models.ForeignKey(
        "self",
        verbose_name=_("dead-letter queue"),
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="source_queues",
        help_text=_("Messages that fail max_receive_count times are moved here by SQS."),
    )
    max_receive_count = models.PositiveIntegerField(
        _("max receive count"),
        default=5,
        help_text=_("Receives before SQS moves a message to the dead-letter queue."),
    )

    class Meta:
        ordering = ["name"]
        verbose_name = _("queue")
        verbose_name_plural = _("queues")
        permissions = [("redrive_queue", _("Can redrive dead-letter messages"))]

    def __str__(self) -> str:
        return self.name

    @property
    def is_fifo(self) -> bool:
        return self.name.endswith(".fifo")

    def clean(self) -> None:
        if self.visibility_timeout > 43200:
            raise ValidationError({"visibility_timeout": _("SQS allows at most 43200 seconds.")})
        if not 1 <= self.max_receive_count <= 1000:
            raise ValidationError({"max_receive_count": _("SQS allows 1..1000.")})
        if self.dead_letter_queue_id and self.dead_letter_queue_id == self.pk:
            raise ValidationError({"dead_letter_queue": _("A queue cannot be its own DLQ.")})
        dlq = self.dead_letter_queue
        if dlq is not None and dlq.is_fifo != self.is_fifo:
            raise ValidationError(
                {
                    "dead_letter_queue": _(
                        "A FIFO queue needs a FIFO DLQ, a standard one a standard."
                    )
                }
            )


class Subscription(models.Model):
    """An SNS subscription: an SQS queue (the fan-out path) or an HTTPS endpoint (s3tasks'
    SNS endpoint, docs/sns-endpoint.md) — exactly one of the two."""

    # Applied by the sync of its topic and its queue (`models.drift`).
    synced_fields: ClassVar[tuple[str, ...]] = (
        "topic",
        "queue",
        "endpoint",
        "raw_message_delivery",
        "filter_policy",
    )
    synced_owners: ClassVar[tuple[str, ...]] = ("topic", "queue")

    topic = models.ForeignKey(
        Topic, verbose_name=_("topic"), on_delete=models.CASCADE, related_name="subscriptions"
    )
    queue = models.ForeignKey(
        Queue,
        verbose_name=_("queue"),
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="subscriptions",
    )
    endpoint = models.URLField(
        _("HTTPS endpoint"),
        max_length=500,
        blank=True,
        help_text=_(
            "Instead of a queue: the https:// URL of s3tasks' SNS endpoint, e.g. "
            "'https://app.example.com/s3tasks/sns/'."
        ),
    )
    raw_message_delivery = models.BooleanField(
        _("raw message delivery"),
        default=False,
        help_text=_("Deliver the S3 JSON itself instead of an SNS envelope."),
    )
    filter_policy = models.JSONField(
        _("filter policy"),
        null=True,
        blank=True,
        help_text=_("Optional SNS filter policy (JSON object)."),
    )
    arn = models.CharField(_("ARN"), max_length=512, blank=True, help_text=FILLED_BY_SYNC)

    objects = ConfigQuerySet.as_manager()

    class Meta:
        verbose_name = _("subscription")
        verbose_name_plural = _("subscriptions")
        constraints = [
            models.UniqueConstraint(fields=["topic", "queue"], name="s3tasks_unique_subscription"),
            models.UniqueConstraint(
                fields=["topic", "endpoint"],
                condition=~models.Q(endpoint=""),
                name="s3tasks_unique_endpoint_subscription",
            ),
            models.CheckConstraint(
                condition=models.Q(queue__isnull=False, endpoint="")
                | (models.Q(queue__isnull=True) & ~models.Q(endpoint="")),
                name="s3tasks_subscription_queue_or_endpoint",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.topic} → {self.queue if self.queue_id else self.endpoint}"

    @property
    def protocol(self) -> str:
        """SNS' protocol: "sqs", or the endpoint's scheme ("https")."""
        return "sqs" if self.queue_id else self.endpoint.split(":", 1)[0].lower()

    def clean(self) -> None:
        errors: dict[str, Any] = {}
        if self.filter_policy is not None and not isinstance(self.filter_policy, dict):
            errors["filter_policy"] = _("An SNS filter policy is a JSON object.")
        if bool(self.queue_id) == bool(self.endpoint):
            errors["queue"] = _("Choose a queue or an HTTPS endpoint, not both or neither.")
        elif self.endpoint and not self.endpoint.startswith("https://"):
            errors["endpoint"] = _("The endpoint must be an https:// URL.")
        elif self.endpoint and self.raw_message_delivery:
            errors["raw_message_delivery"] = _(
                "Raw delivery to an HTTPS endpoint carries no signature; s3tasks' endpoint "
                "refuses unsigned messages."
            )
        if errors:
            raise ValidationError(errors)


class NotificationRule(models.Model):
    """Which S3 events of a bucket go where: events + prefix/suffix → topic or queue."""

    # A rule's edits are applied by its bucket's sync (its notification entries).
    synced_fields: ClassVar[tuple[str, ...]] = (
        "bucket",
        "events",
        "prefix",
        "suffix",
        "topic",
        "queue",
        "enabled",
    )
    synced_owners: ClassVar[tuple[str, ...]] = ("bucket",)

    name = models.CharField(_("name"), max_length=200, blank=True)
    bucket = models.ForeignKey(
        Bucket, verbose_name=_("bucket"), on_delete=models.CASCADE, related_name="rules"
    )
    events = models.JSONField(
        _("events"),
        default=list,
        help_text=_('S3 event patterns, e.g. ["s3:ObjectCreated:*", "s3:ObjectRemoved:Delete"].'),
    )
    prefix = models.CharField(_("prefix"), max_length=1024, blank=True)
    suffix = models.CharField(_("suffix"), max_length=1024, blank=True)
    topic = models.ForeignKey(
        Topic,
        verbose_name=_("topic"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="rules",
    )
    queue = models.ForeignKey(
        Queue,
        verbose_name=_("queue"),
        null=True,
        blank=True,
        on_delete=models.PROTECT,
        related_name="rules",
        help_text=_("Leave topic and queue empty to use S3TASKS['DEFAULT_QUEUE']."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    declared_in_code = models.BooleanField(_("declared in code"), default=False, editable=False)
    code_key = models.CharField(
        _("code key"),
        max_length=300,
        null=True,
        blank=True,
        unique=True,
        editable=False,
        help_text=_("Stable id of the code declaration this row mirrors."),
    )
    code_location = models.CharField(_("code location"), max_length=500, blank=True, editable=False)
    created_at = models.DateTimeField(_("created at"), auto_now_add=True)
    updated_at = models.DateTimeField(_("updated at"), auto_now=True)

    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["bucket__name", "prefix", "pk"]
        verbose_name = _("notification rule")
        verbose_name_plural = _("notification rules")

    def __str__(self) -> str:
        return self.name or f"{self.bucket}:{self.prefix or '*'}{self.suffix}"

    @property
    def normalized_events(self) -> tuple[str, ...]:
        return tuple(normalize_event_pattern(e) for e in self.events)

    def clean(self) -> None:
        errors: dict[str, Any] = {}
        if not isinstance(self.events, list) or not self.events:
            errors["events"] = _('List at least one S3 event pattern, e.g. ["s3:ObjectCreated:*"].')
        else:
            for pattern in self.events:
                try:
                    normalize_event_pattern(str(pattern))
                except ValueError as exc:
                    errors["events"] = str(exc)
                    break
        if self.topic_id and self.queue_id:
            errors["queue"] = _("Choose a topic or a queue as destination, not both.")
        if self.queue_id and self.queue.is_fifo:
            errors["queue"] = _(
                "S3 cannot send event notifications to FIFO queues; pick a standard queue."
            )
        if self.topic_id and self.topic.is_fifo:
            errors["topic"] = _("S3 cannot send event notifications to FIFO topics.")
        if errors:
            raise ValidationError(errors)


class HandlerBinding(models.Model):
    """Runs one registered handler for the events a rule lets through.

    Whether the handler is registered is the admin form's and system check W004's business,
    not `clean()`'s: during a rolling deploy a binding may name a newer release's handler.
    """

    class Access(models.TextChoices):
        READ = "read", _("Read")
        WRITE = "write", _("Write")
        READ_WRITE = "readwrite", _("Read and write")

    rule = models.ForeignKey(
        NotificationRule,
        verbose_name=_("rule"),
        on_delete=models.CASCADE,
        related_name="bindings",
    )
    handler_name = models.CharField(
        _("handler name"),
        max_length=255,
        help_text=_("A handler registered with @on_s3_event or @s3_handler."),
    )
    celery_queue = models.CharField(
        _("Celery queue"),
        max_length=200,
        blank=True,
        help_text=_("Celery queue for this handler; blank: default."),
    )
    access = models.CharField(
        _("access"),
        max_length=16,
        choices=Access.choices,
        default=Access.READ,
        help_text=_("What the handler does with the object (used for the IAM policy)."),
    )
    enabled = models.BooleanField(_("enabled"), default=True)
    declared_in_code = models.BooleanField(_("declared in code"), default=False, editable=False)

    objects = ConfigQuerySet.as_manager()

    class Meta:
        ordering = ["rule", "handler_name"]
        verbose_name = _("handler binding")
        verbose_name_plural = _("handler bindings")
        constraints = [
            models.UniqueConstraint(
                fields=["rule", "handler_name"], name="s3tasks_unique_handler_per_rule"
            )
        ]

    def __str__(self) -> str:
        return f"{self.rule} → {self.handler_name}"
