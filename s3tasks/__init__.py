"""s3tasks: turn changes in S3 buckets into Django/Celery work.

Public names are imported lazily so that `import s3tasks` stays cheap (Lambda cold starts)
and usable before Django's app registry is ready. `_EXPORTS` is the one list of them:
`__all__` and the `TYPE_CHECKING` imports must name exactly the same (a test checks), and no
public name is also a submodule's name, so nothing changes type once a submodule is imported.
The handler registry object is `s3tasks.rules.registry.registry`.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "S3Event": "s3tasks.events",
    "EventSource": "s3tasks.events",
    "BatchJobTask": "s3tasks.events",
    "parse_events": "s3tasks.envelopes",
    "on_s3_event": "s3tasks.rules.registry",
    "s3_handler": "s3tasks.rules.registry",
    "route": "s3tasks.rules.routing",
    "Route": "s3tasks.rules.routing",
    "MalformedMessage": "s3tasks.exceptions",
    "S3TasksError": "s3tasks.exceptions",
    "HandlerFailure": "s3tasks.exceptions",
    "TemporaryFailure": "s3tasks.exceptions",
    "PermanentFailure": "s3tasks.exceptions",
    "enqueue": "s3tasks.followups.commands",
    "publish_sqs": "s3tasks.followups.commands",
    "publish_sns": "s3tasks.followups.commands",
    "EnqueueTask": "s3tasks.followups.commands",
    "PublishSQS": "s3tasks.followups.commands",
    "PublishSNS": "s3tasks.followups.commands",
}

__all__ = [
    "BatchJobTask",
    "EnqueueTask",
    "EventSource",
    "HandlerFailure",
    "MalformedMessage",
    "PermanentFailure",
    "PublishSNS",
    "PublishSQS",
    "Route",
    "S3Event",
    "S3TasksError",
    "TemporaryFailure",
    "enqueue",
    "on_s3_event",
    "parse_events",
    "publish_sns",
    "publish_sqs",
    "route",
    "s3_handler",
]

if TYPE_CHECKING:
    from s3tasks.envelopes import parse_events
    from s3tasks.events import BatchJobTask, EventSource, S3Event
    from s3tasks.exceptions import (
        HandlerFailure,
        MalformedMessage,
        PermanentFailure,
        S3TasksError,
        TemporaryFailure,
    )
    from s3tasks.followups.commands import (
        EnqueueTask,
        PublishSNS,
        PublishSQS,
        enqueue,
        publish_sns,
        publish_sqs,
    )
    from s3tasks.rules.registry import on_s3_event, s3_handler
    from s3tasks.rules.routing import Route, route


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 's3tasks' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
