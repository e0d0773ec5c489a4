"""Every exception of s3tasks, in two families.

- `S3TasksError`: what s3tasks raises. Each subclass also inherits the Python/Django base whose
  behaviour it wants (`MalformedMessage` is a `ValueError`, `ImproperlyInstalled` an
  `ImportError`, ...), so code that catches those keeps working.
- `HandlerFailure`: what handlers raise to say how their failure should be treated
  (`TemporaryFailure`, `PermanentFailure`). s3tasks never raises these itself; catching
  `S3TasksError` never swallows them.

The tree is in docs/dispatch.md ("Exceptions").
"""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured, PermissionDenied

# --- what s3tasks raises ------------------------------------------------------------------


class S3TasksError(Exception):
    """Base class for every error s3tasks raises on purpose."""


class MalformedMessage(S3TasksError, ValueError):
    """A payload is not any envelope s3tasks understands; the message says what was expected."""


class S3TasksConfigurationError(S3TasksError, ImproperlyConfigured):
    """`settings.S3TASKS` is missing something or holds a wrong value."""


class ImproperlyInstalled(S3TasksError, ImportError):
    """An optional package s3tasks needs for what was asked is missing; the message names the
    extra that installs it (`pip install 's3tasks[demo]'`)."""

    def __init__(self, missing_package: str, install_extra: str, needed_for: str = "") -> None:
        purpose = f" for {needed_for}" if needed_for else ""
        super().__init__(
            f"s3tasks needs the {missing_package!r} package{purpose}: "
            f"pip install 's3tasks[{install_extra}]'",
            name=missing_package,
        )
        self.missing_package = missing_package
        self.install_extra = install_extra
        self.needed_for = needed_for

    def __reduce__(self) -> tuple[type, tuple[str, str, str]]:
        return type(self), (self.missing_package, self.install_extra, self.needed_for)


class UnknownHandler(S3TasksError, LookupError):
    """A handler name that no `@on_s3_event`/`@s3_handler` registered."""


class UnknownTarget(S3TasksError, LookupError):
    """A follow-up command names a queue or topic that neither the models nor AWS know."""


class OverlappingRules(S3TasksError, ValueError):
    """Notification entries that S3 would reject as overlapping; `clashes` names each pair."""

    def __init__(self, clashes: list[str]) -> None:
        super().__init__(
            "S3 rejects overlapping notification rules for the same event type: "
            + "; ".join(clashes)
            + ". Send every handler of a bucket through one topic or queue and let s3tasks "
            "route, or give the rules disjoint prefixes/suffixes."
        )
        self.clashes = clashes

    def __reduce__(self) -> tuple[type, tuple[list[str]]]:
        return type(self), (self.clashes,)


class ProvisioningError(S3TasksError):
    """`sync_notifications` cannot make AWS match the models; the message says why and what
    to do (an AWS error, a missing bucket that sync may not create, ...)."""


class QueueSelectionError(S3TasksError):
    """`sqs_worker` has no queue to consume, or one that cannot be found; the message says
    what to do."""


class RedriveError(S3TasksError):
    """A dead-letter redrive cannot start: an unknown queue, or no way to tell where its
    messages go; the message says what to name instead."""


class UnverifiedSnsMessage(S3TasksError, PermissionDenied):
    """A POST to the SNS endpoint is not a verifiably genuine SNS message for a topic s3tasks
    knows (docs/sns-endpoint.md); the endpoint answers 403 and runs nothing."""


class SnsVerificationUnavailable(S3TasksError, RuntimeError):
    """The SNS endpoint cannot check or confirm a message right now (the signing certificate
    or the SubscribeURL cannot be reached); it answers 503 so that SNS retries."""


class BackfillError(S3TasksError):
    """A backfill cannot start or go on: an unknown handler, nothing routed, a backfill that
    cannot be resumed, a queue or manifest location that does not exist; the message says
    what to do."""


class HandlersFailed(S3TasksError, RuntimeError):
    """Raised by the Lambda entrypoint for an asynchronous trigger whose handlers failed, so
    Lambda retries the event."""


class UnidentifiedRecords(S3TasksError, RuntimeError):
    """Raised by the Lambda entrypoint when SQS records carry no messageId: only failing the
    whole batch keeps them."""


class SwallowedDatabaseError(S3TasksError, RuntimeError):
    """A handler caught a database error and carried on; Django rolls its writes back."""


class UndeclaredDatabaseUse(S3TasksError, RuntimeError):
    """A handler declared `uses_database=False` sent SQL; nothing was sent."""


# --- what handlers raise ------------------------------------------------------------------


class HandlerFailure(Exception):
    """Raised by a handler to say how its failure should be treated.

    `permanent=True` means retrying cannot help (S3 Batch Operations `PermanentFailure`,
    no Celery retry); otherwise the failure is temporary and the work is retried.
    """

    def __init__(self, message: str = "", *, permanent: bool = False) -> None:
        super().__init__(message)
        self.permanent = permanent


class TemporaryFailure(HandlerFailure):
    """Retry later (S3 Batch Operations `TemporaryFailure`)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, permanent=False)


class PermanentFailure(HandlerFailure):
    """Do not retry (S3 Batch Operations `PermanentFailure`)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message, permanent=True)
