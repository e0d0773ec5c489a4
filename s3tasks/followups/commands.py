"""Follow-up commands a handler can issue: enqueue a Celery task, publish to SQS or SNS.

Each command becomes an `OutboxMessage` row in the caller's database transaction and is sent
only after that transaction commits (by the relay in `s3tasks.followups.outbox`): a handler
that rolls back sends nothing, and a process that dies after commit loses nothing (the
periodic relay sends it). Receivers get `idempotency_key` to drop the rare duplicate.

Call `enqueue(...)`/`publish_sqs(...)`/`publish_sns(...)` inside a handler, or return a list
of `EnqueueTask`/`PublishSQS`/`PublishSNS` values from it: both do the same thing.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from s3tasks.followups import outbox
from s3tasks.models import OutboxKind, OutboxMessage


def _json_safe(value: Any, what: str) -> Any:
    """`value` unchanged if JSON can carry it; else a TypeError saying what to pass instead."""
    try:
        json.dumps(value)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"{what} must be JSON-serialisable (s3tasks never pickles): {exc}. Pass plain "
            "str/int/float/bool/list/dict values, e.g. event.to_dict() instead of the event."
        ) from None
    return value


def task_name(task_or_name: Any) -> str:
    """The Celery task name of a task, an s3tasks handler function, or a name."""
    if isinstance(task_or_name, str):
        return task_or_name
    handler = getattr(task_or_name, "s3tasks_handler", None)  # @on_s3_event / @s3_handler
    name = handler.name if handler is not None else getattr(task_or_name, "name", None)
    if not isinstance(name, str) or not name:
        raise TypeError(
            f"enqueue() needs a Celery task, an s3tasks handler or a task name, "
            f"not {task_or_name!r}."
        )
    return name


def _attributes(attributes: dict[str, Any] | None) -> dict[str, Any]:
    return _json_safe(dict(attributes or {}), "attributes")


class FollowUpCommand(ABC):
    """A follow-up command value; `submit()` writes it to the outbox (sent after commit)."""

    kind: str

    @abstractmethod
    def target(self) -> str:
        """Task name, queue name or topic name the command goes to."""

    @abstractmethod
    def payload(self) -> dict[str, Any]:
        """JSON-safe body stored in the outbox row."""

    def submit(self) -> OutboxMessage:

        message = OutboxMessage.objects.create(
            kind=self.kind, target=self.target(), payload=self.payload()
        )
        outbox.relay_after_commit(message.pk)  # looked up on the module: tests replace it
        return message


@dataclass(frozen=True)
class EnqueueTask(FollowUpCommand):
    """Send Celery task `task` with JSON `args`/`kwargs` (task id = the idempotency key)."""

    task: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None
    countdown: float | None = None
    kind = OutboxKind.CELERY

    def target(self) -> str:
        return self.task

    def payload(self) -> dict[str, Any]:
        return {
            "args": _json_safe(list(self.args), f"arguments of {self.task}"),
            "kwargs": _json_safe(dict(self.kwargs), f"keyword arguments of {self.task}"),
            "queue": self.queue,
            "countdown": self.countdown,
        }


@dataclass(frozen=True)
class PublishSQS(FollowUpCommand):
    """Send `body` to SQS queue `queue_name` (FIFO queues need `group_id`)."""

    queue_name: str
    body: Any
    group_id: str | None = None
    deduplication_id: str | None = None
    delay_seconds: int | None = None
    attributes: dict[str, Any] | None = None
    kind = OutboxKind.SQS

    def __post_init__(self) -> None:
        if self.queue_name.endswith(".fifo"):
            if not self.group_id:
                raise ValueError(
                    f"SQS queue {self.queue_name!r} is FIFO: pass group_id= (the message group)."
                )
            if self.delay_seconds:
                raise ValueError(
                    f"SQS queue {self.queue_name!r} is FIFO: per-message delay_seconds is not "
                    "allowed there; set DelaySeconds on the queue instead."
                )
        elif self.group_id or self.deduplication_id:
            raise ValueError(
                f"group_id/deduplication_id only apply to FIFO queues (name ending in .fifo); "
                f"{self.queue_name!r} is a standard queue."
            )

    def target(self) -> str:
        return self.queue_name

    def payload(self) -> dict[str, Any]:
        body = (
            self.body
            if isinstance(self.body, str)
            else json.dumps(_json_safe(self.body, "the SQS body"))
        )
        return {
            "body": body,
            "group_id": self.group_id,
            "deduplication_id": self.deduplication_id,
            "delay_seconds": self.delay_seconds,
            "attributes": _attributes(self.attributes),
        }


@dataclass(frozen=True)
class PublishSNS(FollowUpCommand):
    """Publish `message` to SNS topic `topic_name` (FIFO topics need `group_id`)."""

    topic_name: str
    message: Any
    subject: str | None = None
    group_id: str | None = None
    deduplication_id: str | None = None
    attributes: dict[str, Any] | None = None
    kind = OutboxKind.SNS

    def __post_init__(self) -> None:
        if self.topic_name.endswith(".fifo") and not self.group_id:
            raise ValueError(
                f"SNS topic {self.topic_name!r} is FIFO: pass group_id= (the message group)."
            )

    def target(self) -> str:
        return self.topic_name

    def payload(self) -> dict[str, Any]:
        message = (
            self.message
            if isinstance(self.message, str)
            else json.dumps(_json_safe(self.message, "the SNS message"))
        )
        return {
            "message": message,
            "subject": self.subject,
            "group_id": self.group_id,
            "deduplication_id": self.deduplication_id,
            "attributes": _attributes(self.attributes),
        }


def enqueue(
    task_or_name: Any,
    *args: Any,
    queue: str | None = None,
    countdown: float | None = None,
    **kwargs: Any,
) -> OutboxMessage:
    """Send a Celery task after the current transaction commits (JSON arguments only)."""
    command = EnqueueTask(task_name(task_or_name), args, kwargs, queue, countdown)
    return command.submit()


def publish_sqs(
    queue_name: str,
    body: Any,
    *,
    group_id: str | None = None,
    deduplication_id: str | None = None,
    delay_seconds: int | None = None,
    attributes: dict[str, Any] | None = None,
) -> OutboxMessage:
    """Send `body` (str, or JSON-encoded) to an SQS queue after the transaction commits."""
    return PublishSQS(
        queue_name, body, group_id, deduplication_id, delay_seconds, attributes
    ).submit()


def publish_sns(
    topic_name: str,
    message: Any,
    *,
    subject: str | None = None,
    group_id: str | None = None,
    deduplication_id: str | None = None,
    attributes: dict[str, Any] | None = None,
) -> OutboxMessage:
    """Publish `message` (str, or JSON-encoded) to an SNS topic after the transaction commits."""
    return PublishSNS(topic_name, message, subject, group_id, deduplication_id, attributes).submit()


def is_command_list(value: Any) -> bool:
    """Whether a handler's return value is a non-empty list of follow-up commands."""
    return (
        isinstance(value, list | tuple)
        and bool(value)
        and all(isinstance(item, FollowUpCommand) for item in value)
    )


def submit_all(
    commands: list[FollowUpCommand] | tuple[FollowUpCommand, ...],
) -> list[OutboxMessage]:
    """Write every command to the outbox, as if each had been called directly."""
    return [command.submit() for command in commands]
