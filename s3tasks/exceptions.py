"""The one small exception hierarchy of s3tasks."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class S3TasksError(Exception):
    """Base class for every error s3tasks raises on purpose."""


class MalformedMessage(S3TasksError, ValueError):
    """A payload is not any envelope s3tasks understands; the message says what was expected."""


class S3TasksConfigurationError(S3TasksError, ImproperlyConfigured):
    """`settings.S3TASKS` is missing something or holds a wrong value."""


class UnknownHandler(S3TasksError, LookupError):
    """A handler name that no `@on_s3_event`/`@s3_handler` registered."""


class HandlerFailure(S3TasksError):
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


class ProvisioningError(S3TasksError):
    """`sync_notifications` cannot make AWS match the models; the message says why and what
    to do (an AWS error, a missing bucket that sync may not create, ...)."""
